"""The simulators speak their protocols: rover_sim on a real pty (as a process and in-process, driven
through the real SerialLink), gripper_sim against a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt

from bridge.core.model import SerialDeviceConfig
from bridge.devices.serial_link import SerialLink
from firmware_stubs.rover_sim import RoverSim
from tests.conftest import scaled
from tests.helpers.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
TELEMETRY = re.compile(r"T (\d+) (-?\d\.\d\d)")


class Port:
    """A SerialLink to a simulated rover, collecting what it says."""

    def __init__(self, path: str) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.up = asyncio.Event()
        self.link = SerialLink("rover", SerialDeviceConfig(port=path), self.lines.put_nowait,
                               lambda _n, up: self.up.set() if up else None)

    async def reply(self) -> str:
        """The next line that is not telemetry."""
        async with asyncio.timeout(scaled(10)):
            while TELEMETRY.fullmatch(line := await self.lines.get()):
                pass
        return line

    async def telemetry(self) -> tuple[int, float]:
        async with asyncio.timeout(scaled(10)):
            while not (m := TELEMETRY.fullmatch(await self.lines.get())):
                pass
        return int(m[1]), float(m[2])


@contextlib.asynccontextmanager
async def port(path: str) -> AsyncIterator[Port]:
    p = Port(path)
    task = asyncio.create_task(p.link.run())
    try:
        await asyncio.wait_for(p.up.wait(), scaled(10))
        yield p
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def rover(**kw: object) -> AsyncIterator[RoverSim]:
    sim = RoverSim(**kw)  # type: ignore[arg-type]
    await sim.start()
    try:
        yield sim
    finally:
        await sim.close()


async def test_rover_process_prints_port_replies_logs_and_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "rx.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "firmware_stubs" / "rover_sim.py"), "--hz", "20", "--log", str(log),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), scaled(20))).decode()
        assert re.fullmatch(r"PORT /dev/pts/\d+\n", first), first
        async with port(first.split()[1]) as p:
            p.link.write_line("M 0.5 0")
            assert await p.reply() == "OK"
            p.link.write_line("M 2 0")
            assert await p.reply() == "ERR range"
            battery, _ = await p.telemetry()
            assert 0 <= battery <= 100
        assert log.read_text().splitlines() == ["M 0.5 0", "M 2 0"]
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), scaled(10)) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_rover_moves_then_its_watchdog_stops_it() -> None:
    async with rover(hz=50) as sim, port(sim.path) as p:
        p.link.write_line("M 1 0")
        assert await p.reply() == "OK"
        speeds = [(await p.telemetry())[1] for _ in range(5)]
        assert speeds[-1] > speeds[0] >= 0         # accelerating, with some inertia
        for _ in range(4):                          # keepalives hold it past the 1 s watchdog
            p.link.write_line("K")
            assert await p.reply() == "OK"
            await asyncio.sleep(0.3)                # pacing the keepalives (the subject), not a sync
            assert sim.left == 1
        async with asyncio.timeout(scaled(10)):      # then silence: it stops by itself
            while (await p.telemetry())[1] != 0.0:
                pass
        assert sim.left == sim.right == 0


async def test_rover_battery_drains_and_no_telemetry_option() -> None:
    async with rover(hz=50, drain_per_s=200) as sim, port(sim.path) as p:
        p.link.write_line("M 1 0")
        first, _ = await p.telemetry()
        async with asyncio.timeout(scaled(10)):
            while (await p.telemetry())[0] >= first - 20:
                pass
    async with rover(telemetry=False) as sim, port(sim.path) as p:
        p.link.write_line("K")
        p.link.write_line("bogus")
        assert await p.lines.get() == "OK"
        assert await asyncio.wait_for(p.lines.get(), scaled(10)) == "ERR unknown"
        assert sim.received == ["K", "bogus"]
        assert p.lines.empty()


async def test_gripper_commands_state_and_errors(mosquitto: Mosquitto) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "firmware_stubs" / "gripper_sim.py"), "--port", str(mosquitto.port),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), scaled(20)) == b"READY\n"
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.subscribe("arm/state/#", qos=1)
            msgs = aiter(c.messages)

            async def nxt() -> tuple[str, object]:
                m = await asyncio.wait_for(anext(msgs), scaled(10))
                assert isinstance(m.payload, bytes)
                return m.topic.value, json.loads(m.payload)

            await c.publish("arm/grip/set", b'{"force": 40}', qos=1)
            assert await nxt() == ("arm/state/grip", {"force": 40, "closed": True})
            for bad in (b'{"force": 101}', b'{"force": "40"}', b'{"force": 1, "x": 2}', b"\xff", b"[]"):
                await c.publish("arm/grip/set", bad, qos=1)
                topic, doc = await nxt()
                assert topic == "arm/state/error" and isinstance(doc, dict) and doc["error"], (bad, doc)
            await c.publish("arm/grip/set", b'{"force": 0}', qos=1)
            assert await nxt() == ("arm/state/grip", {"force": 0, "closed": False})
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), scaled(10)) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
