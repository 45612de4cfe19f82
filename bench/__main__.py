"""``python -m bench WHAT [--quick]``: run benchmarks, print the results table, optionally write it as
Markdown/JSON and draw the plot. Everything runs on 127.0.0.1 in child processes this command starts
and stops."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench import camera, cluster, footprint, hubmem, latency, mqtt, onehop, scale, telemetry, throughput
from bench.common import Results, Row, raise_fd_limit
from bench.rig import Rig

RIG_BENCHMARKS = {"latency": latency.run, "onehop": onehop.run, "telemetry": telemetry.run, "mqtt": mqtt.run,
                  "throughput": throughput.run, "footprint": footprint.run,
                  "camera": camera.run}    # not in `all`: needs aiortc and Chromium
ORDER = ["latency", "onehop", "telemetry", "mqtt", "throughput", "footprint", "scale", "hubmem"]


async def _main(args: argparse.Namespace) -> int:
    raise_fd_limit(8192)
    wanted = ORDER if args.what == "all" else [args.what]
    results = Results()
    started = time.perf_counter()
    load_at_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    rig_names = [w for w in wanted if w in RIG_BENCHMARKS]
    if rig_names:
        async with Rig(want_bridge=not args.baseline_only) as rig:
            if rig.bridge is None and not args.baseline_only:
                print(f"bridge side not running, baseline only: {rig.bridge_error}",
                      file=sys.stderr, flush=True)
                results.add(Row("setup", "bridge side", float("nan"), "", note=rig.bridge_error[:300]))
            for name in rig_names:
                print(f"== {name}", flush=True)
                await RIG_BENCHMARKS[name](rig, results, quick=args.quick)
            _show_complaints(rig)
    if "scale" in wanted:
        print("== scale", flush=True)
        with tempfile.TemporaryDirectory(prefix="sigbridge-scale-") as tmp:
            await scale.run(results, quick=args.quick, workdir=Path(tmp))
    if "cluster" in wanted:
        print("== cluster", flush=True)
        with tempfile.TemporaryDirectory(prefix="sigbridge-cluster-") as tmp:
            await cluster.run(results, quick=args.quick, workdir=Path(tmp))
    if "hubmem" in wanted:
        print("== hubmem", flush=True)
        with tempfile.TemporaryDirectory(prefix="sigbridge-hubmem-") as tmp:
            await hubmem.run(results, quick=args.quick, workdir=Path(tmp))
    elapsed = time.perf_counter() - started
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n== results ({elapsed:.0f} s; Python {platform.python_version()}, {os.cpu_count()} cores; "
          f"load average at start {load_at_start}, at end {load})")
    print(results.table())
    if args.markdown:
        Path(args.markdown).write_text(results.table(markdown=True) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": [asdict(r) for r in results.rows],
            "elapsed_s": elapsed, "command": " ".join(sys.argv)}, indent=1, default=str))
    if args.plot:
        from bench.plot import plot

        if plot(results, Path(args.plot)):
            print(f"plot written to {args.plot}")
    return 0


def _show_complaints(rig: Rig) -> None:
    """What the children logged at WARNING and above: the first place to look when a figure is odd."""
    for side in rig.sides:
        for name, child in side.procs.items():
            lines = child.lines
            bad = [i for i, ln in enumerate(lines) if "WARNING" in ln or "ERROR" in ln]
            if bad:
                print(f"-- {side.name}/{name} logged {len(bad)} warning(s)/error(s); the last one:",
                      file=sys.stderr)
                for ln in lines[bad[-1]:bad[-1] + 12]:  # with its traceback, if any
                    print("   " + ln[:300], file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("what", choices=[*ORDER, "camera", "cluster", "all"])
    p.add_argument("--quick", action="store_true", help="smallest configuration (a smoke run, not figures)")
    p.add_argument("--baseline-only", action="store_true", help="do not start the hub and bridge")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--plot", metavar="PNG", help="draw latency CDFs and hub fan-out (needs matplotlib)")
    return asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
