"""The session client's link state machine, as a table.

Theory of operation
-------------------
A session client is in exactly one of four states:

``CONNECTING``
    The first link to the hub is being opened and authenticated. Nothing has been promised to the
    user yet: a failure here is reported to the caller of ``connect()`` and the machine goes to
    ``CLOSED`` (there is no connection id to resume).
``CONNECTED``
    The hub answered ``connected``; signals go straight out and await their ack.
``RECONNECTING``
    The link dropped (transport error, or silence longer than ``link_timeout_s``). The connection id
    is kept for the hub's grace window; the client retries with capped exponential backoff and
    ``resume``. ``retry`` signals are queued, others fail at once with 500.
``CLOSED``
    Final. Reached by a clean ``disconnect()``, by the hub putting us out (``disconnected``), by the
    hub refusing a resume (grace window over), or by giving up after ``give_up_s``.

Inputs are :class:`LinkEvent` values. :data:`TRANSITIONS` maps ``(state, event)`` to the next state
and to what the user is told (:class:`Notice`); a pair missing from the table is a bug in the caller
and raises :class:`LinkStateError`. Everything that changes the link state goes through
:meth:`LinkMachine.handle`, so the rules are all in this table and nowhere else. ``CLOSED`` absorbs
every event, because shutdown races (a transport error arriving after ``disconnect()``) are normal.

The machine is driven by :class:`bridge.core.client.session.ClientSession` only (the wait before each
reconnection attempt is :func:`bridge.core.backoff.backoff_delay`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class LinkEvent(enum.Enum):
    UP = "up"                # the hub answered `connected` (new connection or resumed)
    LOST = "lost"            # the transport failed or went silent; also a failed reconnect attempt
    REFUSED = "refused"      # the hub answered `error` to connect/resume (bad token, grace window over)
    GAVE_UP = "gave_up"      # give_up_s passed while reconnecting
    CLOSE = "close"          # we left (disconnect()) or the hub put us out (`disconnected`)


class Notice(enum.Enum):
    """What the client tells its user about a transition (mapped to a SessionEvent by the I/O side)."""

    NONE = "none"
    RECONNECTING = "reconnecting"
    RECONNECTED = "reconnected"
    DISCONNECTED = "disconnected"


class LinkStateError(RuntimeError):
    """An event that cannot happen in the current state: a bug in the client, not in the network."""


@dataclass(frozen=True, slots=True)
class Transition:
    to: LinkState
    notice: Notice = Notice.NONE


_S = LinkState
_E = LinkEvent

#: (state, event) -> transition. CLOSED absorbs every event (see the module docstring).
TRANSITIONS: dict[tuple[LinkState, LinkEvent], Transition] = {
    (_S.CONNECTING, _E.UP): Transition(_S.CONNECTED),
    # A first connection that fails is an error for the caller of connect(), not an event.
    (_S.CONNECTING, _E.LOST): Transition(_S.CLOSED),
    (_S.CONNECTING, _E.REFUSED): Transition(_S.CLOSED),
    (_S.CONNECTING, _E.CLOSE): Transition(_S.CLOSED),

    (_S.CONNECTED, _E.LOST): Transition(_S.RECONNECTING, Notice.RECONNECTING),
    (_S.CONNECTED, _E.CLOSE): Transition(_S.CLOSED, Notice.DISCONNECTED),

    (_S.RECONNECTING, _E.UP): Transition(_S.CONNECTED, Notice.RECONNECTED),
    # Another failed attempt: Reconnecting was announced once, at the drop.
    (_S.RECONNECTING, _E.LOST): Transition(_S.RECONNECTING),
    (_S.RECONNECTING, _E.REFUSED): Transition(_S.CLOSED, Notice.DISCONNECTED),
    (_S.RECONNECTING, _E.GAVE_UP): Transition(_S.CLOSED, Notice.DISCONNECTED),
    (_S.RECONNECTING, _E.CLOSE): Transition(_S.CLOSED, Notice.DISCONNECTED),
    **{(_S.CLOSED, e): Transition(_S.CLOSED) for e in LinkEvent},
}


class LinkMachine:
    """The current link state; change it only through :meth:`handle`."""

    def __init__(self) -> None:
        self.state = LinkState.CONNECTING

    def handle(self, event: LinkEvent) -> Notice:
        """Apply ``event``; return what to tell the user. Raises LinkStateError for an impossible pair."""
        try:
            transition = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise LinkStateError(f"link event {event.value!r} in state {self.state.value!r}") from None
        self.state = transition.to
        return transition.notice

    @property
    def connected(self) -> bool:
        return self.state is LinkState.CONNECTED

    @property
    def queues_retry_signals(self) -> bool:
        """True while a signal with retry would be queued rather than sent or refused."""
        return self.state is LinkState.RECONNECTING

