"""The engine's outputs (commands, frozen dataclasses) and the compiled form of rule actions.

Contract: ``CompiledRule(rule, newlines)`` compiles a rule's params checker, action templates, expect
regexes, authoriser, rate limiter and slew limiters once, at load (raises TemplateError/ValueError on
what cannot compile; the config loader has normally refused it with file:line first).
``CompiledAction.fill(values)`` returns one command or raises FillError. ``constant_commands`` fills the
param-less safe actions (on_disconnect, watchdog, e-stop, ...) once, at load. ``ack_signal`` builds a
``bridge.ack``; ``written`` lists what a command list puts on the hardware (for audit records).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.core.engine.authz import Authorizer
from bridge.core.engine.decisions import AuditRecord, FrameWrite, MqttWrite, SerialWrite, Written
from bridge.core.engine.frames import FrameEncoder
from bridge.core.engine.params import ID_KEY, ParamChecker
from bridge.core.engine.ratelimit import RateLimiter
from bridge.core.engine.slew import SlewLimiter
from bridge.core.engine.templates import LineTemplate, PayloadTemplate, TopicTemplate
from bridge.core.model import Action, MqttAction, ParamSpec, Rule, Scalar

# ---------------------------------------------------------------- commands (outputs)


@dataclass(frozen=True, slots=True)
class WriteLine:
    """Write ``line`` plus the device's newline to a serial device. ``deadline`` (monotonic seconds, the
    command's issue time plus its rule's max_age_ms): the link drops the line, unwritten, when it is
    still waiting in its queue then; None (safe actions, rules without max_age_ms): never dropped so."""

    device: str
    line: str
    deadline: float | None = field(default=None, compare=False)   # when to stop trying, not what to write


@dataclass(frozen=True, slots=True)
class WriteFrame:
    """Write ``data`` (a whole binary frame, checksum included) to a ``framing: binary`` serial device;
    ``deadline`` as for :class:`WriteLine`."""

    device: str
    data: bytes
    deadline: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``payload`` on ``topic`` (never retained); ``deadline`` as for :class:`WriteLine`."""

    device: str
    topic: str
    payload: bytes
    qos: int = 0
    deadline: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SendSignal:
    """Send a signal into the session; ``to`` None broadcasts. ``optional`` (telemetry, describe
    answers) may be dropped when the bridge's own signal budget runs low (``bridge.core.engine.pacing``);
    the others (acks, status) wait for it instead."""

    type: str
    data: str
    to: str | None = None
    retry: bool = False
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Purge:
    """Drop what the device's link has taken but not yet handed to the device (its queue), before an
    e-stop or the shutdown: the safe actions that follow must neither wait behind older commands nor
    be followed by them. Lines or messages already partly on the wire are kept."""

    device: str


@dataclass(frozen=True, slots=True)
class Audit:
    """Append ``record`` to the audit log (only produced when the config has ``audit:``)."""

    record: AuditRecord


class NoticeKind(StrEnum):
    """What the engine tells its operator (the daemon logs it; nothing in the session sees it)."""

    ESTOP_LATCHED = "estop_latched"            # the latch went from armed to e-stopped
    ESTOP_RESET = "estop_reset"                # the latch was reset (unlatched)
    TELEMETRY_DROPPING = "telemetry_dropping"  # the first telemetry value dropped in a link outage
    TELEMETRY_DROPPED = "telemetry_dropped"    # the link is back; ``count`` values were dropped meanwhile


@dataclass(frozen=True, slots=True)
class Notice:
    """A change worth a log line: the engine says it once, when it happens (never per signal)."""

    kind: NoticeKind
    count: int = 0


Command = WriteLine | WriteFrame | Publish | SendSignal | Audit | Purge | Notice
#: The commands a device link carries out.
DeviceWrite = WriteLine | WriteFrame | Publish


# ---------------------------------------------------------------- compiled config


class CompiledAction:
    __slots__ = ("action", "expect", "frame", "line", "payload", "topic")

    def __init__(self, action: Action, params: frozenset[str], newlines: dict[str, str],
                 specs: tuple[ParamSpec, ...] = ()) -> None:
        self.action = action
        self.frame: FrameEncoder | None = None
        self.line: LineTemplate | None = None
        self.topic: TopicTemplate | None = None
        self.payload: PayloadTemplate | None = None
        self.expect: re.Pattern[str] | None = None
        if isinstance(action, MqttAction):
            self.topic = TopicTemplate(action.topic, params)
            self.payload = PayloadTemplate(action.payload, params)
        elif action.frame is not None:
            self.frame = FrameEncoder(action.frame, {p.name: (p.type, p.min, p.max) for p in specs})
        else:
            self.line = LineTemplate(action.line, params, newlines.get(action.device, "\n"),
                                     allow_tab=action.allow_tab)
            if action.expect is not None:
                self.expect = re.compile(action.expect.pattern)

    def fill(self, values: dict[str, Scalar], deadline: float | None = None) -> Command:
        """One command (carrying ``deadline``, see :class:`WriteLine`); raises FillError."""
        if self.frame is not None:
            return WriteFrame(self.action.device, self.frame.encode(values), deadline)
        if self.line is not None:
            return WriteLine(self.action.device, self.line.fill(values), deadline)
        assert self.topic is not None and self.payload is not None
        qos = self.action.qos if isinstance(self.action, MqttAction) else 0
        return Publish(self.action.device, self.topic.fill(values), self.payload.fill(values), qos, deadline)


class CompiledRule:
    __slots__ = ("actions", "authz", "checker", "rate", "rule", "slews")

    def __init__(self, rule: Rule, newlines: dict[str, str]) -> None:
        self.rule = rule
        self.checker = ParamChecker(rule.params)
        self.actions = tuple(CompiledAction(a, self.checker.names, newlines, rule.params) for a in rule.send)
        self.authz = Authorizer.for_rule(rule)
        self.rate = RateLimiter.for_rule(rule.rate_limit) if rule.rate_limit is not None else None
        self.slews = {p.name: s for p in rule.params if (s := SlewLimiter.for_param(p)) is not None}

    def reset_slews(self, now: float) -> None:
        """After a safe action the hardware is stopped: slew again from zero (when in range)."""
        for spec in self.rule.params:
            slew = self.slews.get(spec.name)
            if slew is not None:
                in_range = (spec.min is None or spec.min <= 0) and (spec.max is None or spec.max >= 0)
                slew.reset(0.0 if in_range else None, now)


def constant_commands(actions: tuple[Action, ...], newlines: dict[str, str]) -> tuple[Command, ...]:
    """Safe actions name no params: fill them once, at load (raises FillError on a bad constant)."""
    return tuple(CompiledAction(a, frozenset(), newlines).fill({}) for a in actions)


# ---------------------------------------------------------------- acks and audit helpers

ACK = "bridge.ack"


def ack_signal(data: Any, seq: int, status: str, reason: str, to: str,
               values: dict[str, Any] | None = None) -> SendSignal:
    """A targeted ``bridge.ack``: ``{"id", "status", "reason"}``, plus ``"values"`` (the params as
    written: defaults filled, clamps and slew applied) when given, and for ``clamped`` the names of
    the requested params written otherwise (``"clamped"``); ``id`` is the client's correlation
    id (``"id"`` in the data: a string of at most 128 characters or an int), else the signal's ``seq``."""
    found = correlation_id(data)
    ack_id: Any = seq if found is None else found
    body: dict[str, Any] = {"id": ack_id, "status": status, "reason": reason or None}
    if values is not None:
        body["values"] = values
        if status == "clamped" and isinstance(data, dict):
            # Which of the requested values were not written as asked (range clamp or slew).
            body["clamped"] = [k for k, v in values.items() if k in data and data[k] != v]
    return SendSignal(ACK, json.dumps(body, separators=(",", ":")), to)


def correlation_id(data: Any) -> str | int | None:
    """The client's correlation id in decoded signal data: ``"id"``, a string of at most 128
    characters or an int (not a bool); None when absent or of another kind."""
    value = data.get(ID_KEY) if isinstance(data, dict) else None
    if (isinstance(value, str) and len(value) <= 128) or (
            isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def written(commands: list[Command]) -> tuple[Written, ...]:
    """What ``commands`` put on the hardware: every line and every published message, in order."""
    out: list[Written] = []
    for c in commands:
        if isinstance(c, WriteLine):
            out.append(SerialWrite(c.device, c.line))
        elif isinstance(c, WriteFrame):
            out.append(FrameWrite(c.device, c.data))
        elif isinstance(c, Publish):
            out.append(MqttWrite(c.device, c.topic, c.payload.decode("utf-8", "replace")))
    return tuple(out)
