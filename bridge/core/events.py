"""Events a session client hands to its user (`SessionClient.events()`), as frozen dataclasses.

They are pure values so that the bridge's core logic can be tested by feeding them in directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.signal import Connection


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal received from the hub.

    ``from_id`` is the sender's connection id, or None for a signal sent through the REST API.
    ``seq`` counts up per receiving connection; ``ts`` is the hub's receive time in ms since epoch.
    ``age_ms`` is the receiving client's estimate, at receipt, of how long ago the hub stamped ``ts``
    (the hub clock now, from the client's clock estimator - never the local wall clock - minus ``ts``;
    negative when the estimate is behind). The bridge engine judges a command's age from it alone.
    """

    type: str
    data: str
    from_id: str | None
    seq: int
    ts: int
    age_ms: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionCreated:
    connection: Connection


@dataclass(frozen=True, slots=True)
class ConnectionDestroyed:
    connection: Connection
    reason: str  # clientDisconnected | forceDisconnected | networkDisconnected


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The link to the hub dropped; the client is trying to resume. Connection id is kept."""


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The link is back and resumed under the same connection id."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The client is out of the session for good (left, forced out, or gave up reconnecting)."""

    reason: str


SessionEvent = Signal | ConnectionCreated | ConnectionDestroyed | Reconnecting | Reconnected | Disconnected
