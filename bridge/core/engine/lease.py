"""The control lease: at most one operator drives at a time.

Theory of operation
-------------------
The lease is either FREE or HELD by one connection id. Five things can happen to it:

- ACQUIRE   a ``control.acquire`` signal arrived from a connection;
- RELEASE   a ``control.release`` signal arrived from a connection;
- DESTROYED the hub reported a connection destroyed (its reconnect grace window is over);
- COMMAND   a command signal arrived and the engine asks whether its sender may drive;
- EXPIRE    the holder has been idle for ``idle_timeout_s`` (no command of its let through, no
            acquire of its own again): ``expire(now)`` at or after ``deadline``.

Who the event comes from is one of: the HOLDER; a connection whose role may drive (``roles``: by
default the roles the config's rules let drive), either a MODERATOR or some OTHER one; a connection
whose role may not drive (BARRED: a lowest-privilege publisher cannot squat the lease); or a REST
sender (``from`` null: a server, which has no connection and so can never hold the lease). The role
matters only to ACQUIRE: for the other events a non-holder is OTHER. The whole behaviour is the
transition table ``_TABLE`` below: (state, event, who) -> (outcome kind, next state). Every combination
that can occur is in the table, and nothing outside this module changes the lease, so the table is the
complete specification (a test walks all of it).

A moderator that may drive takes a held lease over (TAKEN_OVER): a supervisor is never locked out by
an operator who holds the lease and does not drive, or does not let go.

Each call returns a :class:`LeaseOutcome` (a frozen dataclass): what happened, who holds the lease now,
who held it before. The engine turns outcomes into signals and actions: GRANTED / TAKEN_OVER /
RELEASED / CONTROLLER_LOST / EXPIRED change the holder and are announced in ``bridge.status``;
TAKEN_OVER, CONTROLLER_LOST and EXPIRED also run ``safety.on_controller_lost`` (the controller that was
driving is gone); REFUSED / FORBIDDEN / NOT_HOLDER may be answered to the sender; NO_LEASE refuses the command
(decision ``no_lease``).

A connection that merely loses its link keeps its id during the hub's grace window, and with it the
lease: only DESTROYED (the window is over) or EXPIRE takes the lease away. Pure: no I/O; the caller
passes ``now`` (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from bridge.core.engine.actions import SendSignal, ack_signal
from bridge.core.engine.params import decode_data
from bridge.core.events import Signal
from bridge.core.model import BridgeConfig, Rule
from bridge.core.signal import MODERATOR, SIGNALLING_ROLES


class LeaseState(Enum):
    FREE = "free"
    HELD = "held"


class LeaseEvent(Enum):
    ACQUIRE = "acquire"
    RELEASE = "release"
    DESTROYED = "destroyed"
    COMMAND = "command"
    EXPIRE = "expire"


class Who(Enum):
    """The sender of an event relative to the lease."""

    HOLDER = "holder"
    OTHER = "other"             # not the holder (for ACQUIRE: a role that may drive, not a moderator)
    MODERATOR = "moderator"     # ACQUIRE only: a moderator whose role may drive
    BARRED = "barred"           # ACQUIRE only: a role that may not drive (not in ``roles``)
    REST = "rest"               # from null: never a holder


class OutcomeKind(StrEnum):
    GRANTED = "granted"                  # the sender holds the lease now (new holder)
    TAKEN_OVER = "taken_over"            # a moderator took the lease from its holder
    ALREADY_HELD = "already_held"        # acquire by the holder: nothing changes, say yes again
    REFUSED = "refused"                  # acquire while someone else holds it (or from REST)
    FORBIDDEN = "forbidden"              # acquire from a role that may not drive (not in roles)
    RELEASED = "released"                # the holder gave it up
    NOT_HOLDER = "not_holder"            # release by someone who does not hold it: nothing changes
    CONTROLLER_LOST = "controller_lost"  # the holder's connection was destroyed: lease free
    EXPIRED = "expired"                  # the holder was idle for idle_timeout: lease free
    IGNORED = "ignored"                  # a non-holder's connection was destroyed: nothing to do
    ALLOWED = "allowed"                  # command from the holder
    NO_LEASE = "no_lease"                # command from anyone else


_S, _E, _W, _O = LeaseState, LeaseEvent, Who, OutcomeKind

#: (state, event, who) -> (outcome, next state). In FREE nobody is the HOLDER; MODERATOR and BARRED
#: occur only with ACQUIRE; EXPIRE is only ever the holder's. GRANTED and TAKEN_OVER make the sender
#: the holder; RELEASED, CONTROLLER_LOST and EXPIRED clear it.
_TABLE: dict[tuple[LeaseState, LeaseEvent, Who], tuple[OutcomeKind, LeaseState]] = {
    (_S.FREE, _E.ACQUIRE, _W.OTHER): (_O.GRANTED, _S.HELD),
    (_S.FREE, _E.ACQUIRE, _W.MODERATOR): (_O.GRANTED, _S.HELD),
    (_S.FREE, _E.ACQUIRE, _W.BARRED): (_O.FORBIDDEN, _S.FREE),
    (_S.FREE, _E.ACQUIRE, _W.REST): (_O.REFUSED, _S.FREE),
    (_S.HELD, _E.ACQUIRE, _W.HOLDER): (_O.ALREADY_HELD, _S.HELD),
    (_S.HELD, _E.ACQUIRE, _W.OTHER): (_O.REFUSED, _S.HELD),
    (_S.HELD, _E.ACQUIRE, _W.MODERATOR): (_O.TAKEN_OVER, _S.HELD),
    (_S.HELD, _E.ACQUIRE, _W.BARRED): (_O.FORBIDDEN, _S.HELD),
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

    (_S.HELD, _E.EXPIRE, _W.HOLDER): (_O.EXPIRED, _S.FREE),
}

_CHANGES = frozenset({_O.GRANTED, _O.TAKEN_OVER, _O.RELEASED, _O.CONTROLLER_LOST, _O.EXPIRED})
#: The controller that was driving is gone: the engine runs ``safety.on_controller_lost``.
_LOST = frozenset({_O.TAKEN_OVER, _O.CONTROLLER_LOST, _O.EXPIRED})


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
    def controller_lost(self) -> bool:
        """The connection that held the lease lost it without giving it back: make the robot safe."""
        return self.kind in _LOST

    @property
    def reason(self) -> str:
        """A short sentence for an answer to the sender or the audit log."""
        k = self.kind
        if k is _O.REFUSED:
            return f"control lease held by {self.holder}" if self.holder is not None else \
                "a REST sender cannot hold the control lease"
        if k is _O.FORBIDDEN:
            return "this connection's role may not hold the control lease (control.roles)"
        if k is _O.TAKEN_OVER:
            return f"control lease taken over from {self.previous}"
        if k is _O.EXPIRED:
            return f"control lease of {self.previous} expired (idle)"
        if k is _O.NOT_HOLDER:
            return "not the control lease holder"
        if k is _O.NO_LEASE:
            return ("control lease is free: acquire it first" if self.holder is None
                    else f"control lease held by {self.holder}")
        if k is _O.CONTROLLER_LOST:
            return f"controller {self.previous} lost"
        return k.value


class ControlLease:
    """The lease state machine. Methods take the sender's connection id (None for a REST sender) and,
    where time matters, ``now`` (monotonic seconds).

    ``roles``: the roles that may hold the lease; ``idle_timeout_s``: how long the holder may go
    without a command let through (or an acquire of its own) before the lease expires (None: never)."""

    __slots__ = ("_active_at", "_holder", "_idle_s", "_roles")

    def __init__(self, roles: frozenset[str], idle_timeout_s: float | None = None) -> None:
        self._roles = roles
        self._idle_s = idle_timeout_s
        self._holder: str | None = None
        self._active_at = 0.0

    @property
    def holder(self) -> str | None:
        return self._holder

    @property
    def state(self) -> LeaseState:
        return LeaseState.FREE if self._holder is None else LeaseState.HELD

    @property
    def deadline(self) -> float | None:
        """When the held lease expires unless its holder is active again (None: free, or no timeout)."""
        if self._holder is None or self._idle_s is None:
            return None
        return self._active_at + self._idle_s

    def acquire(self, sender: str | None, role: str | None, now: float) -> LeaseOutcome:
        """Granted when free (or already held by ``sender``) to a role that may drive; taken over by
        such a moderator; refused, with the holder, otherwise."""
        if sender is None or sender == self._holder:
            who = Who.REST if sender is None else Who.HOLDER
        elif role not in self._roles:
            who = Who.BARRED
        else:
            who = Who.MODERATOR if role == MODERATOR else Who.OTHER
        return self._step(LeaseEvent.ACQUIRE, sender, who, now)

    def release(self, sender: str | None) -> LeaseOutcome:
        """Only the holder may release; anyone else gets NOT_HOLDER and nothing changes."""
        return self._step(LeaseEvent.RELEASE, sender, self._who(sender), 0.0)

    def connection_destroyed(self, connection_id: str) -> LeaseOutcome:
        """The hub destroyed a connection: CONTROLLER_LOST when it held the lease, else IGNORED."""
        return self._step(LeaseEvent.DESTROYED, connection_id, self._who(connection_id), 0.0)

    def check_command(self, sender: str | None, now: float) -> LeaseOutcome:
        """May ``sender`` drive? ALLOWED for the holder (which keeps the lease from expiring), NO_LEASE
        for anyone else."""
        return self._step(LeaseEvent.COMMAND, sender, self._who(sender), now)

    def expire(self, now: float) -> LeaseOutcome | None:
        """EXPIRED (the lease is free) when ``now`` has reached ``deadline``; else None."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        return self._step(LeaseEvent.EXPIRE, self._holder, Who.HOLDER, now)

    def inherit(self, holder: str | None, now: float) -> None:
        """A config reload: this (new) lease starts held by ``holder`` (the old lease's), idle from
        ``now``. Not an event (nothing changed for the session), so it is outside the table."""
        self._holder, self._active_at = holder, now

    def _who(self, sender: str | None) -> Who:
        if sender is None:
            return Who.REST
        return Who.HOLDER if sender == self._holder else Who.OTHER

    def _step(self, event: LeaseEvent, sender: str | None, who: Who, now: float) -> LeaseOutcome:
        previous = self._holder
        kind, next_state = _TABLE[(self.state, event, who)]
        if next_state is LeaseState.FREE:
            self._holder = None
        elif kind in (OutcomeKind.GRANTED, OutcomeKind.TAKEN_OVER, OutcomeKind.ALREADY_HELD,
                      OutcomeKind.ALLOWED):
            # A new holder, or the holder active again: the idle time starts over.
            self._holder, self._active_at = sender, now
        return LeaseOutcome(kind, self._holder, previous)



def lease_answer(outcome: LeaseOutcome, sig: Signal, to: str) -> SendSignal:
    """The ``bridge.ack`` answering an acquire or release signal (a take-over is a grant to the
    sender; the reason names the previous holder)."""
    try:
        data: Any = decode_data(sig.data)
    except ValueError:
        data = None
    status = OutcomeKind.GRANTED if outcome.kind is OutcomeKind.TAKEN_OVER else outcome.kind
    reason = "" if outcome.kind in (OutcomeKind.GRANTED, OutcomeKind.RELEASED,
                                    OutcomeKind.ALREADY_HELD) else outcome.reason
    return ack_signal(data, sig.seq, status.value, reason, to)


def driving_roles(rules: Iterable[Rule]) -> frozenset[str]:
    """Every role some rule lets drive (a rule without ``from_roles`` lets every signalling role
    drive): who may hold the lease unless ``control.roles`` says otherwise."""
    return frozenset().union(*(r.from_roles if r.from_roles is not None else SIGNALLING_ROLES
                               for r in rules))


def lease_roles(config: BridgeConfig) -> frozenset[str]:
    """The roles that may hold ``config``'s lease: ``control.roles``, else ``driving_roles`` of its rules."""
    roles = config.control.roles
    return driving_roles(config.rules) if roles is None else roles
