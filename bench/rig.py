"""The two systems under test, side by side, each driven by an operator in the bench process:

* ``bridge``: ``python -m bridge hub`` and ``python -m bridge run -c bridge.yaml`` as real child processes;
  the operator is a :class:`bridge.session.SessionClient` that signals the bridge's connection.
* ``baseline``: ``python -m bench.baseline relay`` and ``... device`` (see bench/baseline.py); the
  operator is a bare `websockets` client.

Each side has its own pty pair (the bench holds the master) and its own MQTT topic on one shared
mosquitto. A :class:`Side` hides which is which, so every benchmark drives both with the same code and
can interleave them round by round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, Child, Pty, scaled, wait_port
from tests.helpers.mosquitto import Mosquitto, free_port

API_KEY = "46000001"
API_SECRET = "bench-secret-0123456789abcdef0123456789"
BRIDGE_DATA = "bridge:bench"
TELEMETRY_MATCH = r"^T (?P<n>\d+) (?P<speed>-?[\d.]+)$"

LineHandler = Callable[[bytes, float], None]
SignalHandler = Callable[[str, str, float], None]


def _ignore_line(line: bytes, t: float) -> None:
    pass


def _ignore_signal(kind: str, data: str, t: float) -> None:
    pass


@dataclass
class Side:
    """One system under test as the benchmarks see it. Handlers are swapped by each benchmark."""

    name: str
    pty: Pty
    mqtt_topic: str
    send: Callable[[str, str], Awaitable[None]]
    procs: dict[str, Child]
    on_line: LineHandler = _ignore_line
    on_signal: SignalHandler = _ignore_signal
    on_mqtt: LineHandler = _ignore_line
    close: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    #: bridge side: session_id, hub_port, bridge_id, workdir (for benchmarks that need more clients)
    info: dict[str, Any] = field(default_factory=dict)
    #: bridge side: the bridge's ``counters.writes_refused`` (asked with ``bridge.describe``): commands
    #: it received but a device link did not take (bounded queue full). None for the baseline.
    writes_refused: Callable[[], Awaitable[int]] | None = None

    def start(self) -> None:
        self.pty.start_reading(lambda line, t: self.on_line(line, t))

    def reset(self) -> None:
        self.on_line, self.on_signal, self.on_mqtt = _ignore_line, _ignore_signal, _ignore_line


def hub_session_and_tokens(*roles_data: tuple[str, str]) -> tuple[str, list[str]]:
    """A fresh OpenTok-format session id and one client JWT per (role, connection data)."""
    from bridge.core.tokens import mint_client_token, new_session_id

    now = time.time()
    sid = new_session_id(API_KEY, now=now)
    return sid, [mint_client_token(api_key=API_KEY, api_secret=API_SECRET, session_id=sid, role=r, data=d,
                                   now=now) for r, d in roles_data]


def token_for(session_id: str, role: str = "publisher", data: str = "") -> str:
    from bridge.core.tokens import mint_client_token

    return mint_client_token(api_key=API_KEY, api_secret=API_SECRET, session_id=session_id, role=role,
                             data=data, now=time.time())


async def start_hub(workdir: Path, rate_limit: float = 0, heartbeat_s: float | None = None,
                    extra: dict[str, int] | None = None) -> tuple[Child, int]:
    """Start ``python -m bridge hub`` on a free port. ``rate_limit`` 0 lifts the per-connection limit
    (the default 1,000/s would cap every throughput figure); ``heartbeat_s`` None keeps the default;
    ``extra``: more top-level hub.yaml keys (e.g. connection bounds, 0 = none)."""
    port = free_port()
    conf = workdir / "hub.yaml"
    text = f"rate_limit: {{per_second: {rate_limit}, burst: {max(rate_limit * 2, 1)}}}\n"
    if heartbeat_s is not None:
        text += f"heartbeat_s: {heartbeat_s}\n"
    text += "".join(f"{k}: {v}\n" for k, v in (extra or {}).items())
    conf.write_text(text)
    argv = [*_prefix("BENCH_HUB_PREFIX"), "hub", "-c", str(conf), "--listen", f"127.0.0.1:{port}"]
    env = {"SIGBRIDGE_API_KEY": API_KEY, "SIGBRIDGE_API_SECRET": API_SECRET}
    hub = await Child("hub", argv, env=env).start()
    await wait_port(port, 20, hub)
    return hub, port


def _prefix(env_name: str) -> list[str]:
    """``python -m bridge``, or what ``$env_name`` says instead, to run the hub or the bridge under a
    profiler: ``BENCH_BRIDGE_PREFIX="py-spy record -o bridge.svg -- python -m bridge"``. CPU and RSS
    figures are then those of the wrapper process, so use it for profiles only."""
    value = os.environ.get(env_name)
    return shlex.split(value) if value else [PYTHON, "-m", "bridge"]


def bridge_yaml(hub_port: int, session_id: str, token_file: Path, pty_path: str, mqtt_port: int,
                topic: str, client_id: str = "bench-bridge") -> str:
    return f"""\
session: {{url: "ws://127.0.0.1:{hub_port}", session_id: "{session_id}", token_file: "{token_file}"}}
devices:
  base: {{serial: {{port: "{pty_path}", baudrate: 115200}}}}
  arm: {{mqtt: {{host: 127.0.0.1, port: {mqtt_port}, client_id: {client_id}}}}}
rules:
  - signal: robot.move
    params:
      x: {{type: float, min: -1, max: 1}}
      y: {{type: float, min: -1, max: 1}}
      n: {{type: int, min: 0, max: 1000000000}}
    send: {{device: base, line: "M {{x:.2f}} {{y:.2f}} {{n}}"}}
  - signal: arm.grip
    params:
      force: {{type: int, min: 0, max: 100}}
      n: {{type: int, min: 0, max: 1000000000}}
    send: {{device: arm, topic: "{topic}", payload: {{force: "{{force}}", n: "{{n}}"}}, qos: 1}}
telemetry:
  - {{device: base, match: '{TELEMETRY_MATCH}', signal: robot.telemetry}}
"""


class Operator:
    """A SessionClient in the bench process, with one task pumping its events to ``on_event``."""

    def __init__(self, client: Any, pump: asyncio.Task[None]) -> None:
        self.client = client
        self.pump = pump

    @classmethod
    async def join(cls, url: str, session_id: str, token: str,
                   on_event: Callable[[Any, float], None]) -> Operator:
        from bridge.session import SessionClient

        client = SessionClient(url, session_id, token)
        await asyncio.wait_for(client.__aenter__(), scaled(15))

        async def pump() -> None:
            async for event in client.events():
                on_event(event, time.perf_counter())

        return cls(client, asyncio.create_task(pump()))

    async def close(self) -> None:
        self.pump.cancel()
        await asyncio.gather(self.pump, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.__aexit__(None, None, None), scaled(5))


async def wait_for_connection(client: Any, data: str, timeout: float) -> str:
    """The id of the connection whose data is ``data``, once the client sees it (bounded)."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        for cid, conn in client.connections.items():
            if conn.data == data:
                return str(cid)
        await asyncio.sleep(0.002)  # the connection map is updated by the client's own task
    raise TimeoutError(f"no connection with data {data!r} in the session after {timeout}s")


async def wait_for_line(pty: Pty, timeout: float) -> float:
    """perf_counter time of the next complete line at ``pty``'s master (it must not be reading yet)."""
    fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_line(_line: bytes, t: float) -> None:
        if not fut.done():
            fut.set_result(t)

    pty.start_reading(on_line)
    try:
        return await asyncio.wait_for(fut, scaled(timeout))
    finally:
        pty.stop_reading()


async def start_bridge_side(workdir: Path, mqtt_port: int) -> Side:
    """hub + bridge daemon + SessionClient operator; raises when a part is missing or fails."""
    from bridge.core.events import Signal

    hub, hub_port = await start_hub(workdir)
    pty = Pty()
    side_box: list[Side] = []
    bridge: Child | None = None
    try:
        sid, (op_token, br_token) = hub_session_and_tokens(("moderator", "bench-operator"),
                                                            ("publisher", BRIDGE_DATA))
        (workdir / "bridge.token").write_text(br_token)
        topic = "bench/bridge/grip"
        conf = workdir / "bridge.yaml"
        conf.write_text(bridge_yaml(hub_port, sid, workdir / "bridge.token", pty.path, mqtt_port, topic))
        bridge = await Child("bridge", [*_prefix("BENCH_BRIDGE_PREFIX"), "run", "-c", str(conf)]).start()

        status_waiters: list[asyncio.Future[dict[str, Any]]] = []

        def on_event(event: Any, t: float) -> None:
            if not isinstance(event, Signal):
                return
            if event.type == "bridge.status" and status_waiters:
                waiter = status_waiters.pop(0)
                if not waiter.done():
                    waiter.set_result(json.loads(event.data))
            elif side_box:
                side_box[0].on_signal(event.type, event.data, t)

        op = await Operator.join(f"ws://127.0.0.1:{hub_port}", sid, op_token, on_event)
        bridge_id = await wait_for_connection(op.client, BRIDGE_DATA, 20)
        client = op.client

        async def send(kind: str, data: str) -> None:
            await client.signal(type=kind, data=data, to=bridge_id, retry_after_reconnect=True)

        async def writes_refused() -> int:
            waiter = asyncio.get_running_loop().create_future()
            status_waiters.append(waiter)
            await client.signal(type="bridge.describe", data="{}", to=bridge_id)
            status = await asyncio.wait_for(waiter, scaled(10))
            counters = status["counters"]
            # Refused before any write (the link down or its queue full: decisions device_down and
            # overloaded) or by the link at the write (writes_refused): never written, never lost silently.
            decisions = counters.get("decisions", {})
            return int(counters["writes_refused"]) + int(decisions.get("device_down", 0)) \
                + int(decisions.get("overloaded", 0))

        side = Side("bridge", pty, topic, send, {"hub": hub, "bridge": bridge}, writes_refused=writes_refused)
        side.close = [op.close, bridge.stop, hub.stop]
        side.info = {"session_id": sid, "hub_port": hub_port, "bridge_id": bridge_id, "conf": conf,
                     "operator": client}
        side_box.append(side)
        return side
    except BaseException:
        # The bridge child too: left running, it would keep reopening this pty's name after the pty is
        # gone, and read (steal) the lines of whatever later takes the same /dev/pts number.
        if bridge is not None:
            with contextlib.suppress(Exception):
                await bridge.stop()
        pty.close()
        await hub.stop()
        raise


async def start_baseline_side(workdir: Path, mqtt_port: int) -> Side:
    from websockets.asyncio.client import connect

    port = free_port()
    relay = await Child("relay", [PYTHON, "-m", "bench.baseline", "relay", "--port", str(port)]).start()
    await relay.wait_line("READY", 20)
    pty = Pty()
    topic = "bench/base/grip"
    device = await Child("device", [PYTHON, "-m", "bench.baseline", "device", "--url",
                                    f"ws://127.0.0.1:{port}/bench", "--pty", pty.path,
                                    "--mqtt-port", str(mqtt_port), "--topic", topic]).start()
    await device.wait_line("READY", 20)
    ws = await connect(f"ws://127.0.0.1:{port}/bench", compression=None, max_size=1 << 16, max_queue=None)
    side_box: list[Side] = []

    async def pump() -> None:
        async for frame in ws:
            t = time.perf_counter()
            msg = json.loads(frame)
            if side_box:
                side_box[0].on_signal(msg["type"], msg["data"], t)

    task = asyncio.create_task(pump())

    async def send(kind: str, data: str) -> None:
        await ws.send(json.dumps({"op": "signal", "type": kind, "data": data}))

    async def close_ws() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ws.close()

    side = Side("baseline", pty, topic, send, {"relay": relay, "device": device})
    side.info = {"relay_url": f"ws://127.0.0.1:{port}"}
    side.close = [close_ws, device.stop, relay.stop]
    side_box.append(side)
    return side


class MqttProbe:
    """A subscriber in the bench (aiomqtt, TCP_NODELAY) routing each side's topic to its ``on_mqtt``."""

    def __init__(self, port: int, sides: list[Side]) -> None:
        self.port, self.sides = port, sides
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        import aiomqtt

        opts = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="bench-probe", socket_options=opts,
                                  max_queued_incoming_messages=0) as c:
            for s in self.sides:
                await c.subscribe(s.mqtt_topic, qos=1)
            self.ready.set()
            async for msg in c.messages:
                t = time.perf_counter()
                for s in self.sides:
                    if msg.topic.matches(s.mqtt_topic):
                        s.on_mqtt(bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray)
                                  else str(msg.payload).encode(), t)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Rig:
    """Mosquitto + both sides. ``bridge`` is None (with ``bridge_error`` saying why) when the bridge
    cannot be started, so the baseline still runs and the harness can be checked on its own."""

    def __init__(self, want_bridge: bool = True) -> None:
        self.want_bridge = want_bridge
        self.bridge: Side | None = None
        self.bridge_error = ""
        self.baseline: Side | None = None
        self.mosquitto: Mosquitto | None = None
        self.probe: MqttProbe | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="sigbridge-bench-")
        self.workdir = Path(self._tmp.name)

    @property
    def sides(self) -> list[Side]:
        return [s for s in (self.baseline, self.bridge) if s is not None]

    async def __aenter__(self) -> Rig:
        try:
            self.mosquitto = Mosquitto()
            await asyncio.to_thread(self.mosquitto.start)
            self.baseline = await start_baseline_side(self.workdir, self.mosquitto.port)
            if self.want_bridge:
                try:
                    self.bridge = await start_bridge_side(self.workdir, self.mosquitto.port)
                except Exception as e:  # report and carry on with the baseline only
                    self.bridge_error = f"{type(e).__name__}: {e}".strip()[:2000]
            for s in self.sides:
                s.start()
            self.probe = MqttProbe(self.mosquitto.port, self.sides)
            await asyncio.wait_for(self.probe.ready.wait(), scaled(15))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.probe is not None:
            await self.probe.close()
        for s in self.sides:
            for closer in s.close:
                with contextlib.suppress(Exception):
                    await closer()
            s.pty.close()
        if self.mosquitto is not None:
            self.mosquitto.close()
        self._tmp.cleanup()
