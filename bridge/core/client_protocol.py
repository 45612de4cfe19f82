"""Wire protocol v1, client side: build client frames, parse hub frames (see DESIGN.md).

Pure: text in, typed values out, and the reverse. The I/O client (`bridge.session.client`) only moves
these strings over a WebSocket. Per signal the cost is one ``json.dumps`` to send and one
``json.loads`` plus a few type checks to receive.

Parsing never trusts the hub: a frame that is not a JSON object with a known ``op`` and well-typed
fields raises :class:`ProtocolError`, which the client logs and skips (it never crashes the link).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from bridge.core.events import ConnectionCreated, ConnectionDestroyed, Signal
from bridge.core.signal import Connection


class ProtocolError(ValueError):
    """A hub frame that does not follow wire protocol v1."""


# ---- client -> hub -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Resume:
    """What a client presents to take its connection back after a dropped link."""

    connection_id: str
    secret: str
    last_seq: int


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def connect_frame(token: str, resume: Resume | None = None) -> str:
    frame: dict[str, Any] = {"op": "connect", "token": token}
    if resume is not None:
        frame["resume"] = {"connection_id": resume.connection_id, "secret": resume.secret,
                           "last_seq": resume.last_seq}
    return _dumps(frame)


def signal_frame(id_: int, type_: str, data: str, to: str | None, retry: bool) -> str:
    """The one encode on the send path. ``to`` is left out for a broadcast."""
    if to is None:
        return _dumps({"op": "signal", "id": id_, "type": type_, "data": data, "retry": retry})
    return _dumps({"op": "signal", "id": id_, "type": type_, "data": data, "to": to, "retry": retry})


def with_queued_ms(frame: str, queued_ms: int) -> str:
    """``frame`` (a :func:`signal_frame`) saying it waited ``queued_ms`` in the client's queue before
    being written: the hub stamps its ``ts`` that much earlier (docs/protocol.md, "Signals")."""
    return frame if queued_ms <= 0 else f'{frame[:-1]},"queued_ms":{queued_ms:d}}}'


def ping_frame(id_: int) -> str:
    return _dumps({"op": "ping", "id": id_})


def disconnect_frame() -> str:
    return '{"op":"disconnect"}'


def force_disconnect_frame(id_: int, connection_id: str) -> str:
    return _dumps({"op": "force_disconnect", "id": id_, "connection_id": connection_id})


# ---- hub -> client -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Connected:
    """The hub's answer to ``connect``. On a resume, a hub that knows it sends ``last_id`` (the
    highest signal id it has processed for this connection) and ``nacks`` (the refusals among them
    given on the previous link); None from an older hub, which leaves the client to re-send.
    ``more``: the member list goes on in :class:`ConnectionsPage` frames, which follow at once (the
    client reads them all before it takes the connection: :func:`with_pages`). ``rate_limit``: the
    hub's per-connection signal rate limit, (signals a second, burst), from ``limits`` ``rate`` and
    ``burst``; None when the hub announces none (no limit, or an older hub)."""

    connection: Connection
    connections: tuple[Connection, ...]
    resume_secret: str
    resumed: bool
    server_time: int
    last_id: int | None = None
    nacks: tuple[Nack, ...] = ()
    more: bool = False
    rate_limit: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class ConnectionsPage:
    """One more page of the member list of a ``connected`` (``more``: another page follows)."""

    connections: tuple[Connection, ...]
    more: bool


def with_pages(hello: Connected, pages: list[ConnectionsPage]) -> Connected:
    """``hello`` with the members of the pages that followed it (the whole list, ``more`` false)."""
    members = [*hello.connections]
    for page in pages:
        members.extend(page.connections)
    return replace(hello, connections=tuple(members), more=False)


@dataclass(frozen=True, slots=True)
class Ack:
    id: int


@dataclass(frozen=True, slots=True)
class Nack:
    id: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Pong:
    id: int
    server_time: int


@dataclass(frozen=True, slots=True)
class HubError:
    """The hub refused the connect (401/403, or a resume it no longer knows) and will close."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class HubDisconnected:
    """The hub is closing this connection itself (forced out, ...)."""

    reason: str


HubFrame = (Connected | ConnectionsPage | Ack | Nack | Pong | HubError | HubDisconnected
            | Signal | ConnectionCreated | ConnectionDestroyed)


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{obj.get('op')}: {key!r} must be an integer")
    return value


def _str(obj: dict[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"{obj.get('op')}: {key!r} must be a string")
    return value


def _conn(obj: Any) -> Connection:
    try:
        return Connection.from_wire(obj)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def _members(f: dict[str, Any]) -> tuple[Connection, ...]:
    others = f.get("connections", [])
    if not isinstance(others, list):
        raise ProtocolError(f"{f.get('op')}: 'connections' must be a list")
    return tuple(_conn(c) for c in others)


def _more(f: dict[str, Any]) -> bool:
    more = f.get("more", False)
    if not isinstance(more, bool):
        raise ProtocolError(f"{f.get('op')}: 'more' must be true or false")
    return more


def _connected(f: dict[str, Any]) -> Connected:
    others = _members(f)
    last_id: int | None = None
    nacks: tuple[Nack, ...] = ()
    if "last_id" in f:
        last_id = _int(f, "last_id")
        refused = f.get("nacks", [])
        if not isinstance(refused, list) or not all(isinstance(n, dict) for n in refused):
            raise ProtocolError("connected: 'nacks' must be a list of objects")
        nacks = tuple(_nack(dict(n, op="connected nack")) for n in refused)
    return Connected(_conn(f.get("connection")), others,
                     _str(f, "resume_secret", ""), f.get("resumed") is True, _int(f, "server_time"),
                     last_id, nacks, _more(f), _rate_limit(f.get("limits")))


def _rate_limit(limits: Any) -> tuple[float, float] | None:
    """(rate, burst) from a ``connected`` frame's ``limits``; None when it has no ``rate``."""
    if not isinstance(limits, dict) or "rate" not in limits:
        return None
    out: list[float] = []
    for value in (limits["rate"], limits.get("burst", limits["rate"])):
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ProtocolError("connected: limits 'rate' and 'burst' must be positive numbers")
        out.append(float(value))
    return out[0], out[1]


def _nack(f: dict[str, Any]) -> Nack:
    return Nack(_int(f, "id"), _int(f, "code"), _str(f, "message", ""))


def _signal(f: dict[str, Any]) -> Signal:
    sender = f.get("from")
    if sender is not None and not isinstance(sender, str):
        raise ProtocolError("signal: 'from' must be a string or null")
    return Signal(_str(f, "type", ""), _str(f, "data", ""), sender, _int(f, "seq"), _int(f, "ts"))


_PARSERS: dict[str, Callable[[dict[str, Any]], HubFrame]] = {
    "signal": _signal,
    "ack": lambda f: Ack(_int(f, "id")),
    "nack": _nack,
    "pong": lambda f: Pong(_int(f, "id"), _int(f, "server_time")),
    "connected": _connected,
    "connections": lambda f: ConnectionsPage(_members(f), _more(f)),
    "connection_created": lambda f: ConnectionCreated(_conn(f.get("connection"))),
    "connection_destroyed": lambda f: ConnectionDestroyed(_conn(f.get("connection")),
                                                          _str(f, "reason", "")),
    "error": lambda f: HubError(_int(f, "code"), _str(f, "message", "")),
    "disconnected": lambda f: HubDisconnected(_str(f, "reason", "")),
}


def parse_hub_frame(text: str | bytes) -> HubFrame:
    """Decode one hub frame. Raises ProtocolError when it is not valid wire protocol v1."""
    try:
        frame = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError("frame is not a JSON object")
    op = frame.get("op")
    parser = _PARSERS.get(op) if isinstance(op, str) else None
    if parser is None:
        raise ProtocolError(f"unknown op {op!r}")
    return parser(frame)


class SeqFilter:
    """Duplicate suppression by the hub's per-receiver ``seq``.

    The hub numbers the signals it delivers to one connection 1, 2, 3, ...; after a resume it replays
    those with ``seq > last_seq``. A signal whose seq is not above the last one accepted was already
    delivered (a replay overlapping what arrived before the drop) and is dropped.
    """

    def __init__(self) -> None:
        self.last_seq = 0
        self.duplicates = 0

    def accept(self, seq: int) -> bool:
        if seq <= self.last_seq:
            self.duplicates += 1
            return False
        self.last_seq = seq
        return True


# ---- signals awaiting their ack ------------------------------------------------------------------

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class Outgoing(Generic[T]):
    """One signal between ``signal()`` and the hub's answer. The frame is encoded once and keeps its
    id across re-sends; ``ticket`` is whatever the I/O side resolves on the answer (a future);
    ``issued`` is when ``signal()`` was called (the caller's monotonic clock, seconds), from which a
    re-sent or queued frame says how long it waited (:meth:`Outbox.frame_at`)."""

    id: int
    frame: str
    retry: bool
    ticket: T
    issued: float = 0.0


class Outbox(Generic[T]):
    """Client-side bookkeeping of signals: ids, in flight (sent, unanswered), queued (for after a
    resume), and what a dropped link does to them.

    Ids count up over the client's whole life, not per link, so that pings and requests never
    collide with signals, and so that the ``last_id`` of a resumed ``connected`` (the highest signal
    id the hub has processed for this connection) sorts what was in flight at the drop: at or below
    it, processed (only the answer was lost; :meth:`resumed` hands them back to be settled); above
    it, never seen, re-sent. Contract: send what :meth:`next_queued` returns before anything new
    while :attr:`has_queued` is true, so order is kept per sender.
    """

    def __init__(self) -> None:
        self.last_id = 0
        self._inflight: dict[int, Outgoing[T]] = {}
        self._queue: deque[Outgoing[T]] = deque()

    def new_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def new(self, type_: str, data: str, to: str | None, retry: bool, ticket: T,
            now: float = 0.0) -> Outgoing[T]:
        """A new signal issued at ``now`` (monotonic seconds)."""
        id_ = self.new_id()
        return Outgoing(id_, signal_frame(id_, type_, data, to, retry), retry, ticket, now)

    @staticmethod
    def frame_at(out: Outgoing[T], now: float) -> str:
        """The frame to write for ``out`` at ``now``: one that waited (queued during an outage, behind
        a flush, or re-sent after a drop) carries ``queued_ms``, so the hub's ``ts`` is the time it was
        issued and a stale guard downstream sees its true age. Within a millisecond: the plain frame."""
        return with_queued_ms(out.frame, int((now - out.issued) * 1000))

    def sent(self, out: Outgoing[T]) -> None:
        """Record ``out`` as written to the current link (call before the write)."""
        self._inflight[out.id] = out

    @property
    def awaiting_answer(self) -> int:
        """Signals written to the current link and not yet answered."""
        return len(self._inflight)

    def enqueue(self, out: Outgoing[T]) -> None:
        self._queue.append(out)

    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    def next_queued(self) -> Outgoing[T] | None:
        return self._queue.popleft() if self._queue else None

    def answered(self, id_: int) -> Outgoing[T] | None:
        """The signal an ack/nack with ``id_`` answers, or None (not a signal, or already settled)."""
        return self._inflight.pop(id_, None)

    def link_lost(self) -> list[Outgoing[T]]:
        """The link dropped before these were answered. Retry ones go back to the head of the queue,
        in id order (to be re-sent after the resume); the others are returned, to fail with 500: the
        hub may or may not have relayed them, and they must not go out late."""
        pending = sorted(self._inflight.values(), key=lambda o: o.id)
        self._inflight.clear()
        self._queue.extendleft(reversed([o for o in pending if o.retry]))
        return [o for o in pending if not o.retry]

    def resumed(self, last_id: int) -> list[Outgoing[T]]:
        """The hub resumed the connection having processed every signal id up to ``last_id``: the
        queued signals at or below it are taken out (to be settled with the hub's answer, an ack
        unless it sent a nack); the others stay queued, to be re-sent."""
        done = [o for o in self._queue if o.id <= last_id]
        if done:
            self._queue = deque(o for o in self._queue if o.id > last_id)
        return done

    def clear(self) -> list[Outgoing[T]]:
        """The session ended: everything still pending, to fail."""
        everything = [*self._inflight.values(), *self._queue]
        self._inflight.clear()
        self._queue.clear()
        return everything
