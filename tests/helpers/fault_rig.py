"""The rig of tests/test_faults.py and what it checks on every line (see that module's docstring).

``open_rig(tmp_path, mosquitto, ledger)`` starts a ``sigbridge hub`` process behind a ``SilentProxy``, the
rover simulator on a pty (heartbeat ``K`` at 5 Hz), the probe pty (every command line carries its
sender's sequence number: ``C <seq> <x>``) and a ``sigbridge run`` process with ``CONFIG``; it yields a
``Rig`` once the bridge has joined and all its devices are up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.client import SessionClient
from bridge.core.events import Signal
from bridge.core.tokens import mint_client_token
from firmware_stubs.rover_sim import TICK_S, WATCHDOG_MS, RoverProtocol, RoverSim
from tests.helpers.faults import BridgeProc, HubProc, Ledger, Probe, SilentProxy, WakeLateness, scaled
from tests.helpers.hub import test_credentials
from tests.helpers.mosquitto import Mosquitto, free_port
from tests.helpers.pty import PtyPair

SESSION = "faults"
MAX_AGE_MS = 1000
WATCHDOG_TIMEOUT_MS = 300
#: The watchdog line must be written within timeout_ms + this of the command's line.
WATCHDOG_SLACK_S = 0.1
#: A cut link is an RST: the bridge's read fails at once; 1 s covers a loaded 2-core machine.
CUT_BOUND_S = 1.0
#: The bridge's session.keepalive_ms / link_timeout_ms in CONFIG below (defaults 2000 / 6000).
PING_INTERVAL_S = 0.5
LINK_TIMEOUT_S = 1.5
#: A silent link is noticed by the keepalive: no frame for link_timeout_s, checked every tick.
BLACKHOLE_BOUND_S = LINK_TIMEOUT_S + min(PING_INTERVAL_S, LINK_TIMEOUT_S / 4) + 0.5
#: The rover stops at its first simulation tick after WATCHDOG_MS of silence.
ROVER_BOUND_S = WATCHDOG_MS / 1000 + TICK_S + 0.1

CONFIG = """\
session: {{url: "ws://127.0.0.1:{proxy}", session_id: {session}, token: "{token}", keepalive_ms: 500,
          link_timeout_ms: 1500}}
devices:
  probe: {{serial: {{port: "{probe}", reopen_min_s: 0.05, reopen_max_s: 0.2}}}}
  rover: {{serial: {{port: "{rover}", reopen_min_s: 0.05, reopen_max_s: 0.2}}, heartbeat: {{hz: 5, line: K}}}}
  arm: {{mqtt: {{host: 127.0.0.1, port: {mqtt}, client_id: faults-arm, reconnect_min_s: 0.05,
               reconnect_max_s: 0.2}}}}
rules:
  - signal: go
    params: {{seq: {{type: int, min: 0, max: 1000000000}}, x: {{type: float, min: -1, max: 1}}}}
    max_age_ms: {max_age}
    ack: true
    send: [{{device: probe, line: "C {{seq}} {{x:.2f}}"}}, {{device: rover, line: "M {{x:.2f}} 0"}}]
    watchdog: {{timeout_ms: {watchdog}, send: [{{device: probe, line: W}}, {{device: rover, line: S}}]}}
  - signal: grip
    params: {{seq: {{type: int, min: 0, max: 1000000000}}, force: {{type: int, min: 0, max: 100}}}}
    max_age_ms: {max_age}
    ack: true
    send: {{device: arm, topic: arm/grip/set, payload: {{seq: "{{seq}}", force: "{{force}}"}}, qos: 1}}
  - signal: say
    params: {{text: {{type: string, pattern: '[a-z ]{{1,20}}'}}}}
    ack: true
    send: {{device: probe, line: "SAY {{text}}"}}
  - signal: "cam.*"
    ack: true
    send: {{device: probe, line: CAM}}
safety:
  on_disconnect: [{{device: probe, line: D}}, {{device: rover, line: S}}]
  on_shutdown: [{{device: probe, line: BYE}}, {{device: rover, line: S}}]
  estop: {{signal: estop, reset: estop_reset, send: [{{device: probe, line: E}}, {{device: rover, line: S}}]}}
audit: {{path: "{audit}"}}
"""



class WatchedRover(RoverProtocol):
    """The rover's own protocol, noting when its silence watchdog stops the motors."""

    def __init__(self) -> None:
        super().__init__()
        self.stops: list[tuple[float, float]] = []   # (stop time, last valid command), monotonic ms
        self.stopped = asyncio.Event()

    def tick(self, now_ms: float) -> bool:
        last = self.last_command_ms
        stopped = super().tick(now_ms)
        if stopped:
            self.stops.append((now_ms, last))
            self.stopped.set()
        return stopped


class Operator:
    """A SessionClient straight to the hub; the bridge's acks land in ``acks`` (id -> status)."""

    def __init__(self, client: SessionClient) -> None:
        self.client = client
        self.acks: dict[Any, str] = {}
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.client.events():
            if isinstance(event, Signal) and event.type == "bridge.ack":
                ack = json.loads(event.data)
                self.acks[ack["id"]] = ack["status"]
                self._changed.set()

    async def wait_acks(self, ids: list[int], timeout: float = 20.0) -> dict[int, str]:
        try:
            async with asyncio.timeout(scaled(timeout)):
                while any(i not in self.acks for i in ids):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            missing = [i for i in ids if i not in self.acks]
            raise AssertionError(f"no bridge.ack for {missing[:10]} ({len(missing)} missing); "
                                 f"client stats {self.client.stats}") from None
        return {i: self.acks[i] for i in ids}

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), scaled(5))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class Book:
    """Every command sent, by sequence number, with its wall-clock send time (taken before sending:
    never later than the hub's timestamp). ``refused``: seqs the bridge refused (must never be written);
    ``lost``: seqs sent while the path was broken that must never be written either."""

    next_seq: int = 0
    sent: dict[int, float] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)

    async def go(self, op: Operator, x: float = 0.5, retry: bool = True) -> int:
        self.next_seq += 1
        seq = self.next_seq
        self.sent[seq] = time.time()
        await op.client.signal("go", json.dumps({"seq": seq, "x": x, "id": seq}),
                               retry_after_reconnect=retry)
        return seq

    async def grip(self, op: Operator, force: int) -> int:
        self.next_seq += 1
        seq = self.next_seq
        self.sent[seq] = time.time()
        await op.client.signal("grip", json.dumps({"seq": seq, "force": force, "id": seq}))
        return seq


@dataclass
class Rig:
    tmp: Path
    hub: HubProc
    key: str
    secret: str
    proxy: SilentProxy
    broker: Mosquitto
    probe: Probe
    rover: RoverSim
    watched: WatchedRover
    bridge: BridgeProc
    ledger: Ledger
    book: Book = field(default_factory=Book)
    ops: list[Operator] = field(default_factory=list)

    def token(self, role: str = "publisher") -> str:
        return mint_client_token(api_key=self.key, api_secret=self.secret, session_id=SESSION, role=role,
                                 data="", ttl_s=3600, now=time.time())

    async def operator(self, role: str = "publisher") -> Operator:
        # Every operator also receives the others' broadcasts (thousands in a flood): a deep event queue,
        # so that the bridge's acks are never among the oldest events dropped when it is full.
        client = SessionClient(f"ws://127.0.0.1:{self.hub.port}", SESSION, self.token(role),
                               event_queue_size=100_000)
        await client.connect()
        op = Operator(client)
        self.ops.append(op)
        return op

    async def drop_operators(self) -> None:
        for op in self.ops:
            await op.close()
        self.ops.clear()

    async def bridge_up(self, mark: int = 0) -> None:
        await self.bridge.wait_for(r"device probe: up", after=mark)
        await self.bridge.wait_for(r"device rover: up", after=mark)
        await self.bridge.wait_for(r"device arm: up", after=mark)
        await self.bridge.wait_for(r"connected as", after=mark)

    async def command_flows(self, op: Operator) -> float:
        """Send a fresh command and wait for its line; returns the wall time it was read."""
        start = len(self.probe.lines)
        seq = await self.book.go(op, 0.25)
        line = await self.probe.wait_text(f"C {seq} 0.25", start, timeout=20)
        return line.t

    async def watchdog_in_time(self, op: Operator) -> None:
        """One command, then silence: the watchdog line comes not before timeout_ms after the command
        was sent and within timeout_ms + 100 ms of the command's line."""
        start = len(self.probe.lines)
        seq = await self.book.go(op, 0.3)
        sent = self.book.sent[seq]
        i = await self.probe.wait(lambda s: s == f"C {seq} 0.30", start)
        machine = WakeLateness(WATCHDOG_TIMEOUT_MS / 1000)
        w = await self.probe.wait(lambda s: s == "W", i + 1, timeout=5)
        late = await machine.result()
        assert all(not s.text.startswith("C ") for s in self.probe.lines[i + 1: w])
        stop, cmd = self.probe.lines[w].t, self.probe.lines[i].t
        assert stop - sent >= WATCHDOG_TIMEOUT_MS / 1000, (sent, stop)
        # timeout_ms + 100 ms, plus however late the machine itself woke a sleeping thread meanwhile.
        assert stop - cmd <= WATCHDOG_TIMEOUT_MS / 1000 + WATCHDOG_SLACK_S + late, (cmd, stop, late)
        self.ledger.delay("watchdog (after the command line)", stop - cmd)
        self.ledger.machine_lateness = max(self.ledger.machine_lateness, late)

    def check_stream(self) -> None:
        """The invariants over every probe line so far (see the module docstring)."""
        seen: set[int] = set()
        for line in self.probe.lines:
            if not line.text.startswith("C "):
                continue
            seq = int(line.text.split()[1])
            assert seq in self.book.sent, line
            assert seq not in seen, f"written twice: {line}"
            assert seq not in self.book.refused, f"refused ({self.book.refused[seq]}) but written: {line}"
            assert seq not in self.book.lost, f"sent into a broken path yet written: {line}"
            seen.add(seq)
            age_ms = (line.t - self.book.sent[seq]) * 1000
            assert age_ms <= MAX_AGE_MS, f"{line.text} written {age_ms:.0f} ms after it was sent"
            self.ledger.worst_age_ms = max(self.ledger.worst_age_ms, age_ms)
        self.ledger.commands_written += len(seen)
        assert not any(r.startswith("ERR") for r in self.rover.replies), \
            f"malformed line reached the rover: {[r for r in self.rover.replies if r.startswith('ERR')]}"

    async def finish(self) -> None:
        """Invariants, then SIGTERM: on_shutdown line, exit 0; no traceback from the hub or the bridge."""
        assert self.bridge.alive, self.bridge.log_tail()
        assert "Traceback" not in self.hub.log_path.read_text(errors="replace"), self.hub.log_path
        start = len(self.probe.lines)
        assert await self.bridge.stop() == 0, self.bridge.log_tail()
        await self.probe.wait_text("BYE", start)
        self.check_stream()      # BYE is the last line written: every line before it has been read
        assert not [ln for ln in self.bridge.stderr if "Traceback" in ln], self.bridge.log_tail()


@contextlib.asynccontextmanager
async def open_rig(tmp_path: Path, mosquitto: Mosquitto, ledger: Ledger) -> AsyncIterator[Rig]:
    """Hub process, proxy, rover sim, probe pty and a bridge process that has joined; all torn down after."""
    key, secret = test_credentials()
    hub_yaml = tmp_path / "hub.yaml"
    # No hub rate limit: the floods are paced end to end by the bridge's acks instead.
    hub_yaml.write_text("reconnect_grace_s: 60\nrate_limit: {per_second: 0}\n")
    hub = HubProc(free_port(), key, secret, hub_yaml, tmp_path / "hub.log")
    await hub.start()
    watched = WatchedRover()
    rover = RoverSim(telemetry=False)
    rover.protocol = watched
    probe: Probe | None = None
    rig: Rig | None = None
    try:
        async with SilentProxy("127.0.0.1", hub.port) as proxy:
            rover_path = await rover.start()
            probe = Probe(PtyPair(tmp_path / "probe"))
            config = tmp_path / "bridge.yaml"
            bridge = BridgeProc(config)
            assert isinstance(proxy, SilentProxy)
            rig = Rig(tmp_path, hub, key, secret, proxy, mosquitto, probe, rover, watched, bridge, ledger)
            config.write_text(CONFIG.format(
                proxy=proxy.port, session=SESSION, token=rig.token(), probe=probe.pair.path,
                rover=rover_path, mqtt=mosquitto.port, max_age=MAX_AGE_MS, watchdog=WATCHDOG_TIMEOUT_MS,
                audit=tmp_path / "audit.jsonl"))
            await bridge.start()
            await rig.bridge_up()
            yield rig
    finally:
        if rig is not None:
            await rig.drop_operators()
            if rig.bridge.alive:
                await rig.bridge.stop()
        if probe is not None:
            probe.close()
        await rover.close()
        await hub.stop()
