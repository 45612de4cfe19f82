"""The session as the engine knows it, from session events only: whether the link is up, the bridge's
own connection id, the members (``bridge.core.engine.members``), the hub clock offset seen in the last
signal, and the telemetry dropped in the current outage.

Telemetry is never queued while the link is down: it is dropped and counted
(``telemetry_dropped_link_down``), with one notice when the dropping starts and one with the sum when
the link is back (``Notice``: the daemon logs them).
"""

from __future__ import annotations

from bridge.core.engine.actions import Command, Notice, NoticeKind, SendSignal
from bridge.core.engine.counters import Counters
from bridge.core.engine.handover import HandOver
from bridge.core.engine.members import Members
from bridge.core.engine.telemetry import Outgoing


class SessionView:
    __slots__ = ("dropped_in_outage", "hub_offset_ms", "linked", "members", "own_id")

    def __init__(self) -> None:
        self.members = Members()
        self.own_id: str | None = None
        self.linked = False
        # Hub clock minus monotonic clock, ms: from the last signal (ts + age_ms at now); for the time
        # of audit records of writes dropped later in a link's queue. None before the first signal.
        self.hub_offset_ms: float | None = None
        self.dropped_in_outage = 0      # telemetry values dropped since the link went down

    def up(self, own_id: str) -> list[Command]:
        """The link is (back) up under ``own_id``: the notice of what was dropped meanwhile, if any."""
        self.own_id = own_id
        self.members.destroyed(own_id)
        self.linked = True
        dropped, self.dropped_in_outage = self.dropped_in_outage, 0
        return [Notice(NoticeKind.TELEMETRY_DROPPED, dropped)] if dropped else []

    def down(self) -> None:
        self.linked = False
        self.dropped_in_outage = 0

    def hub_ms(self, now: float) -> float:
        """The hub's clock at monotonic ``now``, as last estimated (the monotonic clock before any signal)."""
        return now * 1000.0 + (self.hub_offset_ms or 0.0)

    def telemetry(self, items: list[Outgoing], counts: Counters) -> list[Command]:
        """Telemetry values to send now: signals while linked, else dropped (see the docstring)."""
        if not items:
            return []
        if not self.linked:
            first = self.dropped_in_outage == 0
            counts.telemetry_dropped_link_down += len(items)
            self.dropped_in_outage += len(items)
            return [Notice(NoticeKind.TELEMETRY_DROPPING)] if first else []
        return [SendSignal(o.type, o.data, optional=True) for o in items]

    def inherit(self, old: HandOver) -> None:
        """A reload: the old engine's view of the session (``bridge.core.engine.handover``)."""
        self.own_id, self.linked = old.own_id, old.linked
        for conn in old.members:
            self.members.created(conn)
        self.hub_offset_ms = old.hub_offset_ms
        self.dropped_in_outage = old.dropped_in_outage
