"""Shutdown and e-stop are final, with real processes: a real hub, a real `python -m bridge run`, a real
pty as the robot, a real mosquitto. An operator streams moves at 20 Hz; what the device received is read
byte for byte at the pty master (or on the broker).

- SIGTERM mid-stream, 10 trials: the last line the serial device ever gets is the ``on_shutdown`` stop
  line, and the last command message of the MQTT device its stop message (not a move the session
  delivered during the grace, not a heartbeat);
- e-stop mid-stream, 10 trials: after the e-stop line, nothing but heartbeats until the reset;
- e-stop while lines wait in the serial link for a device that stopped reading: they are dropped, the
  e-stop line comes right after what the kernel already held;
- e-stop while moves wait in the MQTT link's queue (the broker frozen with SIGSTOP, so nothing is
  acknowledged): the queued moves are dropped, the e-stop message is the last the device gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.bridge import Bridge, bridge_process
from tests.helpers.hub import running_hub
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.pty import PtyPair

TRIALS = 10
HZ = 20

CONFIG = """\
session: {{url: "{url}", session_id: fin, token: "{token}"}}
devices:
  base: {{serial: {{port: "{port}", reopen_min_s: 0.05, reopen_max_s: 0.2}}, heartbeat: {{hz: 20, line: K}}}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}}"}}
    watchdog: {{timeout_ms: 200, send: {{device: base, line: "M 0"}}}}
safety:
  on_shutdown: [{{device: base, line: STOP}}]
  estop: {{signal: robot.estop, reset: robot.estop_reset, send: [{{device: base, line: ESTOP}}]}}
"""


SHUTDOWN_CONFIG = """\
session: {{url: "{url}", session_id: fin, token: "{token}"}}
devices:
  base: {{serial: {{port: "{port}", reopen_min_s: 0.05, reopen_max_s: 0.2}}, heartbeat: {{hz: 20, line: K}}}}
  arm:
    mqtt: {{host: 127.0.0.1, port: {mqtt}, client_id: fin-arm}}
    heartbeat: {{hz: 20, topic: arm/move, payload: K}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}}"}}
  - signal: arm.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: arm, topic: arm/move, payload: {{x: "{{x}}"}}, qos: 1}}
safety:
  on_shutdown: [{{device: base, line: STOP}}, {{device: arm, topic: arm/move, payload: {{stop: 1}}, qos: 1}}]
"""


@contextlib.asynccontextmanager
async def streaming(client: SessionClient, type_: str = "robot.move", hz: float = HZ,
                    ) -> AsyncIterator[list[int]]:
    """Send ``type_`` moves at ``hz`` until the block ends; yields the count sent so far (a list of one)."""
    sent = [0]

    async def pump() -> None:
        while True:
            sent[0] += 1
            with contextlib.suppress(Exception):
                await client.signal(type_, json.dumps({"x": round((sent[0] % 90) / 100 + 0.05, 2)}))
            await asyncio.sleep(1 / hz)

    task = asyncio.create_task(pump())
    try:
        yield sent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def lines_until(pair: PtyPair, done: asyncio.Future[Any]) -> list[str]:
    """Every line the link writes until ``done`` is set and 0.3 s more have passed without bytes."""
    lines: list[str] = []
    while True:
        try:
            lines.append(await pair.read_line(0.3))
        except TimeoutError:
            if done.done():
                return lines


async def moves_seen(pair: PtyPair, n: int) -> list[str]:
    """Lines until ``n`` moves have been written."""
    lines: list[str] = []
    while sum(line.startswith("M ") for line in lines) < n:
        lines.append(await pair.read_line(scaled(10)))
    return lines


async def one_shutdown(client: SessionClient, pair: PtyPair, config: Path) -> list[str]:
    async with bridge_process(config) as bridge:
        await bridge.wait_for(r"READY")
        await bridge.wait_for(r"device base: up")
        await bridge.wait_for(r"device arm: up")
        async with streaming(client), streaming(client, "arm.move"):
            before = await moves_seen(pair, 3)
            exited = asyncio.ensure_future(bridge.proc.wait())
            bridge.proc.send_signal(signal.SIGTERM)
            after = await lines_until(pair, exited)   # the streams go on meanwhile
        assert await exited == 0, "".join(bridge.stderr)
    return before + after


async def test_sigterm_mid_stream_the_last_line_is_the_stop_line_10_trials(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The serial device's last line is STOP, the MQTT device's last command message its stop (the
    link's retained 'offline' availability, on its own topic, is not a command)."""
    async with running_hub() as hub, aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
        await sub.subscribe("arm/move", qos=0)
        got: list[bytes] = []

        async def collect() -> None:
            async for message in sub.messages:
                got.append(bytes(message.payload) if isinstance(message.payload, bytes) else b"")

        collector = asyncio.create_task(collect())
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(SHUTDOWN_CONFIG.format(url=hub.url, token=hub.token("fin"), port=pair.path,
                                                     mqtt=mosquitto.port))
            async with SessionClient(hub.url, "fin", hub.token("fin", role="moderator")) as client:
                tails = []
                for _ in range(TRIALS):
                    mark = len(got)
                    lines = await one_shutdown(client, pair, config)
                    messages = got[mark:]
                    tails.append((lines[-2:], messages[-2:]))
                    assert lines.count("STOP") == 1 and lines[-1] == "STOP", lines[-10:]
                    assert sum(b"x" in m for m in messages) >= 3, messages[-5:]   # the arm was driven
                    assert messages.count(b'{"stop":1}') == 1 and messages[-1] == b'{"stop":1}', messages[-5:]
                print(f"\nshutdown: {TRIALS} trials, STOP last on both devices in all; tails {tails}")
        collector.cancel()


SLOW_CONFIG = """\
session: {{url: "{url}", session_id: slow, token: "{token}"}}
devices: {{base: {{serial: {{port: "{port}"}}}}}}
rules:
  - signal: robot.path
    params: {{p: {{type: string, pattern: "[a-z]{{1,200}}"}}}}
    send: {{device: base, line: "P {{p}}"}}
safety:
  estop: {{signal: robot.estop, reset: robot.estop_reset, send: [{{device: base, line: ESTOP}}]}}
"""


async def test_estop_drops_the_lines_queued_for_a_device_that_stopped_reading(tmp_path: Path) -> None:
    """The device stops reading; 400 long moves fill the kernel's pty buffer and then the link's own.
    The e-stop line does not wait behind the ones still in the link (old code: all 400 first): the
    device reads what the kernel held, whole lines, then ESTOP, then nothing."""
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(SLOW_CONFIG.format(url=hub.url, token=hub.token("slow"), port=pair.path))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "slow", hub.token("slow", role="moderator")) as op:
                await bridge.wait_for(r"READY")
                await bridge.wait_for(r"device base: up")
                moves = [f"P {chr(97 + i % 26) * 200}" for i in range(400)]
                for line in moves:                 # nobody reads the pty meanwhile
                    await op.signal("robot.path", json.dumps({"p": line[2:]}))
                mark = len(bridge.stderr)
                await op.signal("robot.estop", "{}")
                await bridge.wait_for(r"e-stop LATCHED", after=mark)
                got = []
                while (line := await pair.read_line(scaled(10))) != "ESTOP":
                    got.append(line)
                assert got == moves[: len(got)], "not whole lines in order"
                assert len(got) < len(moves) - 50, f"{len(got)} of {len(moves)} written before the e-stop"
                await asyncio.sleep(0.2)
                assert pair.pending() == b""
                print(f"\nslow device: {len(got)} of {len(moves)} moves before ESTOP, the rest dropped")


async def test_estop_mid_stream_nothing_moves_until_the_reset_10_trials(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, token=hub.token("fin"), port=pair.path))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "fin", hub.token("fin")) as driver, \
                    SessionClient(hub.url, "fin", hub.token("fin", role="moderator")) as mod:
                await bridge.wait_for(r"READY")
                await bridge.wait_for(r"device base: up")
                refused = 0
                async with streaming(driver) as sent:
                    for _ in range(TRIALS):
                        await moves_seen(pair, 3)
                        await mod.signal("robot.estop", "{}")
                        while await pair.read_line(scaled(10)) != "ESTOP":
                            pass
                        at_estop = sent[0]
                        while sent[0] < at_estop + 4:      # the stream goes on into the latch
                            line = await pair.read_line(scaled(10))
                            assert line == "K", f"{line!r} written after the e-stop line"
                        refused += sent[0] - at_estop
                        while pair.pending():
                            assert await pair.read_line() == "K"
                        await reset(bridge, mod)
                print(f"\ne-stop: {TRIALS} trials, nothing but heartbeats after ESTOP; "
                      f">= {refused} moves sent into the latch")


async def reset(bridge: Bridge, mod: SessionClient) -> None:
    mark = len(bridge.stderr)
    await mod.signal("robot.estop_reset", "{}")
    await bridge.wait_for(r"e-stop reset", after=mark)


MQTT_CONFIG = """\
session: {{url: "{url}", session_id: finq, token: "{token}"}}
devices:
  arm: {{mqtt: {{host: 127.0.0.1, port: {mqtt}, client_id: fin-arm, keepalive: 60}}}}
rules:
  - signal: arm.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: arm, topic: arm/move, payload: {{x: "{{x}}"}}, qos: 1}}
safety:
  estop:
    signal: arm.estop
    reset: arm.reset
    send: [{{device: arm, topic: arm/move, payload: {{stop: 1}}, qos: 0}}]   # overtakes a QoS 1 queue
"""


async def test_estop_drops_moves_queued_in_the_mqtt_link(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_hub() as hub:
        config = tmp_path / "bridge.yaml"
        config.write_text(MQTT_CONFIG.format(url=hub.url, token=hub.token("finq"), mqtt=mosquitto.port))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub, \
                bridge_process(config) as bridge, \
                SessionClient(hub.url, "finq", hub.token("finq", role="moderator")) as op:
            # QoS 0: the broker forwards in the order it received (QoS 1 to us would pass its own
            # in-flight queue, which QoS 0 messages overtake).
            await sub.subscribe("arm/move", qos=0)
            await bridge.wait_for(r"READY")
            await bridge.wait_for(r"device arm: up")
            assert mosquitto.proc is not None
            # Frozen broker: the TCP connection stays up, nothing is acknowledged. After 64 in flight
            # (the link's window) the bridge's moves wait in its queue.
            os.kill(mosquitto.proc.pid, signal.SIGSTOP)
            try:
                for i in range(150):
                    await op.signal("arm.move", json.dumps({"x": i / 1000}))
                await op.signal("arm.estop", "{}")
                await bridge.wait_for(r"e-stop LATCHED")
            finally:
                os.kill(mosquitto.proc.pid, signal.SIGCONT)
            got: list[bytes] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(scaled(2)):
                    async for message in sub.messages:
                        got.append(bytes(message.payload) if isinstance(message.payload, bytes) else b"")
            assert got, "nothing reached the broker"
            assert got[-1] == b'{"stop":1}', (len(got), got[-5:])
            assert got.count(b'{"stop":1}') == 1 and len(got) < 150, len(got)
            print(f"\nmqtt e-stop: {len(got) - 1} of 150 moves were on the wire before it, "
                  f"{151 - len(got)} queued ones dropped; STOP last")
