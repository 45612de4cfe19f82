"""The control lease: at most one operator drives at a time.

Theory of operation
-------------------
The lease is either FREE or HELD by one connection id. Four things can happen to it:

- ACQUIRE   a ``control.acquire`` signal arrived from a connection;
- RELEASE   a ``control.release`` signal arrived from a connection;
- DESTROYED the hub reported a connection destroyed (its reconnect grace window is over);
- COMMAND   a command signal arrived and the engine asks whether its sender may drive.

Who the event comes from matters only in three ways: it is the HOLDER, some OTHER connection, or a REST
sender (``from`` null: a server, which has no connection and so can never hold the lease). The whole
behaviour is the transition table ``_TABLE`` below: (state, event, who) -> (outcome kind, next state).
Every combination that can occur is in the table, and nothing outside this module changes the lease, so
the table is the complete specification (a test walks all of it).

Each call returns a :class:`LeaseOutcome` (a frozen dataclass): what happened, who holds the lease now,
who held it before. The engine turns outcomes into signals and actions: GRANTED / RELEASED /
CONTROLLER_LOST change the holder and are announced in ``bridge.status``; CONTROLLER_LOST also runs
``safety.on_controller_lost``; REFUSED / NOT_HOLDER may be answered to the sender; NO_LEASE refuses the
command (decision ``no_lease``).

A connection that merely loses its link keeps its id during the hub's grace window, and with it the
lease: only DESTROYED (the window is over) takes the lease away. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class LeaseState(Enum):
    FREE = "free"
    HELD = "held"


class LeaseEvent(Enum):
    ACQUIRE = "acquire"
    RELEASE = "release"
    DESTROYED = "destroyed"
    COMMAND = "command"


class Who(Enum):
    """The sender of an event relative to the lease."""

    HOLDER = "holder"
    OTHER = "other"
    REST = "rest"   # from null: never a holder


class OutcomeKind(StrEnum):
    GRANTED = "granted"                  # the sender holds the lease now (new holder)
    ALREADY_HELD = "already_held"        # acquire by the holder: nothing changes, say yes again
    REFUSED = "refused"                  # acquire while someone else holds it (or from REST)
    RELEASED = "released"                # the holder gave it up
    NOT_HOLDER = "not_holder"            # release by someone who does not hold it: nothing changes
    CONTROLLER_LOST = "controller_lost"  # the holder's connection was destroyed: lease free
    IGNORED = "ignored"                  # a non-holder's connection was destroyed: nothing to do
    ALLOWED = "allowed"                  # command from the holder
    NO_LEASE = "no_lease"                # command from anyone else


_S, _E, _W, _O = LeaseState, LeaseEvent, Who, OutcomeKind

#: (state, event, who) -> (outcome, next state). In FREE nobody is the HOLDER.
#: GRANTED makes the sender the holder; RELEASED and CONTROLLER_LOST clear it.
_TABLE: dict[tuple[LeaseState, LeaseEvent, Who], tuple[OutcomeKind, LeaseState]] = {
    (_S.FREE, _E.ACQUIRE, _W.OTHER): (_O.GRANTED, _S.HELD),
    (_S.FREE, _E.ACQUIRE, _W.REST): (_O.REFUSED, _S.FREE),
    (_S.HELD, _E.ACQUIRE, _W.HOLDER): (_O.ALREADY_HELD, _S.HELD),
    (_S.HELD, _E.ACQUIRE, _W.OTHER): (_O.REFUSED, _S.HELD),
    (_S.HELD, _E.ACQUIRE, _W.REST): (_O.REFUSED, _S.HELD),

    (_S.FREE, _E.RELEASE, _W.OTHER): (_O.NOT_HOLDER, _S.FREE),
    (_S.FREE, _E.RELEASE, _W.REST): (_O.NOT_HOLDER, _S.FREE),
    (_S.HELD, _E.RELEASE, _W.HOLDER): (_O.RELEASED, _S.FREE),
    (_S.HELD, _E.RELEASE, _W.OTHER): (_O.NOT_HOLDER, _S.HELD),
    (_S.HELD, _E.RELEASE, _W.REST): (_O.NOT_HOLDER, _S.HELD),

    (_S.FREE, _E.DESTROYED, _W.OTHER): (_O.IGNORED, _S.FREE),
    (_S.HELD, _E.DESTROYED, _W.HOLDER): (_O.CONTROLLER_LOST, _S.FREE),
    (_S.HELD, _E.DESTROYED, _W.OTHER): (_O.IGNORED, _S.HELD),

    (_S.FREE, _E.COMMAND, _W.OTHER): (_O.NO_LEASE, _S.FREE),
    (_S.FREE, _E.COMMAND, _W.REST): (_O.NO_LEASE, _S.FREE),
    (_S.HELD, _E.COMMAND, _W.HOLDER): (_O.ALLOWED, _S.HELD),
    (_S.HELD, _E.COMMAND, _W.OTHER): (_O.NO_LEASE, _S.HELD),
    (_S.HELD, _E.COMMAND, _W.REST): (_O.NO_LEASE, _S.HELD),
}

_CHANGES = frozenset({_O.GRANTED, _O.RELEASED, _O.CONTROLLER_LOST})


@dataclass(frozen=True, slots=True)
class LeaseOutcome:
    """What one event did. ``holder`` is the holder after the event, ``previous`` the one before
    (both None when the lease was/is free)."""

    kind: OutcomeKind
    holder: str | None
    previous: str | None

    @property
    def changed(self) -> bool:
        """The holder changed: announce it (``bridge.status``)."""
        return self.kind in _CHANGES

    @property
    def reason(self) -> str:
        """A short sentence for an answer to the sender or the audit log."""
        k = self.kind
        if k is _O.REFUSED:
            if self.holder is None:
                return "a REST sender cannot hold the control lease"
            return f"control lease held by {self.holder}"
        if k is _O.NOT_HOLDER:
            return "not the control lease holder"
        if k is _O.NO_LEASE:
            return ("control lease is free: acquire it first" if self.holder is None
                    else f"control lease held by {self.holder}")
        if k is _O.CONTROLLER_LOST:
            return f"controller {self.previous} lost"
        return k.value


class ControlLease:
    """The lease state machine. Methods take the sender's connection id (None for a REST sender)."""

    __slots__ = ("_holder",)

    def __init__(self) -> None:
        self._holder: str | None = None

    @property
    def holder(self) -> str | None:
        return self._holder

    @property
    def state(self) -> LeaseState:
        return LeaseState.FREE if self._holder is None else LeaseState.HELD

    def acquire(self, sender: str | None) -> LeaseOutcome:
        """Granted when free or already held by ``sender``; refused with the holder otherwise."""
        return self._step(LeaseEvent.ACQUIRE, sender)

    def release(self, sender: str | None) -> LeaseOutcome:
        """Only the holder may release; anyone else gets NOT_HOLDER and nothing changes."""
        return self._step(LeaseEvent.RELEASE, sender)

    def connection_destroyed(self, connection_id: str) -> LeaseOutcome:
        """The hub destroyed a connection: CONTROLLER_LOST when it held the lease, else IGNORED."""
        return self._step(LeaseEvent.DESTROYED, connection_id)

    def check_command(self, sender: str | None) -> LeaseOutcome:
        """May ``sender`` drive? ALLOWED for the holder, NO_LEASE for anyone else."""
        return self._step(LeaseEvent.COMMAND, sender)

    def _step(self, event: LeaseEvent, sender: str | None) -> LeaseOutcome:
        previous = self._holder
        if sender is None:
            who = Who.REST
        elif sender == previous:
            who = Who.HOLDER
        else:
            who = Who.OTHER
        kind, next_state = _TABLE[(self.state, event, who)]
        if next_state is LeaseState.FREE:
            self._holder = None
        elif kind is OutcomeKind.GRANTED:
            self._holder = sender
        return LeaseOutcome(kind, self._holder, previous)
