"""Who is in the session, as the engine knows it: from ConnectionCreated / ConnectionDestroyed only.

The session client emits ConnectionCreated for everyone present at its first join and the difference
on every resume, and ConnectionDestroyed for each one who leaves, so this table is the client's view
without the engine ever asking the client. A new connection of the bridge (the client gave up and a
new one joins) starts a new table (``clear``): its own join lists everyone again.

A signal from a connection the table does not hold (``from`` set, but never announced: a race the hub
does not make, or a hostile or buggy peer) is the engine's decision, made here: its sender is a
role-less, data-less, token-less stand-in. So it can never pass as a REST sender (``allow_rest``) nor
as any role (``from_roles``, the e-stop reset, the lease), no ``from_data`` pattern that needs text
matches it, and its rate limit is keyed on its connection id. It is counted (``unknown_senders``).
"""

from __future__ import annotations

from bridge.core.signal import Connection


def stand_in(connection_id: str) -> Connection:
    """The sender of a signal from a connection the engine was never told of (see the docstring)."""
    return Connection(connection_id, "", "", 0)


class Members:
    """The session's members by connection id (not the bridge's own connection)."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, Connection] = {}

    def created(self, conn: Connection) -> None:
        self._by_id[conn.id] = conn

    def destroyed(self, connection_id: str) -> None:
        self._by_id.pop(connection_id, None)

    def clear(self) -> None:
        self._by_id.clear()

    def get(self, connection_id: str) -> Connection | None:
        """The member, or None when the engine was never told of it."""
        return self._by_id.get(connection_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def snapshot(self) -> tuple[Connection, ...]:
        return tuple(self._by_id.values())
