"""What the engine counts, and the one way to read it: ``Engine.status()``.

``Counters`` is a slotted dataclass of ints, one field per event counted. Each field is written by the
engine part that sees the event (and nowhere else); the engine holds its own instance privately, and
``status()`` hands out a copy inside a frozen :class:`EngineStatus`, so no reader can change a count
and no other module writes one. ``bridge.status`` (``bridge.core.engine.status``) and the daemon's
/metrics (``bridge.adapters.metrics``) are rendered from that value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from bridge.core.engine.decisions import Decision


@dataclass(slots=True)
class Counters:
    """Engine events since start (a reload keeps them)."""

    signals: int = 0                      # signals taken (not our own)
    unmatched: int = 0                    # signals no rule, e-stop, lease or bridge.* type took
    unknown_senders: int = 0              # signals from a connection the engine was never told of
    telemetry_dropped_link_down: int = 0  # telemetry values made while the session link was down
    watchdog_fired: int = 0
    estops: int = 0
    estop_reset_unlatched: int = 0
    estop_reset_not_latched: int = 0
    estop_reset_denied: int = 0
    writes_refused: int = 0               # writes a device link did not take (down, sealed, full)
    writes_expired: int = 0               # writes a link dropped, still queued past their deadline
    lease_controller_lost: int = 0
    lease_expired: int = 0
    lease_taken_over: int = 0
    frames_bad_checksum: int = 0
    expect_matched: int = 0
    expect_timeouts: int = 0
    pings_answered: int = 0
    pings_refused: int = 0

    def estop_reset(self, result: str) -> None:
        """An e-stop reset: ``unlatched``, ``not_latched`` or ``denied`` (``SafetyState.reset``)."""
        if result == "unlatched":
            self.estop_reset_unlatched += 1
        elif result == "denied":
            self.estop_reset_denied += 1
        else:
            self.estop_reset_not_latched += 1

    def lease_lost(self, kind: str) -> None:
        """The lease holder lost it: ``expired``, ``taken_over`` or ``controller_lost``."""
        if kind == "expired":
            self.lease_expired += 1
        elif kind == "taken_over":
            self.lease_taken_over += 1
        else:
            self.lease_controller_lost += 1

    def items(self) -> list[tuple[str, int]]:
        """``(name, value)`` for every counter, in declaration order (for /metrics)."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts (a reload: the new engine carries the old one's on)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> Counters:
        return Counters(*(getattr(self, f.name) for f in fields(self)))


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """The engine's state and counts at one instant (``Engine.status()``): a copy, never live."""

    estopped: bool
    lease_holder: str | None     # None: free, or no lease
    linked: bool                 # the session link is up
    devices: Mapping[str, bool]  # device name -> link up
    counters: Counters
    decisions: Mapping[Decision, int]   # every Decision, 0 when none yet
