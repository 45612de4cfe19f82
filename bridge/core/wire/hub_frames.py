"""Wire protocol v1, the frames the hub sends: the hub's encoders, their dataclasses, the client's
parser (see shared/DESIGN.md and docs/protocol.md).

Hub frames are built as strings. A signal is encoded once per send: :class:`SignalBody` holds the
JSON of everything after ``seq``, and :meth:`SignalBody.frame` splices a receiver's ``seq`` in front,
so a broadcast to N receivers costs one ``json.dumps`` and N string concatenations.

:func:`parse_hub_frame` (the client's) never trusts the hub: a frame that is not a JSON object with a
known ``op`` and well-typed fields raises :class:`ProtocolError`, which the client logs and skips (it
never crashes the link). Per signal received: one ``json.loads`` and a few type checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bridge.core import jsontext
from bridge.core.events import ConnectionCreated, ConnectionDestroyed, Signal
from bridge.core.signal import MAX_DATA_BYTES, MAX_FRAME_BYTES, MAX_TYPE_CHARS, Connection
from bridge.core.wire.common import ProtocolError, dumps, utf8_len

# ---- the hub's encoders -------------------------------------------------------------------------

LIMITS = {"max_type": MAX_TYPE_CHARS, "max_data": MAX_DATA_BYTES}


#: Every frame of a join (``connected`` and the ``connections`` pages after it) stays within this many
#: bytes of UTF-8, so that a client with a 64 KiB frame limit joins a session of any size.
JOIN_FRAME_BUDGET = MAX_FRAME_BYTES - 1024
_MORE = ',"more":true}'

def connected_frames(me: Connection, others: list[Connection], resume_secret: str, resumed: bool,
                     server_time: int, last_id: int | None = None,
                     nacks: tuple[tuple[int, int, str], ...] = (), limits: dict[str, Any] = LIMITS
                     ) -> list[str]:
    """The answer to ``connect``: the ``connected`` frame, then as many ``connections`` pages as the
    member list needs (see docs/protocol.md, "Joining"). Send them in this order, before any other
    frame to that link. Each frame is at most JOIN_FRAME_BUDGET bytes; a page holds at least one
    connection (one connection is at most ~6 KB: 1000 characters of data, escaped).

    The member list goes in ``connected`` as far as it fits; when it does not, ``connected`` carries
    ``"more": true`` and ``{"op":"connections","connections":[...],"more":bool}`` pages follow, the
    last with ``"more": false``. A resumed connection passes ``last_id`` (the highest signal id
    processed for it) and the ``nacks`` (id, code, message) of its previous link: both are added to
    the ``connected`` frame (an addition to v1; clients that ignore them re-send and still work)."""
    frame: dict[str, object] = {
        "op": "connected", "connection": me.to_wire(), "connections": [],
        "resume_secret": resume_secret, "resumed": resumed, "server_time": server_time, "limits": limits}
    if last_id is not None:
        frame["last_id"] = last_id
        frame["nacks"] = [{"id": i, "code": code, "message": message} for i, code, message in nacks]
    # The key "connections":[] occurs once: inside JSON strings every '"' is escaped.
    head, _, tail = dumps(frame).partition('"connections":[]')
    members = [c.wire_json() for c in others]
    pages = _pages(members, JOIN_FRAME_BUDGET - utf8_len(head) - utf8_len(tail) - len(_MORE) - 20,
                   JOIN_FRAME_BUDGET - 64)
    first = f'{head}"connections":[{",".join(pages[0])}]{tail}'
    out = [first if len(pages) == 1 else first[:-1] + _MORE]
    for n, page in enumerate(pages[1:], 2):
        more = "true" if n < len(pages) else "false"
        out.append(f'{{"op":"connections","connections":[{",".join(page)}],"more":{more}}}')
    return out


def _pages(members: list[str], first_budget: int, budget: int) -> list[list[str]]:
    """Split encoded members into pages: the first within ``first_budget`` bytes (it may be empty),
    the others within ``budget``, each of those holding at least one member."""
    pages: list[list[str]] = [[]]
    room = first_budget
    for m in members:
        size = utf8_len(m) + 1  # its comma
        if size > room and (pages[-1] or len(pages) == 1):
            pages.append([])
            room = budget
        pages[-1].append(m)
        room -= size
    return pages


def error(code: int, message: str) -> str:
    return dumps({"op": "error", "code": code, "message": message})


def ack(frame_id: int) -> str:
    return f'{{"op":"ack","id":{frame_id:d}}}'


def nack(frame_id: int, code: int, message: str) -> str:
    return dumps({"op": "nack", "id": frame_id, "code": code, "message": message})


def pong(frame_id: int, server_time: int) -> str:
    return f'{{"op":"pong","id":{frame_id:d},"server_time":{server_time:d}}}'


def connection_created(c: Connection) -> str:
    return dumps({"op": "connection_created", "connection": c.to_wire()})


def connection_destroyed(c: Connection, reason: str) -> str:
    return dumps({"op": "connection_destroyed", "connection": c.to_wire(), "reason": reason})


def disconnected(reason: str) -> str:
    return dumps({"op": "disconnected", "reason": reason})


class SignalBody:
    """One signal encoded once; :meth:`frame` gives the frame for a receiver's ``seq``."""

    __slots__ = ("_tail",)

    def __init__(self, type_: str, data: str, from_id: str | None, ts: int) -> None:
        # '{"op":"signal","seq":' + seq + this tail; key order is that of DESIGN.md.
        sender = "null" if from_id is None else dumps(from_id)
        self._tail = f',"type":{dumps(type_)},"data":{dumps(data)},"from":{sender},"ts":{ts:d}}}'

    def frame(self, seq: int) -> str:
        return '{"op":"signal","seq":' + str(seq) + self._tail

    def fields(self) -> dict[str, Any]:
        """``type``, ``data``, ``from`` and ``ts`` decoded again (a shared store keeps them; not the
        hot path of the in-memory hub, which never calls it)."""
        out: dict[str, Any] = jsontext.frame_loads("{" + self._tail[1:])
        return out


# ---- the frames, parsed by the client ----------------------------------------------------------

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


def _signal(f: dict[str, Any], hub_now_ms: float | None = None) -> Signal:
    sender = f.get("from")
    if sender is not None and not isinstance(sender, str):
        raise ProtocolError("signal: 'from' must be a string or null")
    ts = _int(f, "ts")
    return Signal(_str(f, "type", ""), _str(f, "data", ""), sender, _int(f, "seq"), ts,
                  0 if hub_now_ms is None else round(hub_now_ms) - ts)


_PARSERS: dict[str, Callable[[dict[str, Any]], HubFrame]] = {
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


def parse_hub_frame(text: str | bytes, hub_now_ms: float | None = None) -> HubFrame:
    """Decode one hub frame. Raises ProtocolError (and nothing else) when it is not valid wire
    protocol v1. ``hub_now_ms``: the receiver's estimate of the hub's clock now (a signal's ``age_ms``
    is that minus its ``ts``; None: 0)."""
    try:
        frame = jsontext.frame_loads(text)   # orjson when installed (the fast extra)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: "[" * 100000
        raise ProtocolError(f"frame is not JSON: {type(exc).__name__}: {exc}"[:200]) from None
    if not isinstance(frame, dict):
        raise ProtocolError("frame is not a JSON object")
    op = frame.get("op")
    if op == "signal":  # the hot path: no table look-up
        return _signal(frame, hub_now_ms)
    parser = _PARSERS.get(op) if isinstance(op, str) else None
    if parser is None:
        raise ProtocolError(f"unknown op {op!r}"[:80])
    return parser(frame)


class JoinReader:
    """The hub's answer to ``connect``, read frame by frame: ``connected``, then the ``connections``
    pages that follow it at once when its member list did not fit (or the ``error`` refusing us)."""

    def __init__(self) -> None:
        self._hello: Connected | None = None
        self._pages: list[ConnectionsPage] = []

    def feed(self, text: str | bytes) -> Connected | HubError | None:
        """One frame of the answer: the whole answer once complete (the member list joined up), else
        None (read the next frame). Raises ProtocolError for a frame that does not belong here."""
        frame = parse_hub_frame(text)
        if self._hello is None:
            if isinstance(frame, HubError):
                return frame
            if not isinstance(frame, Connected):
                raise ProtocolError(f"expected 'connected', got {type(frame).__name__}")
            self._hello = frame
            return None if frame.more else frame
        if not isinstance(frame, ConnectionsPage):
            raise ProtocolError(f"expected a 'connections' page, got {type(frame).__name__}")
        self._pages.append(frame)
        return None if frame.more else with_pages(self._hello, self._pages)
