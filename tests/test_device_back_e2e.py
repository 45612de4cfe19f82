"""A device that comes back is made safe first, and acks tell the truth, with real processes: a real hub,
a real `python -m bridge run`, a real pty that vanishes and comes back behind the same path (a USB
adapter re-enumerated), a real mosquitto stopped and started again.

- commands sent while the device is gone are acked ``device_down`` and never written later;
- the watchdog that fell due while the port was gone: its stop line is the first thing the new port gets;
- the e-stop latched while the port (or the broker) was gone: its action is the first thing written
  when the device is back, before any command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiomqtt

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.bridge import Bridge, Operator, ack, bridge_process
from tests.helpers.hub import running_hub
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.pty import PtyPair

CONFIG = """\
session: {{url: "{url}", session_id: back, token: "{token}"}}
devices:
  base: {{serial: {{port: "{port}", reopen_min_s: 0.05, reopen_max_s: 0.2}}}}
  arm: {{mqtt: {{host: 127.0.0.1, port: {mqtt}, client_id: back-arm, reconnect_min_s: 0.05,
                reconnect_max_s: 0.2}}}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}}"}}
    watchdog: {{timeout_ms: 200, send: {{device: base, line: "M 0"}}}}
    ack: true
  - signal: arm.grip
    params: {{force: {{type: int, min: 0, max: 100}}}}
    send: {{device: arm, topic: arm/grip/set, payload: {{force: "{{force}}"}}, qos: 1}}
    ack: true
safety:
  estop:
    signal: robot.estop
    reset: robot.estop_reset
    send: [{{device: base, line: ESTOP}}, {{device: arm, topic: arm/grip/set, payload: {{force: 0}}, qos: 1}}]
"""


async def status(op: Operator, **want: Any) -> dict[str, Any]:
    """Ask ``bridge.describe`` until the bridge's status has the ``want`` fields (at most 10 s)."""
    async with asyncio.timeout(scaled(10)):
        while True:
            await op.send("bridge.describe", {})
            got: dict[str, Any] = json.loads((await op.next("bridge.status")).data)
            if all(got.get(k) == v for k, v in want.items()):
                return got
            await asyncio.sleep(0.1)


async def device(bridge: Bridge, name: str, state: str, mark: int) -> None:
    await bridge.wait_for(rf"device {name}: {state}", after=mark)


async def test_serial_device_back_gets_the_missed_watchdog_stop_first_never_a_refused_move(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, token=hub.token("back"), port=pair.path,
                                            mqtt=mosquitto.port))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "back", hub.token("back", role="moderator")) as c:
                op = Operator(c)
                await bridge.wait_for("READY")
                await device(bridge, "base", "up", 0)
                await op.send("robot.move", {"x": 0.5})
                assert (await ack(op))["status"] == "applied"
                assert await pair.read_line(scaled(10)) == "M 0.50"
                # Unplugged while driving, before the watchdog's 200 ms are over.
                mark = len(bridge.stderr)
                pair.vanish()
                await device(bridge, "base", "down", mark)
                await op.send("robot.move", {"x": 0.9, "id": "while-down"})
                assert await ack(op) == {"id": "while-down", "status": "device_down",
                                         "reason": "device base is down"}
                await status(op, devices={"base": "down", "arm": "up"})
                got = await status(op)
                while got["counters"]["watchdog_fired"] < 1:     # fell due while the port was gone
                    got = await status(op)
                mark = len(bridge.stderr)
                pair.recreate()
                await device(bridge, "base", "up", mark)
                await op.send("robot.move", {"x": 0.1})
                assert (await ack(op))["status"] == "applied"
                assert [await pair.read_line(scaled(10)) for _ in range(2)] == ["M 0", "M 0.10"]


async def test_estop_while_the_port_is_gone_is_written_first_when_it_is_back(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, token=hub.token("back"), port=pair.path,
                                            mqtt=mosquitto.port))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "back", hub.token("back", role="moderator")) as c:
                op = Operator(c)
                await bridge.wait_for("READY")
                await device(bridge, "base", "up", 0)
                mark = len(bridge.stderr)
                pair.vanish()
                await device(bridge, "base", "down", mark)
                await op.send("robot.estop", {})
                await bridge.wait_for("e-stop LATCHED", after=mark)
                mark = len(bridge.stderr)
                pair.recreate()
                await device(bridge, "base", "up", mark)
                assert await pair.read_line(scaled(10)) == "ESTOP"
                await op.send("robot.move", {"x": 0.3})
                assert (await ack(op))["status"] == "estopped"
                await op.send("robot.estop_reset", {})
                await status(op, estopped=False)
                await op.send("robot.move", {"x": 0.2})
                assert (await ack(op))["status"] == "applied"
                assert await pair.read_line(scaled(10)) == "M 0.20"
                assert pair.pending() == b""


async def test_broker_down_grip_acked_device_down_and_estop_first_after_the_restart(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    availability = "sigbridge/back-arm/availability"
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, token=hub.token("back"), port=pair.path,
                                            mqtt=mosquitto.port))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "back", hub.token("back", role="moderator")) as c:
                op = Operator(c)
                await bridge.wait_for("READY")
                await device(bridge, "arm", "up", 0)
                for attempt in range(5):
                    mark = len(bridge.stderr)
                    mosquitto.stop()
                    await device(bridge, "arm", "down", mark)
                    await op.send("arm.grip", {"force": 70, "id": attempt})
                    assert await ack(op) == {"id": attempt, "status": "device_down",
                                             "reason": "device arm is down"}
                    await op.send("robot.estop", {})
                    mosquitto.start()
                    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
                        await sub.subscribe([(availability, 0), ("arm/grip/#", 0)])
                        messages = sub.messages
                        first = await asyncio.wait_for(anext(messages), scaled(10))
                        if first.retain:
                            # The bridge was back before we subscribed (its "online" is retained):
                            # what it wrote first was missed; try again.
                            await op.send("robot.estop_reset", {})
                            await status(op, estopped=False, devices={"base": "up", "arm": "up"})
                            continue
                        assert (first.topic.value, first.payload) == (availability, b"online")
                        msg = await asyncio.wait_for(anext(messages), scaled(10))
                        assert (msg.topic.value, msg.payload) == ("arm/grip/set", b'{"force":0}')
                        await op.send("robot.estop_reset", {})
                        await status(op, estopped=False)
                        await op.send("arm.grip", {"force": 5})
                        assert (await ack(op))["status"] == "applied"
                        msg = await asyncio.wait_for(anext(messages), scaled(10))
                        # The grip refused while the broker was down was never published.
                        assert (msg.topic.value, msg.payload) == ("arm/grip/set", b'{"force":5}')
                        return
                raise AssertionError("the bridge reconnected before the test's subscriber 5 times")


async def test_full_mqtt_queue_acks_overloaded_and_those_are_never_published(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The broker frozen (SIGSTOP: connected, acknowledging nothing): the link takes 1,000 QoS 1
    publishes, then refuses. Each grip is acked applied or overloaded; once the broker runs again,
    it gets exactly the applied ones, in order, and none of the overloaded ones ever."""
    async with running_hub(rate_limit=0) as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, token=hub.token("back"), port=pair.path,
                                            mqtt=mosquitto.port))
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub, \
                    bridge_process(config) as bridge, \
                    SessionClient(hub.url, "back", hub.token("back", role="moderator")) as c:
                await sub.subscribe("arm/grip/set", qos=0)
                op = Operator(c)
                await bridge.wait_for("READY")
                await device(bridge, "arm", "up", 0)
                assert mosquitto.proc is not None
                os.kill(mosquitto.proc.pid, signal.SIGSTOP)
                try:
                    total = 1100
                    for i in range(total):
                        await op.send("arm.grip", {"force": i % 101, "id": i})
                    statuses = {}
                    async with asyncio.timeout(scaled(20)):
                        while len(statuses) < total:
                            a = await ack(op)
                            statuses[a["id"]] = a["status"]
                finally:
                    os.kill(mosquitto.proc.pid, signal.SIGCONT)
                applied = [i for i in range(total) if statuses[i] == "applied"]
                overloaded = [i for i in range(total) if statuses[i] == "overloaded"]
                assert len(applied) + len(overloaded) == total and len(overloaded) >= 50, len(applied)
                got: list[bytes] = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(scaled(3)):
                        async for message in sub.messages:
                            got.append(bytes(message.payload) if isinstance(message.payload, bytes) else b"")
                assert got == [b'{"force":%d}' % (i % 101) for i in applied]
