"""The sans-I/O bridge engine: session and device events in, device commands and signals out.

Contract
--------
``Engine(config)`` compiles everything once (rules, templates, regexes, constant safe actions; raises
``TemplateError`` on a template that cannot compile). Then the daemon feeds it events, each through one
method that returns the commands to carry out, *in order*:

- ``signal(sig, sender, now, hub_now_ms)``: a received Signal; ``sender`` is the sender's Connection,
  or None for a REST signal (``from`` null) or an unknown sender;
- ``connection_destroyed(conn, now)``; ``link_up(own_connection_id, now)``; ``link_down(now)``;
- ``device_line(device, line, now)``; ``device_bytes(device, data, now)`` (``framing: binary``);
  ``mqtt_message(device, topic, payload, now)``;
- ``device_state(device, up, now)``: a device link came up or went down (announced in bridge.status);
- ``tick(now)``: call it at ``next_deadline()`` (watchdogs, throttled telemetry, expect timeouts,
  coalesced status broadcasts);
- ``shutdown()``: the on_shutdown actions (each device's queue purged first); the engine is closed
  after it: every later event returns nothing;
- ``undelivered(cmd)``: a device link refused ``cmd``; a safe action refused that way (the device
  down) is owed to the device and written first when it comes back (``device_state``, see
  docs/safety.md "A device that comes back");
- ``expired(device, dropped, hub_now_ms)``: a device link dropped writes whose deadline passed in its
  queue (every write of a rule with ``max_age_ms`` carries one; safe actions never do);
- ``take_over(old, now)``: on a config reload, the new engine inherits the old one's state.

``now`` is monotonic seconds; ``hub_now_ms`` is the hub's current time in ms (the local MONOTONIC
clock plus the measured offset, ``bridge.core.clock``: a wall-clock step on the bridge host moves
neither), used only by the stale guard and audit times. Commands are ``WriteLine`` (the link adds the
device's newline), ``WriteFrame`` (a whole binary frame), ``Publish`` (never retained) and
``SendSignal`` (retry disabled unless said otherwise).

The per-command path (``_command``) is a fixed sequence of small steps, each of which may refuse:
estop latch -> authorise -> stale -> lease -> rate -> params -> slew -> templates -> devices ->
commit. ``devices`` asks ``gate`` (set by the daemon from its links; None admits everything) whether
each write would be taken now: a device down or a full queue refuses the whole command
(``device_down`` / ``overloaded``), so ``applied`` always means handed to a link that is up. A
refusal writes nothing and changes no state (the slew reference and the watchdog move only at the
commit). Rules with ``ack: true`` answer the sender with a targeted ``bridge.ack``.

``bridge.status`` (see ``bridge.core.engine.status``) is broadcast on connect and on every change of state,
coalesced to one per ``status.MIN_INTERVAL_S``; ``bridge.describe`` is answered, targeted, with
``bridge.capabilities`` and ``bridge.status``, at most once per sender per ``describe.INTERVAL_S``
(more requests meanwhile: one answer at the end of the interval; see ``bridge.core.engine.describe``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.core.engine.actions import (
    ACK,
    Audit,
    Command,
    CompiledRule,
    Publish,
    Purge,
    SendSignal,
    WriteFrame,
    WriteLine,
    ack_signal,
    constant_commands,
    written,
)
from bridge.core.engine.capabilities import capabilities
from bridge.core.engine.decisions import AuditRecord, Decision, Verdict
from bridge.core.engine.describe import DescribeLimiter
from bridge.core.engine.expects import ExpectTable
from bridge.core.engine.lease import ControlLease, LeaseOutcome, OutcomeKind, lease_roles
from bridge.core.engine.params import Checked, decode_data
from bridge.core.engine.ping import PING, PingResponder
from bridge.core.engine.rules import RuleTable
from bridge.core.engine.safety import SafetyState, is_stale, write_deadline
from bridge.core.engine.slew import Slewed
from bridge.core.engine.status import StatusAnnouncer, status_data
from bridge.core.engine.telemetry import Outgoing, TelemetryShaper
from bridge.core.engine.templates import FillError
from bridge.core.events import Signal
from bridge.core.model import BridgeConfig, ParamSpec, Rule
from bridge.core.signal import Connection

__all__ = ["ACK", "CAPABILITIES", "DESCRIBE", "STATUS", "Audit", "Command", "DeviceGate", "Engine",
           "Publish", "Purge", "SendSignal", "WriteFrame", "WriteLine"]

#: Whether a device link would take a write now: None, or the refusal (``device_down``/``overloaded``).
DeviceGate = Callable[[WriteLine | WriteFrame | Publish], Verdict | None]

DESCRIBE = "bridge.describe"
CAPABILITIES = "bridge.capabilities"
STATUS = "bridge.status"


# ---------------------------------------------------------------- the engine


class Engine:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        newlines = {name: d.serial.newline for name, d in config.devices.items() if d.serial is not None}
        self._rules = {r.index: CompiledRule(r, newlines) for r in config.rules}
        self._table = RuleTable(config.rules)
        self._telemetry = TelemetryShaper(config.telemetry)
        self._safety = SafetyState(config.safety)
        estop = config.safety.estop
        self._estop_type = estop.signal if estop is not None else None
        self._reset_type = estop.reset if estop is not None else None
        self._estop_cmds = constant_commands(estop.send, newlines) if estop is not None else ()
        self._on_disconnect = constant_commands(config.safety.on_disconnect, newlines)
        self._on_controller_lost = constant_commands(config.safety.on_controller_lost, newlines)
        self._on_shutdown = constant_commands(config.safety.on_shutdown, newlines)
        self._watchdog_cmds = {r.index: constant_commands(r.watchdog.send, newlines)
                               for r in config.rules if r.watchdog is not None}
        #: Safe actions a device did not get (its link was down), by device: written when it is back.
        self._owed: dict[str, list[Command]] = {}
        self._safe_cmds = frozenset((*self._estop_cmds, *self._on_disconnect, *self._on_controller_lost,
                                     *(c for cmds in self._watchdog_cmds.values() for c in cmds)))
        self.gate: DeviceGate | None = None
        self.closed = False
        self._lease = (ControlLease(lease_roles(config), config.control.idle_timeout_ms / 1000)
                       if config.control.lease else None)
        self._expects = ExpectTable()
        self._announcer = StatusAnnouncer()
        self._describes = DescribeLimiter()
        self._pings = PingResponder()
        #: device name -> link up; every device starts down until its link reports up.
        self.devices: dict[str, bool] = dict.fromkeys(config.devices, False)
        self._own_id: str | None = None
        self._audit = config.audit is not None
        # The signal being handled (for audit records): set at the top of signal().
        self._sender: Connection | None = None
        self._hub_ms = 0
        self.linked = False
        self.decisions: Counter[Decision] = Counter()
        self.counters: Counter[str] = Counter()
        self.capabilities = json.dumps(capabilities(config), separators=(",", ":"))

    # ------------------------------------------------------------ session events

    def signal(self, sig: Signal, sender: Connection | None, now: float,
               hub_now_ms: int) -> list[Command]:
        if self.closed or (sig.from_id is not None and sig.from_id == self._own_id):
            return []   # shut down; or our own broadcasts (capabilities, telemetry) come back to us
        self.counters["signals"] += 1
        self._sender, self._hub_ms = sender, hub_now_ms
        type_ = sig.type
        if type_ == self._estop_type:
            return self._estop(sig, now)
        if type_ == self._reset_type:
            return self._reset(sig, sender, now)
        if type_ == DESCRIBE:
            if sig.from_id is None or not self._describes.request(sig.from_id, now):
                return []
            return self._describe(sig.from_id)
        if type_ == PING:
            pong: list[Command] = [*self._pings.answer(sig, now, hub_now_ms)]
            self.counters["pings_answered" if pong else "pings_refused"] += 1
            return pong
        lease = self._lease
        if lease is not None and type_ in (self.config.control.acquire, self.config.control.release):
            return self._control(sig, sender, now)
        rule = self._table.match(type_)
        if rule is None:
            self.counters["unmatched"] += 1
            return []
        return self._command(self._rules[rule.index], sig, sender, now, hub_now_ms)

    def connection_destroyed(self, conn: Connection, now: float) -> list[Command]:
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
        self._own_id = own_connection_id
        self.linked = True
        self._announcer.sent(now)
        return [SendSignal(CAPABILITIES, self.capabilities), SendSignal(STATUS, self._status_data())]

    def link_down(self, now: float) -> list[Command]:
        """The session link is lost or reconnecting: the safe actions, before anything else."""
        self.linked = False
        self._announcer.cancel()
        self._reset_slews(now)
        return list(self._on_disconnect)

    def device_state(self, device: str, up: bool, now: float) -> list[Command]:
        """A device link came up or went down: remembered for bridge.status and announced."""
        if self.closed or device not in self.devices or self.devices[device] == up:
            return []
        self.devices[device] = up
        if not up:
            return self._announce(now)
        # Back: made safe before anything else can reach it (the daemon writes these in the link's
        # up callback, before any other event is handled): the e-stop actions while latched, then the
        # safe actions it missed while down. Commands refused meanwhile are not owed: never written.
        out: list[Command] = []
        if self._safety.latched:
            out += [c for c in self._estop_cmds if _device(c) == device]
        out += [c for c in self._owed.pop(device, ()) if c not in out]
        return [*out, *self._announce(now)]

    def undelivered(self, cmd: Command) -> None:
        """A link refused ``cmd`` (down, sealed or full). A safe action is owed to its device until that
        device comes back up (``device_state``); anything else is forgotten (and counted)."""
        self.counters["writes_refused"] += 1   # in bridge.status
        device = _device(cmd)
        if device is not None and cmd in self._safe_cmds and not self.closed:
            owed = self._owed.setdefault(device, [])
            if cmd not in owed:
                owed.append(cmd)

    def expired(self, device: str, dropped: list[str], hub_now_ms: int) -> list[Command]:
        """``device``'s link dropped ``dropped`` (lines or ``topic payload`` texts) from its queue, never
        written: their command's deadline (``WriteLine.deadline``) passed first. Counted
        (``writes_expired`` in bridge.status) and audited."""
        self.counters["writes_expired"] += len(dropped)
        if not self._audit or not dropped:
            return []
        more = f" (+{len(dropped) - 3} more)" if len(dropped) > 3 else ""
        reason = (f"device {device}: past max_age_ms in its link's queue, dropped: "
                  f"{'; '.join(dropped[:3])}{more}")
        return [Audit(AuditRecord(hub_now_ms / 1000.0, None, None, "", Decision.STALE, reason))]

    def shutdown(self) -> list[Command]:
        """The on_shutdown actions, after purging every device's queue; the engine is closed from now on."""
        self.closed = True
        return [*(Purge(d) for d in self.devices), *self._on_shutdown]

    # ------------------------------------------------------------ device events

    def device_line(self, device: str, line: str, now: float) -> list[Command]:
        matched = self._expects.match(device, line)
        if matched is not None:
            self.counters["expect_matched"] += 1
            reply = matched[0].answer(matched[1])
            return [reply] if reply is not None and self.linked else []
        return self._telemetry_out(self._telemetry.serial_line(device, line, now))

    def device_bytes(self, device: str, data: bytes, now: float) -> list[Command]:
        """Bytes from a ``framing: binary`` serial device: its telemetry frames (engine.frames)."""
        shaper = self._telemetry
        before = shaper.frames_bad_checksum
        out = self._telemetry_out(shaper.serial_bytes(device, data, now))
        self.counters["frames_bad_checksum"] += shaper.frames_bad_checksum - before   # in bridge.status
        return out

    def mqtt_message(self, device: str, topic: str, payload: bytes, now: float) -> list[Command]:
        return self._telemetry_out(self._telemetry.mqtt_message(device, topic, payload, now))

    def tick(self, now: float) -> list[Command]:
        out: list[Command] = []
        if self.closed:
            return out
        for index in self._safety.expired(now):
            self.counters["watchdog_fired"] += 1
            out.extend(self._watchdog_cmds[index])
        if out:
            self._reset_slews(now)
        self.counters["expect_timeouts"] += self._expects.expire(now)
        out.extend(self._telemetry_out(self._telemetry.due(now)))
        expired = self._lease.expire(now) if self._lease is not None else None
        if expired is not None:
            out.extend(self._lease_lost(expired, now))
        if self._announcer.due(now) and self.linked:
            out.append(SendSignal(STATUS, self._status_data()))
        for sender in self._describes.due(now):
            if self.linked:
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

    def take_over(self, old: Engine, now: float) -> list[Command]:
        """A config reload: this (new) engine inherits ``old``'s state and returns what to carry out.

        Kept: the e-stop latch (a reload never unlatches), the lease holder (when the lease is still on),
        the link and own connection id, device states, counters. Not kept: watchdogs - every pending
        one fires its (old) safe action now, so nothing keeps moving under rules that may be gone - and
        slew references (restart from 0), rate buckets, pending expects, held telemetry. When linked,
        the new capabilities and the status are broadcast."""
        out: list[Command] = []
        for index in old._safety.expired(math.inf):
            self.counters["watchdog_fired"] += 1
            out.extend(old._watchdog_cmds[index])
        if old.estopped:
            self._safety.estop()
        if self._lease is not None and old._lease is not None:
            self._lease.inherit(old._lease, now)
        self._own_id, self.linked = old._own_id, old.linked
        self.gate = old.gate
        for device, owed in old._owed.items():
            self._owed.setdefault(device, []).extend(owed)
        self.devices.update((d, up) for d, up in old.devices.items() if d in self.devices)
        self.counters.update(old.counters)
        self.decisions.update(old.decisions)
        self._reset_slews(now)
        if self.linked:
            self._announcer.sent(now)
            out += [SendSignal(CAPABILITIES, self.capabilities), SendSignal(STATUS, self._status_data())]
        return out

    @property
    def lease_holder(self) -> str | None:
        """The connection id holding the control lease (None: free, or no lease)."""
        return self._lease.holder if self._lease is not None else None

    @property
    def estopped(self) -> bool:
        return self._safety.latched

    @property
    def telemetry(self) -> TelemetryShaper:
        return self._telemetry

    @property
    def unmatched(self) -> int:
        return self._table.unmatched

    # ------------------------------------------------------------ the command path

    def _command(self, compiled: CompiledRule, sig: Signal, sender: Connection | None,
                 now: float, hub_now_ms: int) -> list[Command]:
        rule = compiled.rule
        try:
            data: Any = decode_data(sig.data)
        except ValueError as e:
            data = _BadJson(f"signal data is not JSON: {e}")
        verdict = (self._check_estop()
                   or compiled.authz.allows(sender)
                   or self._check_stale(rule, sig, hub_now_ms)
                   or self._check_lease(sig, now)
                   or self._check_rate(compiled, sig, now))
        if verdict is not None:
            return self._decide(rule, sig, data, verdict.decision, verdict.reason, [])
        if isinstance(data, _BadJson):
            return self._decide(rule, sig, data, Decision.REJECTED, data.reason, [])
        checked = compiled.checker.check(data)
        if not isinstance(checked, Checked):
            return self._decide(rule, sig, data, Decision.REJECTED, checked.reason, [])
        values = checked.values
        slewed = self._slew(compiled, values, now)
        # The links drop these writes if still queued once the command is max_age_ms old (docs/safety.md).
        deadline = write_deadline(rule.max_age_ms, sig.ts, hub_now_ms, now)
        try:
            out: list[Command] = [a.fill(values, deadline) for a in compiled.actions]
        except FillError as e:
            return self._decide(rule, sig, data, Decision.REJECTED, str(e), [])
        refused = self._check_devices(out)
        if refused is not None:
            return self._decide(rule, sig, data, refused.decision, refused.reason, [])
        self._commit(compiled, sig, slewed, now)
        clamped = checked.clamped or any(s.clamped for s in slewed.values())
        decision = Decision.CLAMPED if clamped else Decision.APPLIED
        return self._decide(rule, sig, data, decision, "", out, values)

    @staticmethod
    def _slew(compiled: CompiledRule, values: dict[str, Any], now: float) -> dict[str, Slewed]:
        """Slew-limit ``values`` in place; the limiters' references move only at ``_commit``."""
        slewed: dict[str, Slewed] = {}
        for name, slew in compiled.slews.items():
            if name in values:
                result = slewed[name] = slew.propose(float(values[name]), now)
                values[name] = result.value
        return slewed

    def _commit(self, compiled: CompiledRule, sig: Signal, slewed: dict[str, Slewed], now: float) -> None:
        """The command is written: move the slew references, re-arm the watchdog, wait for expects."""
        for name, result in slewed.items():
            compiled.slews[name].commit(result, now)
        self._safety.refresh(compiled.rule, now)
        for action in compiled.actions:
            if action.expect is not None:
                self._expects.add(action, sig.from_id, now)

    def _check_devices(self, out: list[Command]) -> Verdict | None:
        gate = self.gate
        if gate is None:
            return None
        for cmd in out:
            if isinstance(cmd, WriteLine | WriteFrame | Publish) and (verdict := gate(cmd)) is not None:
                return verdict
        return None

    def _check_estop(self) -> Verdict | None:
        return None if self._safety.admit() else _ESTOPPED

    def _check_stale(self, rule: Rule, sig: Signal, hub_now_ms: int) -> Verdict | None:
        if is_stale(rule.max_age_ms, sig.ts, hub_now_ms):
            return Verdict(Decision.STALE, f"{hub_now_ms - sig.ts} ms old, max_age_ms {rule.max_age_ms}")
        return None

    def _check_lease(self, sig: Signal, now: float) -> Verdict | None:
        if self._lease is None:
            return None
        outcome = self._lease.check_command(sig.from_id, now)
        return None if outcome.kind is OutcomeKind.ALLOWED else Verdict(Decision.NO_LEASE, outcome.reason)

    def _check_rate(self, compiled: CompiledRule, sig: Signal, now: float) -> Verdict | None:
        if compiled.rate is None:
            return None
        # Per token, when the hub names it: a fresh connection per command must not get a fresh bucket.
        sender = self._sender
        key = ("token", sender.token_id) if sender is not None and sender.token_id else sig.from_id
        return compiled.rate.check(key, now)

    def _decide(self, rule: Rule, sig: Signal, data: Any, decision: Decision, reason: str,
                out: list[Command], values: dict[str, Any] | None = None) -> list[Command]:
        """``values``: what was written (after defaults, clamps and slew), for the ack."""
        self.decisions[decision] += 1
        if self._audit:
            out.append(self._audit_record(sig, decision, reason, out))
        if rule.ack and sig.from_id is not None:
            out.append(ack_signal(data, sig.seq, decision.value, reason, sig.from_id, values))
        return out

    def _audit_record(self, sig: Signal, decision: Decision, reason: str, out: list[Command]) -> Audit:
        sender = self._sender
        return Audit(AuditRecord(self._hub_ms / 1000.0, sig.from_id, sender.data if sender else None,
                                 sig.type, decision, reason, written(out), sig.data))

    # ------------------------------------------------------------ e-stop, lease, expect

    def _estop(self, sig: Signal, now: float) -> list[Command]:
        was = self._safety.latched
        self._safety.estop()   # latches; its actions were filled once at load: self._estop_cmds
        # Queued commands were decided before the latch: dropped, so that nothing follows the stop.
        out: list[Command] = [*(Purge(d) for d in self.devices), *self._estop_cmds]
        self.counters["estops"] += 1
        self._reset_slews(now)
        if self._audit:
            out.append(self._audit_record(sig, Decision.APPLIED, "e-stop", out))
        if not was:
            out.extend(self._announce(now))
        return out

    def _reset(self, sig: Signal, sender: Connection | None, now: float) -> list[Command]:
        result = self._safety.reset(sender.role if sender is not None else None)
        self.counters[f"estop_reset_{result}"] += 1
        out = self._announce(now) if result == "unlatched" else []
        if self._audit:
            decision = Decision.UNAUTHORISED if result == "denied" else Decision.APPLIED
            out.append(self._audit_record(sig, decision, f"e-stop reset: {result}", []))
        return out

    def _control(self, sig: Signal, sender: Connection | None, now: float) -> list[Command]:
        assert self._lease is not None
        sender_id = sender.id if sender is not None else None
        if sig.type == self.config.control.acquire:
            outcome = self._lease.acquire(sender_id, sender.role if sender is not None else None, now)
        else:
            outcome = self._lease.release(sender_id)
        out: list[Command] = []
        if sig.from_id is not None:
            try:
                data: Any = decode_data(sig.data)
            except ValueError:
                data = None
            # A take-over is a grant to the sender (the reason names the previous holder).
            status = OutcomeKind.GRANTED if outcome.kind is OutcomeKind.TAKEN_OVER else outcome.kind
            reason = "" if outcome.kind in (OutcomeKind.GRANTED, OutcomeKind.RELEASED,
                                            OutcomeKind.ALREADY_HELD) else outcome.reason
            out.append(ack_signal(data, sig.seq, status.value, reason, sig.from_id))
        if outcome.controller_lost:
            return [*out, *self._lease_lost(outcome, now)]
        if outcome.changed:
            out.extend(self._announce(now))
        return out

    def _lease_lost(self, outcome: LeaseOutcome, now: float) -> list[Command]:
        """The lease holder lost it (destroyed, idle, taken over): the safe actions, then the news."""
        if not outcome.controller_lost:
            return []
        self.counters[f"lease_{outcome.kind.value}"] += 1
        self._reset_slews(now)
        return [*self._on_controller_lost, *self._announce(now)]

    # ------------------------------------------------------------ helpers

    def _telemetry_out(self, items: list[Outgoing]) -> list[Command]:
        if not items:
            return []
        if not self.linked:
            self.counters["telemetry_dropped_link_down"] += len(items)
            return []
        return [SendSignal(o.type, o.data, optional=True) for o in items]

    def _reset_slews(self, now: float) -> None:
        """After a safe action the hardware is stopped: slew again from zero (when in range)."""
        for compiled in self._rules.values():
            for spec in compiled.rule.params:
                slew = compiled.slews.get(spec.name)
                if slew is not None:
                    slew.reset(0.0 if _zero_in_range(spec) else None, now)

    def _describe(self, to: str) -> list[Command]:
        return [SendSignal(CAPABILITIES, self.capabilities, to, optional=True),
                SendSignal(STATUS, self._status_data(), to, optional=True)]

    def _status_data(self) -> str:
        return status_data(estopped=self._safety.latched,
                           lease=self._lease.holder if self._lease is not None else None,
                           devices=self.devices, counters=self.counters, decisions=self.decisions)

    def _announce(self, now: float) -> list[Command]:
        """The state changed: a status broadcast now, or later (coalesced, see ``tick``), or none while
        the link is down (the next connect sends a fresh one)."""
        if self.linked and self._announcer.changed(now):
            return [SendSignal(STATUS, self._status_data())]
        return []


_ESTOPPED = Verdict(Decision.ESTOPPED, "e-stop latched")


@dataclass(frozen=True, slots=True)
class _BadJson:
    reason: str


def _device(cmd: Command) -> str | None:
    return cmd.device if isinstance(cmd, WriteLine | WriteFrame | Publish) else None


def _zero_in_range(spec: ParamSpec) -> bool:
    return (spec.min is None or spec.min <= 0) and (spec.max is None or spec.max >= 0)
