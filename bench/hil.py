"""Hardware in the loop, measured: ``python -m bench.hil [--quick] [--samples N] [--frames N]``.

One hub and one ``python -m bridge run`` (real child processes) drive three devices at once:

* ``uno``: the rover firmware built for the Uno (firmware_stubs/avr_build.py) on the emulated ATmega328P
  (firmware_stubs/uno_emulator.py); a sample is operator ``signal("uno.move")`` -> the PWM duty on pin
  5 changing, timed by the emulator's own wall-clock stamp of the pin change;
* ``sim``: rover_sim.RoverSim in this process on its pty; a sample is ``signal("sim.move")`` -> the
  simulator completing the line;
* ``claw``: the RoboClaw simulator (``framing: binary``); frames/s is a flood of ``claw.duty`` signals
  (a binary rule: s16 params, CRC-16) counted as packets the simulator accepted, with CRC errors and
  losses.

Samples of ``uno`` and ``sim`` alternate one by one, so both see the same machine load. Prints a table
and the sketch's flash and RAM use. A benchmark, not a test: it measures and prints, nothing more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import PYTHON, Child, Stats, scaled
from bench.rig import hub_session_and_tokens, start_hub, wait_for_connection
from bridge.client import SessionClient
from firmware_stubs import avr_build
from firmware_stubs.roboclaw_sim import RoboClawSim
from firmware_stubs.rover_sim import RoverSim
from firmware_stubs.uno_emulator import EmulatedUno

#: signal() calls awaiting the hub's ack at once during the frame flood (as bench/throughput.py).
WINDOW = 64

CONFIG = """\
session: {{url: "ws://127.0.0.1:{port}", session_id: "{sid}", token: "{token}"}}
devices:
  uno: {{serial: {{port: "{uno}"}}}}
  sim: {{serial: {{port: "{sim}"}}}}
  claw: {{serial: {{port: "{claw}", baudrate: 38400, framing: binary}}}}
rules:
  - signal: uno.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: uno, line: "M {{x:.2f}} 0"}}
  - signal: sim.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: sim, line: "M {{x:.2f}} 0"}}
  - signal: claw.duty
    params: {{m1: {{type: int, min: -32767, max: 32767}}, m2: {{type: int, min: -32767, max: 32767}}}}
    send:
      device: claw
      frame:
        fields: [0x80, 34, {{param: m1, type: s16}}, {{param: m2, type: s16}}]
        checksum: crc16-xmodem
"""


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(scaled(timeout)):
        while not condition():
            await asyncio.sleep(0.0005)


async def latencies(client: SessionClient, uno: EmulatedUno, sim: RoverSim,
                    samples: int) -> tuple[list[float], list[float]]:
    """(uno, sim) signal -> output latencies in ms, alternating device by device."""
    arrived: list[tuple[str, float]] = []
    completed = sim._on_line

    def on_line(line: str) -> None:
        arrived.append((line, time.monotonic()))
        completed(line)

    sim._on_line = on_line          # type: ignore[method-assign]  # stamp each line as the sim completes it
    out_uno: list[float] = []
    out_sim: list[float] = []
    for i in range(samples):
        x = 0.6 if i % 2 else 0.2
        duty = int(x * 255 + 0.5)
        for device in (("uno", "sim") if i % 4 < 2 else ("sim", "uno")):
            mark = len(uno.changes) if device == "uno" else len(arrived)
            sent = time.monotonic()
            await client.signal(f"{device}.move", json.dumps({"x": x}))
            if device == "uno":
                await uno.wait(lambda m=mark, d=duty: any(  # type: ignore[misc]
                    c.pin == 5 and c.value == d for c in uno.changes[m:]), scaled(5))
                change = next(c for c in uno.changes[mark:] if c.pin == 5 and c.value == duty)
                out_uno.append((change.wall_s - sent) * 1000)
            else:
                want = f"M {x:.2f} 0"
                await _until(lambda m=mark, w=want: any(ln == w for ln, _ in arrived[m:]), 5)  # type: ignore[misc]
                out_sim.append((next(t for ln, t in arrived[mark:] if ln == want) - sent) * 1000)
            await asyncio.sleep(0.01)
    return out_uno, out_sim


async def frames_per_second(client: SessionClient, claw: RoboClawSim, count: int) -> dict[str, float]:
    before = claw.protocol.packets
    sent = 0
    started = time.monotonic()
    last = [started]
    seen = [before]

    def progressed() -> bool:
        if claw.protocol.packets != seen[0]:
            seen[0] = claw.protocol.packets
            last[0] = time.monotonic()
        return claw.protocol.packets - before >= count

    async def sender() -> None:
        nonlocal sent
        while sent < count:
            n = sent
            sent += 1
            await client.signal("claw.duty", json.dumps({"m1": n % 30000, "m2": -(n % 30000)}))

    await asyncio.gather(*(sender() for _ in range(WINDOW)))
    with contextlib.suppress(TimeoutError):    # what never arrived is reported as lost
        await _until(progressed, 30)
    got = claw.protocol.packets - before
    span = last[0] - started
    return {"frames": got, "lost": count - got, "crc_errors": claw.protocol.crc_errors,
            "discarded": claw.protocol.discarded,
            "frames_per_s": got / span if span > 0 else float("nan")}


async def run(samples: int, frames: int) -> int:
    build = avr_build.build()
    print(build.report(), flush=True)
    with tempfile.TemporaryDirectory(prefix="sigbridge-hil-") as tmp:
        workdir = Path(tmp)
        hub, port = await start_hub(workdir)
        sid, (bridge_token, op_token) = hub_session_and_tokens(("publisher", "hil-bridge"),
                                                               ("moderator", "op"))
        uno = EmulatedUno(build)
        sim = RoverSim(telemetry=False)
        claw = RoboClawSim()
        bridge: Child | None = None
        try:
            await uno.start()
            await sim.start()
            await claw.start()
            conf = workdir / "bridge.yaml"
            conf.write_text(CONFIG.format(port=port, sid=sid, token=bridge_token, uno=uno.port, sim=sim.path,
                                          claw=claw.path))
            bridge = await Child("bridge", [PYTHON, "-m", "bridge", "run", "-c", str(conf)]).start()
            await bridge.wait_line("READY", scaled(20))
            async with SessionClient(f"ws://127.0.0.1:{port}", sid, op_token) as client:
                await wait_for_connection(client, "hil-bridge", 10)
                await latencies(client, uno, sim, 4)                    # warm-up
                lat_uno, lat_sim = await latencies(client, uno, sim, samples)
                flood = await frames_per_second(client, claw, frames)
        finally:
            if bridge is not None:
                await bridge.stop()
            await uno.close()
            await sim.close()
            await claw.close()
            await hub.stop()
    su, ss = Stats.of(lat_uno), Stats.of(lat_sim)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n== hardware in the loop ({samples} samples each, alternated; load average {load})")
    print(f"{'signal -> output':<34}{'n':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, s in (("emulated Uno (PWM pin 5)", su), ("rover_sim.py (line completed)", ss)):
        print(f"{name:<34}{s.n:>6}{s.p50:>9.2f}{s.p90:>9.2f}{s.p99:>9.2f}{s.max:>9.2f}")
    print(f"binary rule claw.duty (cmd 34, CRC-16): {flood['frames_per_s']:,.0f} frames/s "
          f"({flood['frames']:.0f} of {frames} accepted, {flood['lost']:.0f} lost, "
          f"{flood['crc_errors']:.0f} CRC errors, {flood['discarded']:.0f} bytes discarded by the "
          f"controller's 10 ms inter-byte timeout)")
    print(f"sketch: flash {build.flash} bytes, RAM {build.ram} bytes static (Uno: {avr_build.UNO_FLASH} / "
          f"{avr_build.UNO_RAM})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Hardware-in-the-loop latency and binary frame throughput.")
    p.add_argument("--quick", action="store_true", help="30 samples and 300 frames")
    p.add_argument("--samples", type=int, default=300, help="latency samples per device (default 300)")
    p.add_argument("--frames", type=int, default=5000, help="frames in the flood (default 5000)")
    args = p.parse_args(argv)
    samples, frames = (30, 300) if args.quick else (args.samples, args.frames)
    return asyncio.run(run(samples, frames))


if __name__ == "__main__":
    sys.exit(main())
