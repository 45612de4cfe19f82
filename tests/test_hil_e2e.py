"""The bridge end to end against BOTH rovers, from one suite: the real firmware on an emulated Uno
(firmware_stubs/uno_emulator.py: the sketch built with avr-gcc, run on simavr, motor outputs read back
from its PWM and direction pins) and the Python simulator (firmware_stubs/rover_sim.py, its reported
state). A real hub, a real ``python -m bridge run`` process, an operator SessionClient.

Each test runs once per device: move -> motor outputs, telemetry parsed into signals, the device
heartbeat keeping the rover alive past its 1 s watchdog, the watchdog stopping it 1 s after the bridge
is frozen (SIGSTOP) and after it is killed (SIGKILL), and the e-stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from bridge.client import SessionClient
from firmware_stubs.rover_sim import RoverSim
from firmware_stubs.uno_emulator import EmulatedUno
from tests.conftest import scaled
from tests.helpers.bridge import Bridge, Operator, bridge_process
from tests.helpers.hub import running_hub
from tests.helpers.uno import uno_build

__all__ = ["uno_build"]

A0_MV = 4000          # the emulated battery divider: 4.000 V on A0 -> 79 % (see rover.ino)

CONFIG = """\
session: {{url: "{url}", session_id: hil, token: "{token}"}}
devices:
  base:
    serial: {{port: "{port}", reopen_min_s: 0.05, reopen_max_s: 0.2}}
    heartbeat: {{hz: 5, line: K}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -1, max: 1}}, y: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}} {{y:.2f}}"}}
    ack: true
telemetry:
  - {{device: base, match: '^T (?P<battery>\\d+) (?P<speed>-?[\\d.]+)$', signal: robot.telemetry}}
safety:
  estop: {{signal: robot.estop, reset: robot.reset, send: [{{device: base, line: S}}]}}
"""


class Rover(Protocol):
    """What a test sees of either device."""

    kind: str
    port: str

    def motors(self) -> tuple[float, float]: ...

    def slipped(self) -> float:
        """Seconds the device's clock fell behind the wall clock so far (a starved emulator)."""
        ...

    async def wait(self, condition: Callable[[], bool], timeout: float) -> None: ...


class SimRover:
    """rover_sim.RoverSim in-process; its state is what it reports (polled every 5 ms)."""

    kind = "sim"

    def __init__(self, sim: RoverSim) -> None:
        self.sim = sim
        self.port = sim.path

    def motors(self) -> tuple[float, float]:
        return round(self.sim.left, 2), round(self.sim.right, 2)

    def slipped(self) -> float:
        return 0.0              # the simulator's watchdog reads the wall clock itself

    async def wait(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)


class UnoRover:
    """The firmware on the emulated Uno; its state is what its pins say."""

    kind = "uno"

    def __init__(self, uno: EmulatedUno) -> None:
        self.uno = uno
        self.port = uno.port

    def motors(self) -> tuple[float, float]:
        return self.uno.motors()

    def slipped(self) -> float:
        return self.uno.slipped_s

    async def wait(self, condition: Callable[[], bool], timeout: float) -> None:
        await self.uno.wait(condition, timeout)


@pytest.fixture(params=["uno", "sim"])
async def rover(request: pytest.FixtureRequest) -> AsyncIterator[Rover]:
    if request.param == "uno":
        async with EmulatedUno(request.getfixturevalue("uno_build"), a0_mv=A0_MV) as uno:
            yield UnoRover(uno)
    else:
        sim = RoverSim(hz=10)
        await sim.start()
        try:
            yield SimRover(sim)
        finally:
            await sim.close()


@dataclass
class Rig:
    rover: Rover
    bridge: Bridge
    op: Operator

    async def move(self, x: float, y: float) -> dict[str, Any]:
        await self.op.send("robot.move", {"x": x, "y": y})
        return await self.ack()

    async def ack(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((await self.op.next("bridge.ack")).data)
        return data


@pytest.fixture
async def rig(rover: Rover, tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_hub() as hub:
        config = tmp_path / "bridge.yaml"
        config.write_text(CONFIG.format(url=hub.url, token=hub.token("hil"), port=rover.port))
        async with bridge_process(config) as bridge, \
                SessionClient(hub.url, "hil", hub.token("hil", role="moderator")) as client:
            await bridge.wait_for(r"device base: up")
            await bridge.wait_for(r"READY")
            yield Rig(rover, bridge, Operator(client))


def stopped(rover: Rover) -> Callable[[], bool]:
    return lambda: rover.motors() == (0.0, 0.0)


async def test_move_drives_the_motors_and_telemetry_comes_back_parsed(rig: Rig) -> None:
    rover = rig.rover
    assert (await rig.move(0.5, 0.25))["status"] == "applied"
    await rover.wait(lambda: rover.motors() == (0.75, 0.25), scaled(5))     # arcade mix: x + y, x - y
    async with asyncio.timeout(scaled(10)):
        while True:       # the simulator's speed follows with inertia; the firmware's at once
            tele = json.loads((await rig.op.next("robot.telemetry")).data)
            assert set(tele) == {"battery", "speed"} and isinstance(tele["battery"], int), tele
            if abs(tele["speed"] - 0.5) <= 0.01:
                break
    if rover.kind == "uno":
        assert tele["battery"] == 79          # read by the firmware from the emulated ADC
    else:
        assert 90 <= tele["battery"] <= 100   # the simulator's battery model
    assert (await rig.move(-1, 0))["status"] == "applied"
    await rover.wait(lambda: rover.motors() == (-1.0, -1.0), scaled(5))


async def test_heartbeat_keeps_it_alive_and_the_watchdog_stops_it_when_the_bridge_freezes_or_dies(
        rig: Rig) -> None:
    rover, proc = rig.rover, rig.bridge.proc
    for how in (signal.SIGSTOP, signal.SIGKILL):
        assert (await rig.move(0.5, 0))["status"] == "applied"
        await rover.wait(lambda: rover.motors() == (0.5, 0.5), scaled(5))
        # Well past the firmware's 1 s watchdog with no new command: the bridge's K lines keep it going.
        with pytest.raises(TimeoutError):
            await rover.wait(lambda: rover.motors() != (0.5, 0.5), 1.5)
        proc.send_signal(how)
        silent, slipped = time.monotonic(), rover.slipped()
        await rover.wait(stopped(rover), scaled(5))
        # The last K left at most 0.2 s (5 Hz) before; the firmware stops 1 s after it (in its own time:
        # plus what a starved emulator slipped meanwhile), by itself.
        took, late = time.monotonic() - silent, rover.slipped() - slipped
        assert 0.6 <= took <= 1.0 + late + scaled(0.3), (how, took, late)
        if how == signal.SIGSTOP:
            proc.send_signal(signal.SIGCONT)
            with contextlib.suppress(asyncio.QueueEmpty):     # acks of nothing: drain what is queued
                while True:
                    rig.op.signals.get_nowait()
    assert await proc.wait() == -signal.SIGKILL
    assert rover.motors() == (0.0, 0.0)


async def test_estop_stops_at_once_refuses_moves_until_reset(rig: Rig) -> None:
    rover = rig.rover
    assert (await rig.move(0.8, 0))["status"] == "applied"
    await rover.wait(lambda: rover.motors() == (0.8, 0.8), scaled(5))
    await rig.op.send("robot.estop", {})
    started = time.monotonic()
    await rover.wait(stopped(rover), scaled(5))
    assert time.monotonic() - started < 0.5          # the S line, not the 1 s watchdog
    assert (await rig.move(0.5, 0))["status"] == "estopped"
    with pytest.raises(TimeoutError):
        await rover.wait(lambda: not stopped(rover)(), 0.3)
    await rig.op.send("robot.reset", {})
    async with asyncio.timeout(scaled(10)):
        while json.loads((await rig.op.next("bridge.status")).data)["estopped"]:
            pass
    assert (await rig.move(0.5, 0))["status"] == "applied"
    await rover.wait(lambda: rover.motors() == (0.5, 0.5), scaled(5))
