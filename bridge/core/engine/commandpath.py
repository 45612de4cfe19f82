"""The per-command path: one matched command signal in, its commands (or its refusal) out.

A fixed sequence of small steps, each of which may refuse: estop latch -> authorise -> stale ->
lease -> rate -> params -> slew -> templates -> devices -> commit. ``devices`` asks ``gate`` (set by
the daemon from its links; None admits everything) whether each write would be taken now: a device
down or a full queue refuses the whole command (``device_down`` / ``overloaded``), so ``applied``
always means handed to a link that is up. A refusal writes nothing and changes no state (the slew
reference and the watchdog move only at the commit). Rules with ``ack: true`` answer the sender with
a targeted ``bridge.ack``; with ``audit:`` every decision is recorded, at the hub's time of receipt
(``sig.ts + sig.age_ms``).

Everything a step needs comes in as an argument (the signal, its sender from the engine's member
table, ``now``); nothing about the signal being handled is kept between calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.core.engine.actions import (
    Audit,
    Command,
    CompiledRule,
    DeviceWrite,
    Publish,
    WriteFrame,
    WriteLine,
    ack_signal,
    written,
)
from bridge.core.engine.age import is_stale, write_deadline
from bridge.core.engine.decisions import AuditRecord, Decision, Verdict
from bridge.core.engine.expects import ExpectTable
from bridge.core.engine.lease import ControlLease, OutcomeKind
from bridge.core.engine.params import Checked, decode_data
from bridge.core.engine.safety import SafetyState
from bridge.core.engine.slew import Slewed
from bridge.core.engine.templates import FillError
from bridge.core.events import Signal
from bridge.core.model import Rule
from bridge.core.signal import Connection

#: Whether a device link would take a write now: None, or the refusal (``device_down``/``overloaded``).
DeviceGate = Callable[[DeviceWrite], Verdict | None]

_ESTOPPED = Verdict(Decision.ESTOPPED, "e-stop latched")


def audit_record(sig: Signal, sender: Connection | None, decision: Decision, reason: str,
                 out: list[Command]) -> Audit:
    """The audit record of ``sig`` (sent by ``sender``), stamped with the hub's time at receipt."""
    return Audit(AuditRecord((sig.ts + sig.age_ms) / 1000.0, sig.from_id,
                             sender.data if sender is not None else None, sig.type, decision, reason,
                             written(out), sig.data))


class CommandPath:
    """The steps of one engine (its safety state, lease and expects are the engine's own)."""

    __slots__ = ("_audit", "_expects", "_lease", "_safety", "decisions", "gate")

    def __init__(self, safety: SafetyState, lease: ControlLease | None, expects: ExpectTable,
                 audit: bool) -> None:
        self._safety = safety
        self._lease = lease
        self._expects = expects
        self._audit = audit
        self.gate: DeviceGate | None = None
        self.decisions: Counter[Decision] = Counter()

    def run(self, compiled: CompiledRule, sig: Signal, sender: Connection | None,
            now: float) -> list[Command]:
        rule = compiled.rule
        try:
            data: Any = decode_data(sig.data)
        except ValueError as e:
            data = _BadJson(f"signal data is not JSON: {e}")
        verdict = (self._check_estop()
                   or compiled.authz.allows(sender)
                   or _check_stale(rule, sig)
                   or self._check_lease(sig, now)
                   or _check_rate(compiled, sig, sender, now))
        if verdict is not None:
            return self._decide(rule, sig, sender, data, verdict.decision, verdict.reason, [])
        if isinstance(data, _BadJson):
            return self._decide(rule, sig, sender, data, Decision.REJECTED, data.reason, [])
        checked = compiled.checker.check(data)
        if not isinstance(checked, Checked):
            return self._decide(rule, sig, sender, data, Decision.REJECTED, checked.reason, [])
        values = checked.values
        slewed = _slew(compiled, values, now)
        # The links drop these writes if still queued once the command is max_age_ms old (docs/safety.md).
        deadline = write_deadline(rule.max_age_ms, sig.age_ms, now)
        try:
            out: list[Command] = [a.fill(values, deadline) for a in compiled.actions]
        except FillError as e:
            return self._decide(rule, sig, sender, data, Decision.REJECTED, str(e), [])
        refused = self._check_devices(out)
        if refused is not None:
            return self._decide(rule, sig, sender, data, refused.decision, refused.reason, [])
        self._commit(compiled, sig, slewed, now)
        clamped = checked.clamped or any(s.clamped for s in slewed.values())
        decision = Decision.CLAMPED if clamped else Decision.APPLIED
        return self._decide(rule, sig, sender, data, decision, "", out, values)

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

    def _check_lease(self, sig: Signal, now: float) -> Verdict | None:
        if self._lease is None:
            return None
        outcome = self._lease.check_command(sig.from_id, now)
        return None if outcome.kind is OutcomeKind.ALLOWED else Verdict(Decision.NO_LEASE, outcome.reason)

    def _decide(self, rule: Rule, sig: Signal, sender: Connection | None, data: Any, decision: Decision,
                reason: str, out: list[Command], values: dict[str, Any] | None = None) -> list[Command]:
        """``values``: what was written (after defaults, clamps and slew), for the ack."""
        self.decisions[decision] += 1
        if self._audit:
            out.append(audit_record(sig, sender, decision, reason, out))
        if rule.ack and sig.from_id is not None:
            out.append(ack_signal(data, sig.seq, decision.value, reason, sig.from_id, values))
        return out


def _slew(compiled: CompiledRule, values: dict[str, Any], now: float) -> dict[str, Slewed]:
    """Slew-limit ``values`` in place; the limiters' references move only at the commit."""
    slewed: dict[str, Slewed] = {}
    for name, slew in compiled.slews.items():
        if name in values:
            result = slewed[name] = slew.propose(float(values[name]), now)
            values[name] = result.value
    return slewed


def _check_stale(rule: Rule, sig: Signal) -> Verdict | None:
    if is_stale(rule.max_age_ms, sig.age_ms):
        return Verdict(Decision.STALE, f"{sig.age_ms} ms old, max_age_ms {rule.max_age_ms}")
    return None


def _check_rate(compiled: CompiledRule, sig: Signal, sender: Connection | None,
                now: float) -> Verdict | None:
    if compiled.rate is None:
        return None
    # Per token, when the hub names it: a fresh connection per command must not get a fresh bucket.
    key = ("token", sender.token_id) if sender is not None and sender.token_id else sig.from_id
    return compiled.rate.check(key, now)


@dataclass(frozen=True, slots=True)
class _BadJson:
    reason: str
