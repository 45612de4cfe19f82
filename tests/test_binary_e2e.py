"""A binary device end to end: config/roboclaw.example.yaml itself run by a real ``python -m bridge run``
against the RoboClaw simulator (firmware_stubs/roboclaw_sim.py) on a real pty, driven by an operator
through a real hub. Packets are checked by the simulator (CRC-16, address, length): a frame it takes
is acknowledged and changes its motors; the battery it reports comes back parsed as telemetry between
the 0xFF acks; an out-of-range value never reaches the wire; the rule's watchdog stops the motors.

And the same config against firmware: firmware_stubs/claw_uno (RoboClaw packet serial in C++ on an
Uno) on the emulated ATmega328P - duty on its PWM pins, the battery read from its ADC, and its own
serial timeout stopping the motors after the bridge is killed - and that sketch against the simulator,
packet for packet (valid, corrupted, foreign, truncated, garbage)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import tty
from pathlib import Path

from bridge.client import SessionClient
from firmware_stubs import avr_build
from firmware_stubs.roboclaw_sim import RoboClawProtocol, RoboClawSim, with_crc
from firmware_stubs.uno_emulator import EmulatedUno
from tests.conftest import scaled
from tests.helpers.bridge import Operator, bridge_process
from tests.helpers.cli import ROOT
from tests.helpers.hub import running_hub
from tests.helpers.poll import until

EXAMPLE = ROOT / "config" / "roboclaw.example.yaml"


async def test_roboclaw_example_drives_the_simulated_controller(tmp_path: Path) -> None:
    sim = RoboClawSim(battery_v=11.7)
    port = await sim.start()
    try:
        async with running_hub() as hub:
            env = {"SIGBRIDGE_URL": hub.url, "SIGBRIDGE_SESSION": "claw",
                   "SIGBRIDGE_TOKEN": hub.token("claw"), "ROBOCLAW_PORT": port}
            async with bridge_process(EXAMPLE, env=env) as bridge, \
                    SessionClient(hub.url, "claw", hub.token("claw", role="moderator")) as client:
                op = Operator(client)
                await bridge.wait_for(r"device claw: up")
                await bridge.wait_for(r"READY")

                async def ack(type_: str, data: object) -> str:
                    await op.send(type_, data)
                    status: str = json.loads((await op.next("bridge.ack")).data)["status"]
                    return status

                assert await ack("claw.duty", {"m1": 16384, "m2": -8192}) == "applied"
                await until(lambda: sim.duty == [16384, -8192])
                # Battery polls (the heartbeat) answered between the acks of the writes: parsed anyway.
                tele = json.loads((await op.next("claw.battery", timeout=5)).data)
                assert tele == {"volts": 11.7}, tele
                assert sim.protocol.crc_errors == 0
                # Line noise from the device side: skipped by the frame parser, the next reply still parsed.
                sim.noise(bytes(random.Random(3).randrange(256) for _ in range(3000)))
                await asyncio.sleep(0.1)
                while not op.signals.empty():          # what came before (or from) the noise
                    op.signals.get_nowait()
                assert json.loads((await op.next("claw.battery", timeout=5)).data) == {"volts": 11.7}
                assert bridge.proc.returncode is None

                sent = len(sim.received)
                assert await ack("claw.duty", {"m1": 40000, "m2": 0}) == "rejected"   # s16 has no 40000
                assert await ack("claw.speed", {"m1": 1000, "m2": -1000}) == "applied"
                await until(lambda: sim.speed == [1000, -1000])
                new = bytes(sim.received[sent:])
                # The refused duty never reached the wire (not wrapped to 0x9c40 either): the only cmd 34
                # packets since are the watchdog's stop frames for the first command.
                duties = [new[i + 2:i + 6] for i in range(len(new)) if new[i:i + 2] == b"\x80\x22"]
                assert all(d == bytes(4) for d in duties), duties

                # The rule's watchdog (500 ms): a duty command not refreshed is followed by the stop frame.
                assert await ack("claw.duty", {"m1": 300, "m2": 300}) == "applied"
                await until(lambda: sim.duty == [300, 300])
                moved = time.monotonic()
                await until(lambda: sim.duty == [0, 0], timeout=5)
                assert 0.45 <= time.monotonic() - moved <= 0.5 + scaled(0.3)

                assert await ack("claw.duty", {"m1": -5, "m2": 5}) == "applied"
                await until(lambda: sim.duty == [-5, 5])
                await op.send("claw.estop", {})
                await until(lambda: sim.duty == [0, 0], timeout=2)
                assert await ack("claw.duty", {"m1": 5, "m2": 5}) == "estopped"
            assert bridge.proc.returncode == 0
            assert sim.duty == [0, 0] and sim.protocol.crc_errors == 0
    finally:
        await sim.close()


async def test_roboclaw_example_drives_the_packet_serial_sketch_on_the_emulated_uno(tmp_path: Path) -> None:
    build = avr_build.build(rover=avr_build.CLAW)
    async with EmulatedUno(build, a0_mv=4000) as uno, running_hub() as hub:
        env = {"SIGBRIDGE_URL": hub.url, "SIGBRIDGE_SESSION": "claw",
               "SIGBRIDGE_TOKEN": hub.token("claw"), "ROBOCLAW_PORT": uno.port}
        async with bridge_process(EXAMPLE, env=env) as bridge, \
                SessionClient(hub.url, "claw", hub.token("claw", role="moderator")) as client:
            op = Operator(client)
            await bridge.wait_for(r"device claw: up")
            await bridge.wait_for(r"READY")
            # 4.000 V on A0 -> ADC 818 -> 7.9 V at the battery (1:2 divider), answered to the polls.
            assert json.loads((await op.next("claw.battery", timeout=5)).data) == {"volts": 7.9}
            await op.send("claw.duty", {"m1": 16384, "m2": -8192})
            assert json.loads((await op.next("bridge.ack")).data)["status"] == "applied"
            await uno.wait(lambda: uno.motors() == (0.5, -0.25), scaled(5))   # PWM 128 fwd, 64 back
            bridge.proc.kill()
            killed, slipped = time.monotonic(), uno.slipped_s
            assert await bridge.proc.wait() == -9
            # Nobody sends anything now: the sketch's 1 s serial timeout (its own time: plus what a
            # starved emulator slipped meanwhile) stops both motors by itself.
            await uno.wait(lambda: uno.motors() == (0.0, 0.0), scaled(5))
            took, late = time.monotonic() - killed, uno.slipped_s - slipped
            assert 0.5 <= took <= 1.0 + late + scaled(0.3), (took, late)


async def test_the_packet_serial_sketch_answers_as_the_simulator_packet_for_packet() -> None:
    """claw_uno on the emulated Uno against roboclaw_sim's parser, fed the same bytes: valid writes,
    corrupted CRCs, wrong addresses, unknown commands, truncated packets and garbage. Each step ends with
    a battery read (a reply to wait for) and a pause longer than the 10 ms packet timeout, so that both
    start the next step from an empty packet buffer. Same replies, byte for byte; same duty on the pins."""
    rng = random.Random(77)

    def packet(cmd: int, data: bytes) -> bytes:
        return with_crc(bytes((0x80, cmd)) + data)

    # A 5 s serial timeout first (the step's battery read refreshes it): random timeouts would make the
    # sketch (real time) and the simulator (the test's clock) stop at different moments.
    steps: list[bytes] = [packet(14, b"\x32"), packet(34, bytes.fromhex("4000c000")), packet(32, b"\x7f\xff"),
                          packet(33, b"\x80\x00"), packet(0, b"\x7f"), packet(5, b"\x40")]
    sizes = {0: 1, 1: 1, 4: 1, 5: 1, 32: 2, 33: 2, 34: 4}
    for _ in range(60):
        cmd = rng.choice(list(sizes))
        data = bytes(rng.randrange(256) for _ in range(sizes[cmd]))
        good = packet(cmd, data)
        steps.append(rng.choice([
            good,
            good[:-1] + bytes((good[-1] ^ 1,)),                    # CRC off by one bit
            bytes((0x81,)) + good[1:],                             # another address
            packet(rng.choice([2, 99, 200]), data),                # not a command we take
            good[:rng.randrange(1, len(good))],                    # truncated: dropped by the gap
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))),
        ]))
    build = avr_build.build(rover=avr_build.CLAW)
    sim = RoboClawProtocol(battery_v=7.9, timeout_s=5)   # 4.000 V on A0: the sketch reads 79 tenths
    now = 0.0
    async with EmulatedUno(build, a0_mv=4000) as uno:
        with open(uno.port, "r+b", buffering=0) as port:
            tty.setraw(port.fileno())
            os.set_blocking(port.fileno(), False)
            for step in steps:
                expected = sim.feed(step, now) + sim.feed(b"\x80\x18", now)
                now += 0.05
                port.write(step + b"\x80\x18")
                got = b""
                async with asyncio.timeout(scaled(5)):
                    while len(got) < len(expected):
                        chunk = port.read(64)
                        got += chunk or b""
                        if not chunk:
                            await asyncio.sleep(0.002)
                await asyncio.sleep(0.03)                  # past the packet timeout on both sides
                got += port.read(64) or b""
                assert got == expected, (step.hex(" "), got.hex(" "), expected.hex(" "))
                pwm = tuple((abs(d) * 255 + 16383) // 32767 for d in sim.duty)
                await uno.wait(lambda p=pwm: (uno.pins.get(5), uno.pins.get(6)) == p, scaled(2))
