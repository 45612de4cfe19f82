"""What the bridge decided about one command, in the words used by acks, counters and the audit log.

Every command signal that matches a rule ends in exactly one :class:`Decision`. The refusing parts of
the safety layer (authorisation, lease, rate limit, stale guard, e-stop latch, param checks) hand back a
:class:`Verdict` - the decision plus a short reason a person can act on - or None to let the command
through. The engine turns the final decision into an ack signal (``ack: true`` rules), a counter and an
:class:`AuditRecord` (one compact JSON line in the audit log, see ``bridge.adapters.audit``).

Pure: no I/O. ``AuditRecord.to_json`` only builds a string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Decision(StrEnum):
    """The decision vocabulary. The values are the wire/audit spelling and never change."""

    APPLIED = "applied"            # written as asked
    CLAMPED = "clamped"            # written, with at least one value clamped (range or slew)
    REJECTED = "rejected"          # bad params (type, range with on_range: reject, undeclared, ...)
    STALE = "stale"                # older than the rule's max_age_ms
    ESTOPPED = "estopped"          # the e-stop latch is set
    NO_LEASE = "no_lease"          # control lease on and the sender does not hold it
    RATE_LIMITED = "rate_limited"  # the sender exceeded the rule's rate_limit
    UNAUTHORISED = "unauthorised"  # from_roles / from_data / allow_rest refused the sender
    DEVICE_DOWN = "device_down"    # a device the command writes to is not connected (never written later)
    OVERLOADED = "overloaded"      # a device link's bounded queue is full (never written later)

    @property
    def wrote(self) -> bool:
        """True when the command reached the hardware (applied or clamped)."""
        return self in _WRITING


_WRITING = frozenset({Decision.APPLIED, Decision.CLAMPED})

#: Decisions that refuse a command: nothing is written.
REFUSALS = frozenset(Decision) - _WRITING


def parse_decision(text: str) -> Decision:
    """The Decision spelled ``text``; ValueError naming the known values otherwise."""
    try:
        return Decision(text)
    except ValueError:
        known = ", ".join(d.value for d in Decision)
        raise ValueError(f"unknown decision {text!r}, expected one of: {known}") from None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A refusal from one safety check: the decision to report and a short human reason.

    Checks return ``Verdict | None`` (None = let it through). A check may return the same Verdict
    object every time (it is immutable), so refusing costs no allocation on a flood."""

    decision: Decision
    reason: str = ""

    def __post_init__(self) -> None:
        if self.decision.wrote:
            raise ValueError(f"a Verdict refuses; {self.decision.value!r} is not a refusal")


@dataclass(frozen=True, slots=True)
class SerialWrite:
    """One line written to a serial device (without the device's newline)."""

    device: str
    line: str

    def to_obj(self) -> dict[str, str]:
        return {"device": self.device, "line": self.line}


@dataclass(frozen=True, slots=True)
class MqttWrite:
    """One message published to an MQTT device (``payload`` as sent, text)."""

    device: str
    topic: str
    payload: str

    def to_obj(self) -> dict[str, str]:
        return {"device": self.device, "topic": self.topic, "payload": self.payload}


@dataclass(frozen=True, slots=True)
class FrameWrite:
    """One binary frame written to a serial device (``framing: binary``), as hex bytes."""

    device: str
    frame: bytes

    def to_obj(self) -> dict[str, str]:
        return {"device": self.device, "frame": self.frame.hex(" ")}


Written = SerialWrite | MqttWrite | FrameWrite


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One command and what became of it.

    ``time`` is wall-clock seconds since the epoch (the bridge's clock, when the decision was taken).
    ``sender_id`` / ``sender_data`` are the sender's connection id and data, both None for a REST signal
    (``from`` null). ``written`` lists what went to the hardware, empty for refusals. ``data`` is the
    signal's data as received (None: not recorded), so that ``sigbridge replay`` can run it again.
    """

    time: float
    sender_id: str | None
    sender_data: str | None
    type: str
    decision: Decision
    reason: str = ""
    written: tuple[Written, ...] = ()
    data: str | None = None

    def to_json(self) -> str:
        """One compact JSON line, without the trailing newline.

        ASCII-only on purpose: json escapes every control character, and with ``ensure_ascii`` also
        U+2028/U+2029 and NEL, which some line splitters (``str.splitlines``) treat as line breaks - so
        a hostile connection data or signal type can never forge a second audit line."""
        stamp = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        obj: dict[str, object] = {
            "time": stamp.replace("+00:00", "Z"),
            "from": self.sender_id,
            "from_data": self.sender_data,
            "type": self.type,
        }
        if self.data is not None:
            obj["data"] = self.data
        obj["decision"] = self.decision.value
        if self.reason:
            obj["reason"] = self.reason
        obj["written"] = [w.to_obj() for w in self.written]
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
