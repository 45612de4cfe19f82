"""``python -m bench.profile [--seconds S] [--out DIR]``: where the time goes on each hot path.

Starts the rig (hub + bridge, the baseline's relay + device, mosquitto), floods one path at a time
and attaches py-spy (``pip install py-spy``; not a dependency) to every process of both sides for the
flood, then prints each process's top functions by self time and by inclusive time, as shares of its
non-idle samples, with the CPU it used per delivered signal. Paths:

* ``serial``: ``robot.move`` -> pty (the throughput flood, 500 in flight);
* ``telemetry``: ``T <n> 0.50`` lines written at the pty master -> ``robot.telemetry`` at the operator
  (at most 200 lines awaiting their signal);
* ``mqtt``: ``arm.grip`` -> QoS 1 publish -> the bench's subscriber (200 in flight).

Raw profiles (py-spy's collapsed stacks) are kept in ``--out`` for flame graphs. A profile is not a
benchmark: py-spy's sampling costs the processes some CPU, so take figures from ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

from bench.common import cpu_seconds, raise_fd_limit
from bench.pingpong import next_seq, seq_of_json
from bench.rig import Rig, Side
from bench.throughput import (
    MQTT_E2E_WINDOW,
    SERIAL_E2E_WINDOW,
    flood,
    install_line,
    install_mqtt,
    move_data,
)

TELEMETRY_WINDOW = 200
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (to/file.py)``: lines merged, two path parts kept."""
    name, _, where = raw.partition(" (")
    where = _FRAME_LINE.sub("", where.rstrip(")") + ")").rstrip(")")
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def summarise(raw_file: Path, top: int) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, [(function, self share)], [(function, inclusive share)]) of a py-spy raw profile."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    skip = ("asyncio/", "<frozen", "selectors.py", "bench/", "cli.py", "__main__.py")
    for line in raw_file.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        n = int(m["count"])
        frames = [_frame(f) for f in m["stack"].split(";") if "(" in f]
        if not frames:
            continue
        total += n
        self_t[frames[-1]] += n
        for f in set(frames):
            if not any(k in f for k in skip):
                incl[f] += n
    def share(c: collections.Counter[str], at_most: float = 1.0) -> list[tuple[str, float]]:
        return [(f, k / total) for f, k in c.most_common() if k / total < at_most][:top] if total else []
    # inclusive: the frames of the process's own code path, not the loop and entry points around it
    return total, share(self_t), share(incl, 0.9)


async def _spy(pids: dict[str, int], seconds: float, out: Path,
               tag: str) -> tuple[dict[str, Path], list[asyncio.subprocess.Process]]:
    procs, files = [], {}
    for name, pid in pids.items():
        f = out / f"{tag}-{name}.txt"
        files[name] = f
        procs.append(await asyncio.create_subprocess_exec(
            "py-spy", "record", "--nonblocking", "-r", "200", "-f", "raw", "-d", str(int(seconds)),
            "-p", str(pid), "-o", str(f), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL))
    await asyncio.sleep(0.5)  # py-spy attaching; it samples for its own duration from then on
    return files, procs


async def _telemetry_flood(side: Side, seconds: float) -> int:
    """Lines at the pty master as fast as signals come back, at most TELEMETRY_WINDOW outstanding. The
    bridge drops telemetry it cannot send at once (``send_nowait``: retry false, freshest wins), so a
    permit not returned within 50 ms is taken back (that line counts as dropped)."""
    permits = asyncio.Semaphore(TELEMETRY_WINDOW)
    arrived = 0

    def on_signal(kind: str, data: str, t: float) -> None:
        nonlocal arrived
        if kind == "robot.telemetry" and seq_of_json(data) is not None:
            arrived += 1
            permits.release()

    side.on_signal = on_signal
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(permits.acquire(), 0.05)
            side.pty.write(f"T {next_seq()} 0.50\n".encode())
    finally:
        side.reset()
    return arrived


async def _profile_path(rig: Rig, path: str, seconds: float, out: Path, top: int) -> None:
    for side in rig.sides:
        pids = {name: c.pid for name, c in side.procs.items()}
        files, spies = await _spy(pids, seconds, out, f"{path}-{side.name}")
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if path == "serial":
            got = len((await flood(side, "robot.move", move_data, install_line, seconds, 10**9,
                                   SERIAL_E2E_WINDOW)).arrivals)
        elif path == "mqtt":
            got = len((await flood(side, "arm.grip", _grip, install_mqtt, seconds, 10**9,
                                   MQTT_E2E_WINDOW)).arrivals)
        else:
            got = await _telemetry_flood(side, seconds)
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in spies)), seconds + 30)
        print(f"\n### {path} path, {side.name}: {got:,} delivered in {seconds:g} s", flush=True)
        for name, f in files.items():
            if not f.exists():
                print(f"- {name}: no profile (py-spy could not attach?)")
                continue
            total, selfs, incls = summarise(f, top)
            us = cpu[name] / max(1, got) * 1e6
            print(f"- {name}: {total} samples, {us:.1f} us CPU per signal (under py-spy)")
            print("  self:      " + "; ".join(f"{s:.0%} {fn}" for fn, s in selfs))
            print("  inclusive: " + "; ".join(f"{s:.0%} {fn}" for fn, s in incls))


def _grip(n: int) -> str:
    return f'{{"force": 40, "n": {n}}}'


async def _main(args: argparse.Namespace) -> int:
    if shutil.which("py-spy") is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    raise_fd_limit(8192)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    async with Rig() as rig:
        if rig.bridge is None:
            print(f"bridge side not running: {rig.bridge_error}", file=sys.stderr)
            return 1
        for path in args.paths:
            await _profile_path(rig, path, args.seconds, out, args.top)
    print(f"\nraw profiles in {out} (py-spy collapsed stacks; load {os.getloadavg()[0]:.1f})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--out", default="bench-profiles")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("paths", nargs="*", default=["serial", "telemetry", "mqtt"])
    return asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
