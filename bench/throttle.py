"""Telemetry delay through the throttle: a device writes ``T <n> 0`` at 10 Hz (asyncio-paced, so with
the machine's own jitter) to a real ``python -m bridge run`` whose stream has ``max_rate_hz: 10``; an
operator in this process timestamps each ``robot.telemetry``. Delay = arrival - write (same clock).
The same stream without ``max_rate_hz`` is the reference (what hub + bridge cost without throttling).

    python -m bench.throttle [--samples 150] [--hz 10]

Prints p50 / p99 / max and how many values were thinned out, for both. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Stats
from bridge.client import SessionClient
from bridge.core.events import Signal
from tests.helpers.hub import running_hub
from tests.helpers.pty import PtyPair

CONFIG = """\
session: {{url: "{url}", session_id: thr, token: "{token}"}}
devices: {{base: {{serial: {{port: "{port}"}}}}}}
rules: [{{signal: noop, send: {{device: base, line: N}}}}]
telemetry:
  - {{device: base, match: '^T (?P<n>\\d+) (?P<speed>-?[\\d.]+)$', signal: robot.telemetry{rate}}}
"""


async def measure(samples: int, hz: float, max_rate_hz: float | None) -> tuple[Stats, int]:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_hub() as hub:
            with PtyPair(Path(tmp) / "rover") as pair:
                config = Path(tmp) / "bridge.yaml"
                rate = f", max_rate_hz: {max_rate_hz}" if max_rate_hz else ""
                config.write_text(CONFIG.format(url=hub.url, token=hub.token("thr"), port=pair.path,
                                                rate=rate))
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bridge", "run", "-c", str(config),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
                assert proc.stderr is not None
                while b"READY" not in await proc.stderr.readline():
                    pass
                written: dict[int, float] = {}
                arrived: dict[int, float] = {}
                async with SessionClient(hub.url, "thr", hub.token("thr")) as op:
                    def on_event(event: object) -> None:
                        if isinstance(event, Signal) and event.type == "robot.telemetry":
                            arrived[json.loads(event.data)["n"]] = time.monotonic()
                    op.set_event_handler(on_event)
                    await asyncio.sleep(0.5)        # the port open, the link settled
                    start = time.monotonic()
                    for n in range(samples):
                        # Paced on a fixed schedule (no drift), each write as late as the loop makes it.
                        await asyncio.sleep(max(0.0, start + n / hz - time.monotonic()))
                        written[n] = time.monotonic()
                        pair.write_line(f"T {n} 0")
                    await asyncio.sleep(0.5)
                proc.terminate()
                await proc.wait()
    delays = [(arrived[n] - written[n]) * 1000 for n in written if n in arrived]
    return Stats.of(delays), samples - len(delays)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=150)
    ap.add_argument("--hz", type=float, default=10.0)
    args = ap.parse_args()
    for label, rate in (("max_rate_hz 10", 10.0), ("no max_rate_hz", None)):
        stats, thinned = await measure(args.samples, args.hz, rate)
        print(f"{args.hz:g} Hz stream, {label}: delay p50 {stats.p50:.1f} ms, p99 {stats.p99:.1f} ms, "
              f"max {stats.max:.1f} ms; {thinned} of {args.samples} thinned out", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
