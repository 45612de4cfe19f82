"""The sans-I/O bridge engine: session and device events in, device commands and signals out.

Contract
--------
``Engine(config)`` compiles everything once (rules, templates, regexes, constant safe actions; raises
``TemplateError`` on a template that cannot compile). Then the daemon feeds it events, each through one
method that returns the commands to carry out, *in order*. Data flows one way: each event carries
what the engine needs, and the engine never asks the client or a link for anything.

- ``signal(sig, now)``: a received Signal. Its age is ``sig.age_ms`` (the client's estimate at
  receipt, ``bridge.core.engine.age``); its sender is looked up in the engine's member table;
- ``connection_created(conn, now)`` / ``connection_destroyed(conn, now)``: the member table
  (``bridge.core.engine.members``: a sender the engine was never told of is the engine's decision);
- ``link_up(own_connection_id, now)``; ``link_down(now)``; ``session_left()`` (the bridge's connection
  is gone for good, and its member table with it);
- ``device_line(device, line, now)``; ``device_bytes(device, data, now)`` (``framing: binary``);
  ``mqtt_message(device, topic, payload, now)``;
- ``device_event(event, now)``: what a device link reports (``bridge.core.engine.outcomes``): up or
  down (announced in bridge.status; a device back gets the safe actions it missed first, see
  docs/safety.md "A device that comes back"), a write it refused, writes it dropped past their deadline;
- ``tick(now)``: call it at ``next_deadline()`` (watchdogs, throttled telemetry, expect timeouts,
  coalesced status broadcasts);
- ``shutdown()``: the on_shutdown actions (each device's queue purged first); the engine is closed
  after it: every later event returns nothing;
- ``hand_over(now)`` -> ``take_over(handover, now)``: a config reload (``bridge.core.engine.handover``).

``now`` is monotonic seconds. Commands are ``WriteLine`` (the link adds the device's newline),
``WriteFrame`` (a whole binary frame), ``Publish`` (never retained), ``SendSignal`` (retry disabled
unless said otherwise), ``Purge``, ``Audit`` and ``Notice`` (for the operator's log: e-stop latched or
reset, telemetry dropped while the link is down). What the engine counts is read through
``status()`` only (``bridge.core.engine.counters``).

The per-command path is ``bridge.core.engine.commandpath``. ``bridge.status`` (see
``bridge.core.engine.status``) is broadcast on connect and on every change of state, coalesced to one
per ``status.MIN_INTERVAL_S``; ``bridge.describe`` is answered, targeted, with ``bridge.capabilities``
and ``bridge.status``, at most once per sender per ``describe.INTERVAL_S`` (more requests meanwhile:
one answer at the end of the interval; see ``bridge.core.engine.describe``).
"""

from __future__ import annotations

import json
import math
from types import MappingProxyType

from bridge.core.engine.actions import (
    ACK,
    Audit,
    Command,
    CompiledRule,
    Notice,
    NoticeKind,
    Publish,
    Purge,
    SendSignal,
    WriteFrame,
    WriteLine,
)
from bridge.core.engine.capabilities import capabilities
from bridge.core.engine.commandpath import CommandPath, DeviceGate
from bridge.core.engine.counters import Counters, EngineStatus
from bridge.core.engine.decisions import AuditRecord, Decision
from bridge.core.engine.describe import DescribeLimiter
from bridge.core.engine.devices import DeviceBook
from bridge.core.engine.estop import EstopSignals, SafeActions
from bridge.core.engine.expects import ExpectTable
from bridge.core.engine.handover import HandOver
from bridge.core.engine.lease import ControlLease, LeaseOutcome, lease_answer, lease_roles
from bridge.core.engine.members import stand_in
from bridge.core.engine.outcomes import DeviceEvent, DeviceState, WriteRefused, WritesExpired
from bridge.core.engine.ping import PING, PingResponder
from bridge.core.engine.rules import RuleTable
from bridge.core.engine.safety import SafetyState
from bridge.core.engine.session import SessionView
from bridge.core.engine.status import StatusAnnouncer, status_data
from bridge.core.engine.telemetry import Outgoing, TelemetryShaper
from bridge.core.events import Signal
from bridge.core.model import BridgeConfig
from bridge.core.signal import Connection

__all__ = ["ACK", "CAPABILITIES", "DESCRIBE", "STATUS", "Audit", "Command", "DeviceGate", "Engine",
           "Notice", "NoticeKind", "Publish", "Purge", "SendSignal", "WriteFrame", "WriteLine"]

DESCRIBE = "bridge.describe"
CAPABILITIES = "bridge.capabilities"
STATUS = "bridge.status"


class Engine:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        newlines = {name: d.serial.newline for name, d in config.devices.items() if d.serial is not None}
        self._rules = {r.index: CompiledRule(r, newlines) for r in config.rules}
        self._table = RuleTable(config.rules)
        self._telemetry = TelemetryShaper(config.telemetry)
        self._safety = SafetyState(config.safety)
        self._safe = safe = SafeActions.compile(config, newlines)
        self._devices = DeviceBook(config.devices, safe.owed_when_missed())
        self._counts = Counters()
        self._estops = EstopSignals(config, self._safety, safe, tuple(config.devices), self._counts)
        self._closed = False
        self._lease = (ControlLease(lease_roles(config), config.control.idle_timeout_ms / 1000)
                       if config.control.lease else None)
        self._expects = ExpectTable()
        self._path = CommandPath(self._safety, self._lease, self._expects, config.audit is not None)
        self._announcer = StatusAnnouncer()
        self._describes = DescribeLimiter()
        self._pings = PingResponder()
        self._session = SessionView()
        self._audit = config.audit is not None
        self.capabilities = json.dumps(capabilities(config), separators=(",", ":"))

    # ------------------------------------------------------------ session events

    def signal(self, sig: Signal, now: float) -> list[Command]:
        from_id = sig.from_id
        session = self._session
        if self._closed or (from_id is not None and from_id == session.own_id):
            return []   # shut down; or our own broadcasts (capabilities, telemetry) come back to us
        counts = self._counts
        counts.signals += 1
        session.hub_offset_ms = sig.ts + sig.age_ms - now * 1000.0
        sender: Connection | None = None
        if from_id is not None:
            sender = session.members.get(from_id)
            if sender is None:
                counts.unknown_senders += 1
                sender = stand_in(from_id)
        type_ = sig.type
        if type_ == self._estops.signal:
            self._reset_slews(now)
            return self._estops.latch(sig, sender, lambda: self._announce(now))
        if type_ == self._estops.reset_signal:
            return self._estops.reset(sig, sender, lambda: self._announce(now))
        if type_ == DESCRIBE:
            if from_id is None or not self._describes.request(from_id, now):
                return []
            return self._describe(from_id)
        if type_ == PING:
            pong: list[Command] = [*self._pings.answer(sig, now)]
            if pong:
                counts.pings_answered += 1
            else:
                counts.pings_refused += 1
            return pong
        lease = self._lease
        if lease is not None and type_ in (self.config.control.acquire, self.config.control.release):
            return self._control(lease, sig, sender, now)
        rule = self._table.match(type_)
        if rule is None:
            counts.unmatched += 1
            return []
        return self._path.run(self._rules[rule.index], sig, sender, now)

    def connection_created(self, conn: Connection, now: float) -> list[Command]:
        """A member joined (or was there when the bridge joined): remembered as the sender of its signals."""
        if not self._closed and conn.id != self._session.own_id:
            self._session.members.created(conn)
        return []

    def connection_destroyed(self, conn: Connection, now: float) -> list[Command]:
        self._session.members.destroyed(conn.id)
        self._describes.forget(conn.id)
        for compiled in self._rules.values():
            if compiled.rate is not None:
                compiled.rate.forget(conn.id)
        self._pings.forget(conn.id)
        if self._lease is None:
            return []
        return self._lease_lost(self._lease.connection_destroyed(conn.id), now)

    def link_up(self, own_connection_id: str, now: float) -> list[Command]:
        """The session link is (back) up under ``own_connection_id``: announce what we do and how we are."""
        dropped = self._session.up(own_connection_id)     # linked from now on: the status says so
        self._announcer.sent(now)
        return [SendSignal(CAPABILITIES, self.capabilities), SendSignal(STATUS, self._status_data()),
                *dropped]

    def link_down(self, now: float) -> list[Command]:
        """The session link is lost or reconnecting: the safe actions, before anything else."""
        self._session.down()
        self._announcer.cancel()
        self._reset_slews(now)
        return list(self._safe.on_disconnect)

    def session_left(self) -> None:
        """The bridge's connection is gone for good (a new one lists the members again): forget them."""
        self._session.members.clear()

    def shutdown(self) -> list[Command]:
        """The on_shutdown actions, after purging every device's queue; the engine is closed from now on."""
        self._closed = True
        return [*(Purge(d) for d in self._devices.names), *self._safe.on_shutdown]

    # ------------------------------------------------------------ device events

    def device_line(self, device: str, line: str, now: float) -> list[Command]:
        matched = self._expects.match(device, line)
        if matched is not None:
            self._counts.expect_matched += 1
            reply = matched[0].answer(matched[1])
            return [reply] if reply is not None and self._session.linked else []
        return self._telemetry_out(self._telemetry.serial_line(device, line, now))

    def device_bytes(self, device: str, data: bytes, now: float) -> list[Command]:
        """Bytes from a ``framing: binary`` serial device: its telemetry frames (engine.frames)."""
        shaper = self._telemetry
        before = shaper.frames_bad_checksum
        out = self._telemetry_out(shaper.serial_bytes(device, data, now))
        self._counts.frames_bad_checksum += shaper.frames_bad_checksum - before
        return out

    def mqtt_message(self, device: str, topic: str, payload: bytes, now: float) -> list[Command]:
        return self._telemetry_out(self._telemetry.mqtt_message(device, topic, payload, now))

    def device_event(self, event: DeviceEvent, now: float) -> list[Command]:
        """What a device link reports (``bridge.core.engine.outcomes``)."""
        if isinstance(event, WriteRefused):
            return self._refused(event.command)
        if isinstance(event, WritesExpired):
            return self._expired(event.device, event.dropped, now)
        return self._device_state(event, now)

    def _device_state(self, event: DeviceState, now: float) -> list[Command]:
        device = event.device
        if self._closed or not self._devices.changed(device, event.up):
            return []
        if not event.up:
            return self._announce(now)
        # Back: made safe before anything else can reach it (the daemon writes these in the link's
        # up callback, before any other event is handled): the e-stop actions while latched, then the
        # safe actions it missed while down.
        return [*self._devices.back(device, self._estops.for_device_back(device)), *self._announce(now)]

    def _refused(self, cmd: Command) -> list[Command]:
        """A link refused ``cmd`` (down, sealed or full). A safe action is owed to its device until that
        device comes back up; anything else is forgotten (and counted: ``writes_refused``)."""
        self._counts.writes_refused += 1
        if not self._closed:
            self._devices.refused(cmd)
        return []

    def _expired(self, device: str, dropped: tuple[str, ...], now: float) -> list[Command]:
        """Counted (``writes_expired``) and audited, at the hub time estimated from the last signal."""
        self._counts.writes_expired += len(dropped)
        if not self._audit or not dropped:
            return []
        more = f" (+{len(dropped) - 3} more)" if len(dropped) > 3 else ""
        reason = (f"device {device}: past max_age_ms in its link's queue, dropped: "
                  f"{'; '.join(dropped[:3])}{more}")
        at = self._session.hub_ms(now) / 1000.0
        return [Audit(AuditRecord(at, None, None, "", Decision.STALE, reason))]

    # ------------------------------------------------------------ time

    def tick(self, now: float) -> list[Command]:
        out: list[Command] = []
        if self._closed:
            return out
        counts = self._counts
        for index in self._safety.expired(now):
            counts.watchdog_fired += 1
            out.extend(self._safe.watchdog[index])
        if out:
            self._reset_slews(now)
        counts.expect_timeouts += self._expects.expire(now)
        out.extend(self._telemetry_out(self._telemetry.due(now)))
        expired = self._lease.expire(now) if self._lease is not None else None
        if expired is not None:
            out.extend(self._lease_lost(expired, now))
        if self._announcer.due(now) and self._session.linked:
            out.append(SendSignal(STATUS, self._status_data()))
        for sender in self._describes.due(now):
            if self._session.linked:
                out += self._describe(sender)
        return out

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called (monotonic seconds), or None when nothing is pending."""
        # Called after every command (the daemon re-arms its timer): no list, no generator.
        best = self._safety.next_deadline()
        for c in (self._telemetry.next_deadline(), self._expects.next_deadline(),
                  self._announcer.next_deadline(), self._lease.deadline if self._lease else None,
                  self._describes.next_deadline()):
            if c is not None and (best is None or c < best):
                best = c
        return best

    # ------------------------------------------------------------ reload

    def hand_over(self) -> HandOver:
        """A config reload: what the next engine inherits (``bridge.core.engine.handover``). Every
        pending watchdog fires now (its safe action rides in ``fired``), so nothing keeps moving under
        rules that may be gone. This engine is closed from now on."""
        fired: list[Command] = []
        for index in self._safety.expired(math.inf):
            self._counts.watchdog_fired += 1
            fired.extend(self._safe.watchdog[index])
        self._closed = True
        return HandOver(
            estopped=self._safety.latched, lease_holder=self.lease_holder, own_id=self._session.own_id,
            linked=self._session.linked, members=self._session.members.snapshot(),
            devices=self._devices.states(), owed=self._devices.owed(),
            fired=tuple(fired), counters=self._counts.copy(),
            decisions=MappingProxyType(dict(self._path.decisions)),
            hub_offset_ms=self._session.hub_offset_ms,
            dropped_in_outage=self._session.dropped_in_outage)

    def take_over(self, old: HandOver, now: float) -> list[Command]:
        """This (new) engine inherits ``old`` and returns what to carry out: the fired watchdogs' safe
        actions, then (when linked) the new capabilities and the status."""
        out: list[Command] = list(old.fired)
        if old.estopped:
            self._safety.estop()
        if self._lease is not None and old.lease_holder is not None:
            self._lease.inherit(old.lease_holder, now)
        self._session.inherit(old)
        self._devices.inherit(old.devices, old.owed)
        self._counts.add(old.counters)
        self._path.decisions.update(old.decisions)
        self._reset_slews(now)
        if self._session.linked:
            self._announcer.sent(now)
            out += [SendSignal(CAPABILITIES, self.capabilities), SendSignal(STATUS, self._status_data())]
        return out

    # ------------------------------------------------------------ reading the state

    @property
    def gate(self) -> DeviceGate | None:
        """Whether a device link would take a write now (the daemon's links); None admits everything."""
        return self._path.gate

    @gate.setter
    def gate(self, gate: DeviceGate | None) -> None:
        self._path.gate = gate

    def status(self) -> EngineStatus:
        """The state and every count now, as a frozen copy (the only way to read the counters)."""
        decisions = self._path.decisions
        return EngineStatus(
            estopped=self._safety.latched, lease_holder=self.lease_holder, linked=self._session.linked,
            devices=self._devices.states(), counters=self._counts.copy(),
            decisions=MappingProxyType({d: decisions[d] for d in Decision}))

    @property
    def lease_holder(self) -> str | None:
        """The connection id holding the control lease (None: free, or no lease)."""
        return self._lease.holder if self._lease is not None else None

    @property
    def estopped(self) -> bool:
        return self._safety.latched

    @property
    def linked(self) -> bool:
        """The session link is up (the daemon sends the engine's signals only then)."""
        return self._session.linked

    @property
    def closed(self) -> bool:
        """Shut down or handed over: every later event returns nothing."""
        return self._closed

    @property
    def unmatched(self) -> int:
        return self._table.unmatched

    # ------------------------------------------------------------ lease

    def _control(self, lease: ControlLease, sig: Signal, sender: Connection | None,
                 now: float) -> list[Command]:
        if sig.type == self.config.control.acquire:
            outcome = lease.acquire(sig.from_id, sender.role if sender is not None else None, now)
        else:
            outcome = lease.release(sig.from_id)
        out: list[Command] = [] if sig.from_id is None else [lease_answer(outcome, sig, sig.from_id)]
        if outcome.controller_lost:
            return [*out, *self._lease_lost(outcome, now)]
        if outcome.changed:
            out.extend(self._announce(now))
        return out

    def _lease_lost(self, outcome: LeaseOutcome, now: float) -> list[Command]:
        """The lease holder lost it (destroyed, idle, taken over): the safe actions, then the news."""
        if not outcome.controller_lost:
            return []
        self._counts.lease_lost(outcome.kind)
        self._reset_slews(now)
        return [*self._safe.on_controller_lost, *self._announce(now)]

    # ------------------------------------------------------------ helpers

    def _telemetry_out(self, items: list[Outgoing]) -> list[Command]:
        return self._session.telemetry(items, self._counts)

    def _reset_slews(self, now: float) -> None:
        """After a safe action the hardware is stopped: slew again from zero (when in range)."""
        for compiled in self._rules.values():
            compiled.reset_slews(now)

    def _describe(self, to: str) -> list[Command]:
        return [SendSignal(CAPABILITIES, self.capabilities, to, optional=True),
                SendSignal(STATUS, self._status_data(), to, optional=True)]

    def _status_data(self) -> str:
        return status_data(self.status())

    def _announce(self, now: float) -> list[Command]:
        """The state changed: a status broadcast now, or later (coalesced, see ``tick``), or none while
        the link is down (the next connect sends a fresh one)."""
        if self._session.linked and self._announcer.changed(now):
            return [SendSignal(STATUS, self._status_data())]
        return []

