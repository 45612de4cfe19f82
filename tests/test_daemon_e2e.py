"""End to end: a real hub, a real `python -m bridge run` process, a real pty (the rover side) and a real
mosquitto. An operator SessionClient drives the bridge; the test reads the exact bytes at the pty master
and the exact messages on the broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from bridge.client import SessionClient
from bridge.config.hub import HubConfig
from bridge.hub.run import start_hub
from tests.conftest import scaled
from tests.helpers.bridge import Bridge, Operator, bridge_process
from tests.helpers.hub import HubHandle, running_hub, test_credentials
from tests.helpers.mosquitto import Mosquitto, free_port
from tests.helpers.proxy import TcpProxy
from tests.helpers.pty import PtyPair

SESSION = "e2e-lab"

CONFIG = """\
session: {{url: "{url}", session_id: {session}, token: "{token}"}}
devices:
  base: {{serial: {{port: "{port}", newline: "\\n", reopen_min_s: 0.05, reopen_max_s: 0.2}}}}
  arm: {{mqtt: {{host: 127.0.0.1, port: {mqtt_port}, client_id: e2e-arm, reconnect_min_s: 0.05,
                reconnect_max_s: 0.2}}}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -1, max: 1}}, y: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}} {{y:.2f}}"}}
    ack: true
  - signal: robot.say
    params: {{text: {{type: string, pattern: '.{{1,20}}'}}}}
    send: {{device: base, line: "SAY {{text}}"}}
    ack: true
  - signal: arm.grip
    params: {{force: {{type: int, min: 0, max: 100}}}}
    send: {{device: arm, topic: arm/grip/set, payload: {{force: "{{force}}"}}, qos: 1}}
    ack: true
telemetry:
  - {{device: base, match: '^T (?P<battery>\\d+) (?P<speed>-?[\\d.]+)$', signal: robot.telemetry}}
  - {{device: arm, topic: "arm/state/#", signal: arm.state}}
"""


@dataclass
class World:
    hub: HubHandle
    pty: PtyPair
    mqtt: aiomqtt.Client | None
    bridge: Bridge
    op: Operator
    broker: Mosquitto
    config: Path


@pytest.fixture
async def world(request: pytest.FixtureRequest, tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[World]:
    """The whole rig. Parametrize indirectly with False for no MQTT subscriber (broker restart test:
    a subscriber whose broker dies leaves an unretrieved aiomqtt future behind)."""
    subscribe = getattr(request, "param", True)
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(running_hub())
        pair = stack.enter_context(PtyPair(tmp_path / "rover"))
        config = tmp_path / "bridge.yaml"
        config.write_text(CONFIG.format(url=hub.url, session=SESSION, token=hub.token(SESSION),
                                        port=pair.path, mqtt_port=mosquitto.port))
        sub = None
        if subscribe:
            sub = await stack.enter_async_context(aiomqtt.Client("127.0.0.1", mosquitto.port))
            await sub.subscribe("arm/grip/#", qos=1)
        bridge = await stack.enter_async_context(bridge_process(config))
        await bridge.wait_for(r"READY")
        await bridge.wait_for(r"device base: up")
        await bridge.wait_for(r"device arm: up")
        c = await stack.enter_async_context(
            SessionClient(hub.url, SESSION, hub.token(SESSION, role="moderator")))
        yield World(hub, pair, sub, bridge, Operator(c), mosquitto, config)


async def next_message(sub: aiomqtt.Client | None, timeout: float = 10.0) -> aiomqtt.Message:
    assert sub is not None
    async with asyncio.timeout(scaled(timeout)):
        async for message in sub.messages:
            return message
    raise AssertionError("unreachable")


async def test_signal_to_serial_line_mqtt_message_and_telemetry_back(world: World) -> None:
    await world.op.send("robot.move", {"x": 0.5, "y": -0.25, "id": "m1"})
    assert await world.pty.read_until(b"\n", scaled(10)) == b"M 0.50 -0.25\n"
    ack = json.loads((await world.op.next("bridge.ack")).data)
    assert ack == {"id": "m1", "status": "applied", "reason": None, "values": {"x": 0.5, "y": -0.25}}

    await world.op.send("arm.grip", {"force": 42})
    msg = await next_message(world.mqtt)
    assert (msg.topic.value, msg.payload, msg.qos, msg.retain) == ("arm/grip/set", b'{"force":42}', 1, False)

    world.pty.write_line("T 87 0.50")
    tele = await world.op.next("robot.telemetry")
    assert json.loads(tele.data) == {"battery": 87, "speed": 0.5}


async def test_bad_params_put_nothing_on_the_wire(world: World) -> None:
    bad = [
        ("robot.move", {"x": 1.5, "y": 0}),           # out of range
        ("robot.move", {"x": "0.5", "y": 0}),         # wrong type
        ("robot.move", {"x": 0, "y": 0, "z": 1}),     # undeclared
        ("robot.move", {"x": "1\nFIRE", "y": 0}),     # newline injection (and wrong type)
        ("robot.say", {"text": "1\nFIRE"}),           # newline injection into a string param
        ("robot.say", {"text": "hi\r"}),
        ("arm.grip", {"force": 101}),
        ("arm.grip", {"force": 1.5}),
        ("arm.grip", {"force": True}),
    ]
    for type_, data in bad:
        await world.op.send(type_, data)
        ack = json.loads((await world.op.next("bridge.ack")).data)
        assert ack["status"] == "rejected", (data, ack)
    await world.op.send("robot.say", {"text": "hello"})
    await world.op.send("arm.grip", {"force": 7})
    # The first bytes to arrive are the good commands: nothing before them reached the wire.
    assert await world.pty.read_until(b"\n", scaled(10)) == b"SAY hello\n"
    assert (await next_message(world.mqtt)).payload == b'{"force":7}'
    assert world.pty.pending() == b""


async def test_serial_port_vanishes_and_comes_back(world: World) -> None:
    world.pty.vanish()
    await world.bridge.wait_for(r"device base: down")
    # A command for the missing device is acked device_down and not written, ever; bridge.status counts it.
    await world.op.send("robot.move", {"x": 0.3, "y": 0.3, "id": "gone"})
    ack = json.loads((await world.op.next("bridge.ack")).data)
    assert ack == {"id": "gone", "status": "device_down", "reason": "device base is down"}
    await world.op.send("bridge.describe", {})
    async with asyncio.timeout(scaled(10)):      # a broadcast from before the command may come first
        while (status := json.loads((await world.op.next("bridge.status")).data))["counters"][
                "decisions"]["device_down"] != 1:
            pass
    assert status["devices"]["base"] == "down"
    world.pty.recreate()
    mark = len(world.bridge.stderr)
    await world.bridge.wait_for(r"device base: up", after=mark)
    await world.op.send("robot.move", {"x": 0.1, "y": 0.2})
    assert await world.pty.read_line(scaled(10)) == "M 0.10 0.20"
    world.pty.write_line("T 50 0")
    assert json.loads((await world.op.next("robot.telemetry")).data) == {"battery": 50, "speed": 0}


@pytest.mark.parametrize("world", [False], indirect=True)
async def test_broker_restart_commands_flow_again(world: World) -> None:
    mark = len(world.bridge.stderr)
    world.broker.restart()
    await world.bridge.wait_for(r"device arm: down", after=mark)
    await world.bridge.wait_for(r"device arm: up", after=mark)
    async with aiomqtt.Client("127.0.0.1", world.broker.port) as sub:
        await sub.subscribe("arm/grip/#", qos=1)
        await world.op.send("arm.grip", {"force": 9})
        msg = await next_message(sub)
        assert (msg.topic.value, msg.payload) == ("arm/grip/set", b'{"force":9}')


async def test_audit_then_sigterm_runs_on_shutdown_and_exits_0(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: s1, token: "{hub.token('s1')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules: [{{signal: go, send: {{device: base, line: GO}}}}]
                safety: {{on_shutdown: [{{device: base, line: BYE}}]}}
                audit: {{path: "{tmp_path / 'audit.log'}"}}
                """))
            # Play systemd's side of the notify socket.
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(tmp_path / "notify"))
            notify.setblocking(False)
            loop = asyncio.get_running_loop()
            async with bridge_process(config, {"NOTIFY_SOCKET": str(tmp_path / "notify")}) as bridge, \
                    SessionClient(hub.url, "s1", hub.token("s1", data="op-7")) as c:
                assert (await asyncio.wait_for(loop.sock_recv(notify, 4096), scaled(10))).startswith(
                    b"READY=1")
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                await c.signal("go", "")
                assert await pair.read_line(scaled(10)) == "GO"
                bridge.proc.send_signal(signal.SIGTERM)
                assert await pair.read_line(scaled(10)) == "BYE"
                assert await asyncio.wait_for(bridge.proc.wait(), scaled(10)) == 0
            notes = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    notes.append(notify.recv(4096))
            notify.close()
            assert b"STOPPING=1" in notes, notes
            [record] = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
            assert (record["type"], record["from_data"], record["decision"], record["written"]) == (
                "go", "op-7", "applied", [{"device": "base", "line": "GO"}])


async def test_bad_config_exits_2_with_file_line_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(textwrap.dedent("""\
        session: {url: "ws://127.0.0.1:1", session_id: s, token: t}
        devices:
          base: {serial: {port: /dev/null}}
        rules:
          - signal: robot.move
            send: {device: bsae, line: "M"}
        """))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
    _, err = await asyncio.wait_for(proc.communicate(), scaled(20))
    assert proc.returncode == 2
    text = err.decode()
    assert f"{config}:6: rules[0].send.device: unknown device 'bsae'" in text, text


async def test_session_link_lost_safe_action_first_telemetry_dropped_not_queued(tmp_path: Path) -> None:
    async with running_hub() as hub, TcpProxy("127.0.0.1", hub.port) as proxy:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "ws://127.0.0.1:{proxy.port}", session_id: s2, token: "{hub.token('s2')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules:
                  - {{signal: go, params: {{n: {{type: int}}}}, send: {{device: base, line: "GO {{n}}"}}}}
                telemetry:
                  - {{device: base, match: 'T (?P<v>\\d+)', signal: tele}}
                safety: {{on_disconnect: [{{device: base, line: STOP}}]}}
                """))
            async with bridge_process(config) as bridge, SessionClient(
                    hub.url, "s2", hub.token("s2", role="moderator")) as c:
                op = Operator(c)
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                pair.write_line("T 1")
                assert json.loads((await op.next("tele")).data) == {"v": 1}

                mark = len(bridge.stderr)
                proxy.refuse(True)
                await proxy.cut()
                # The safe action is the first thing on the wire once the link is lost.
                assert await pair.read_line(scaled(10)) == "STOP"
                pair.write_line("T 2")      # while the link is down: dropped, never queued
                await bridge.wait_for(r"dropping telemetry", after=mark)
                proxy.refuse(False)
                await bridge.wait_for(r"connected as .*1 telemetry value\(s\) dropped", after=mark)
                pair.write_line("T 3")
                assert json.loads((await op.next("tele")).data) == {"v": 3}
                await op.send("go", {"n": 5})
                assert await pair.read_line(scaled(10)) == "GO 5"


async def test_hub_restart_bridge_joins_again_as_a_new_connection(tmp_path: Path) -> None:
    key, secret = test_credentials()
    config = HubConfig(api_key=key, api_secret=secret, host="127.0.0.1", port=free_port())
    hub = await start_hub(config)
    handle = HubHandle(hub.url, hub.http_url, hub.port, key, secret)
    try:
        with PtyPair(tmp_path / "rover") as pair:
            path = tmp_path / "bridge.yaml"
            path.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: s3, token: "{handle.token('s3')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules: [{{signal: go, send: {{device: base, line: GO}}}}]
                safety: {{on_disconnect: [{{device: base, line: STOP}}]}}
                """))
            async with bridge_process(path) as bridge:
                await bridge.wait_for(r"device base: up")
                first = await bridge.wait_for(r"connected as (\S+)")
                mark = len(bridge.stderr)
                await hub.close()                 # the hub goes away with every session in it
                assert await pair.read_line(scaled(10)) == "STOP"
                hub = await start_hub(config)     # back on the same port, knowing nobody
                again = await bridge.wait_for(r"connected as (\S+)", timeout=40, after=mark)
                assert again.split("connected as ")[1] != first.split("connected as ")[1]
                async with SessionClient(hub.url, "s3", handle.token("s3")) as c:
                    await c.signal("go", "")
                    assert await pair.read_line(scaled(10)) == "GO"
    finally:
        await hub.close()


async def test_commands_replayed_after_resume_are_dropped_as_stale(tmp_path: Path) -> None:
    """The hub buffers retry signals for the bridge while its link is down and replays them on resume
    with their original hub timestamp: older than max_age_ms by then, they must never be written."""
    async with running_hub() as hub, TcpProxy("127.0.0.1", hub.port) as proxy:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "ws://127.0.0.1:{proxy.port}", session_id: s4, token: "{hub.token('s4')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules:
                  - {{signal: go, params: {{n: {{type: int}}}}, send: {{device: base, line: "GO {{n}}"}},
                     max_age_ms: 200, ack: true}}
                safety: {{on_disconnect: [{{device: base, line: STOP}}]}}
                """))
            async with bridge_process(config) as bridge, SessionClient(
                    hub.url, "s4", hub.token("s4", role="moderator")) as c:
                op = Operator(c)
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                mark = len(bridge.stderr)
                proxy.refuse(True)
                await proxy.cut()
                assert await pair.read_line(scaled(10)) == "STOP"
                await op.send("go", {"n": 1, "id": "old"})   # retry: the hub keeps it for the bridge
                # The command's age is what is under test: let it grow past max_age_ms.
                await asyncio.sleep(0.4)
                proxy.refuse(False)
                await bridge.wait_for(r"connected as", after=mark)
                ack = json.loads((await op.next("bridge.ack")).data)
                assert (ack["id"], ack["status"]) == ("old", "stale")
                await op.send("go", {"n": 2})
                assert await pair.read_line(scaled(10)) == "GO 2"     # GO 1 never reached the wire


async def test_deadman_watchdog_sends_safe_line_in_time(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: s5, token: "{hub.token('s5')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules:
                  - signal: robot.move
                    params: {{x: {{type: float, min: -1, max: 1}}}}
                    send: {{device: base, line: "M {{x:.1f}}"}}
                    watchdog: {{timeout_ms: 300, send: {{device: base, line: "M 0"}}}}
                """))
            async with bridge_process(config) as bridge, SessionClient(hub.url, "s5", hub.token("s5")) as c:
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                loop = asyncio.get_running_loop()
                for _ in range(3):    # refreshed: no stop in between
                    sent = loop.time()
                    await c.signal("robot.move", '{"x":0.5}')
                    assert await pair.read_line(scaled(10)) == "M 0.5"
                written = loop.time()
                assert await pair.read_line(scaled(10)) == "M 0"
                stopped = loop.time()
                # Not before timeout_ms after the last command, and soon after it.
                assert stopped - sent >= 0.3, (sent, stopped)
                assert stopped - written <= 0.3 + scaled(0.4), (written, stopped)


async def test_expect_reply_goes_back_to_the_sender(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: s6, token: "{hub.token('s6')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules:
                  - signal: robot.ping
                    send: {{device: base, line: "P", expect: {{pattern: 'PONG (?P<n>\\d+) (?P<fw>\\S+)',
                                                              timeout_ms: 5000, reply: robot.pong}}}}
                """))
            async with bridge_process(config) as bridge, SessionClient(hub.url, "s6", hub.token("s6")) as c:
                op = Operator(c)
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                await op.send("robot.ping", {})
                assert await pair.read_line(scaled(10)) == "P"
                pair.write_line("PONG 7 v1.2")
                reply = await op.next("robot.pong")
                assert json.loads(reply.data) == {"n": 7, "fw": "v1.2"}
