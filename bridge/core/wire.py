"""Wire protocol v1, hub side: client frames in (parsed and checked), hub frames out (JSON text).

Contract (see shared/DESIGN.md and docs/protocol.md): one JSON object per text frame with an ``op``.
:func:`parse_client_frame` turns the text of a frame into one of the frozen dataclasses below or raises
:class:`WireError` with the code and message to answer (400, or 413 for a frame over MAX_FRAME_BYTES),
and never raises anything else, whatever the text. A frame it returns is well-formed, and every string
in it is valid Unicode text that can be written out again (JSON's ``"\ud800"`` escape decodes to a lone
surrogate, which no UTF-8 encoder accepts: such a frame is refused here, before the hub numbers,
buffers or relays anything). Whether a frame is *allowed* (role, rate, ``to`` in the session,
type/data limits) is the hub's business.

Hub frames are built as strings. A signal is encoded once per send: :class:`SignalBody` holds the
JSON of everything after ``seq``, and :meth:`SignalBody.frame` splices a receiver's ``seq`` in front,
so a broadcast to N receivers costs one ``json.dumps`` and N string concatenations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.core.signal import (
    BAD_REQUEST,
    MAX_DATA_BYTES,
    MAX_FRAME_BYTES,
    MAX_TYPE_CHARS,
    TOO_LARGE,
    Connection,
)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads


class WireError(Exception):
    """A client frame that cannot be acted on. ``frame_id`` is the frame's ``id`` when it had a usable
    one (answer with a ``nack``), else None (answer with an ``error`` frame)."""

    def __init__(self, code: int, message: str, frame_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id


@dataclass(frozen=True, slots=True)
class Resume:
    connection_id: str
    secret: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class ConnectFrame:
    token: str
    resume: Resume | None


@dataclass(frozen=True, slots=True)
class SignalFrame:
    """``type``/``data`` are as received (strings, not yet checked against the limits). ``queued_ms``
    is how long the sender says the signal waited in its own queue before this frame (0 if absent):
    the hub stamps ``ts`` that much earlier, so that a stale guard judges the age the operator sees."""

    id: int
    type: str
    data: str
    to: str | None
    retry: bool
    queued_ms: int = 0


@dataclass(frozen=True, slots=True)
class PingFrame:
    id: int


@dataclass(frozen=True, slots=True)
class DisconnectFrame:
    pass


@dataclass(frozen=True, slots=True)
class ForceDisconnectFrame:
    """Moderator-only extension: force ``connection_id`` out of the session."""

    id: int
    connection_id: str


ClientFrame = ConnectFrame | SignalFrame | PingFrame | DisconnectFrame | ForceDisconnectFrame


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def is_text(s: str) -> bool:
    """True when ``s`` can be encoded as UTF-8 (no lone surrogates). ASCII is checked without copying."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(v: str, what: str, fid: int | None = None) -> str:
    if not is_text(v):
        raise WireError(BAD_REQUEST, f"{what} is not valid UTF-8 text (a lone surrogate escape?)", fid)
    return v


def parse_client_frame(text: str) -> ClientFrame:
    """Parse the text of one client frame. Raises :class:`WireError` for anything unusable.

    Frames longer than MAX_FRAME_BYTES are refused (413) before JSON parsing.
    """
    if len(text) > MAX_FRAME_BYTES or (len(text) * 4 > MAX_FRAME_BYTES
                                       and len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES):
        raise WireError(TOO_LARGE, f"frame larger than {MAX_FRAME_BYTES} bytes")
    try:
        obj = _loads(text)
    except (ValueError, RecursionError) as e:   # RecursionError: "[" * 100000 fits in a frame
        raise WireError(BAD_REQUEST, f"frame is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise WireError(BAD_REQUEST, "frame must be a JSON object")
    op = obj.get("op")
    if op == "signal":
        return _signal(obj)
    if op == "ping":
        fid = _int(obj.get("id"))
        if fid is None:
            raise WireError(BAD_REQUEST, "ping needs an integer 'id'")
        return PingFrame(fid)
    if op == "connect":
        return _connect(obj)
    if op == "disconnect":
        return DisconnectFrame()
    if op == "force_disconnect":
        fid = _int(obj.get("id"))
        if fid is None:
            raise WireError(BAD_REQUEST, "force_disconnect needs an integer 'id'")
        cid = obj.get("connection_id")
        if not isinstance(cid, str) or not cid:
            raise WireError(BAD_REQUEST, "force_disconnect needs a 'connection_id' string", fid)
        return ForceDisconnectFrame(fid, _text(cid, "force_disconnect 'connection_id'", fid))
    if not isinstance(op, str):
        raise WireError(BAD_REQUEST, "frame has no 'op' string")
    raise WireError(BAD_REQUEST, f"unknown op {op[:40]!r}", _int(obj.get("id")))


def _signal(obj: dict[str, Any]) -> SignalFrame:
    fid = _int(obj.get("id"))
    if fid is None:
        raise WireError(BAD_REQUEST, "signal needs an integer 'id'")
    type_ = obj.get("type", "")
    data = obj.get("data", "")
    to = obj.get("to")
    retry = obj.get("retry", True)
    # Type and size checks live in check_signal (the hub calls it); only shapes are checked here.
    if type_ is None:
        type_ = ""
    if data is None:
        data = ""
    if not isinstance(type_, str):
        raise WireError(BAD_REQUEST, "signal 'type' must be a string", fid)
    if not isinstance(data, str):
        raise WireError(BAD_REQUEST, "signal 'data' must be a string", fid)
    if to is not None and (not isinstance(to, str) or not to):
        raise WireError(BAD_REQUEST, "signal 'to' must be a connection id string or null", fid)
    if not isinstance(retry, bool):
        raise WireError(BAD_REQUEST, "signal 'retry' must be true or false", fid)
    queued = obj.get("queued_ms", 0)
    if _int(queued) is None or queued < 0:
        raise WireError(BAD_REQUEST, "signal 'queued_ms' must be an integer >= 0", fid)
    if not (type_.isascii() and data.isascii()):  # the common case costs two C calls, no more
        _text(type_, "signal 'type'", fid)
        _text(data, "signal 'data'", fid)
    if to is not None:
        _text(to, "signal 'to'", fid)
    return SignalFrame(fid, type_, data, to, retry, queued)


def _connect(obj: dict[str, Any]) -> ConnectFrame:
    token = obj.get("token")
    if not isinstance(token, str) or not token:
        raise WireError(BAD_REQUEST, "connect needs a 'token' string")
    res = obj.get("resume")
    _text(token, "connect 'token'")
    if res is None:
        return ConnectFrame(token, None)
    if not isinstance(res, dict):
        raise WireError(BAD_REQUEST, "connect 'resume' must be an object")
    cid, secret, last = res.get("connection_id"), res.get("secret"), _int(res.get("last_seq"))
    if not isinstance(cid, str) or not isinstance(secret, str) or last is None or last < 0:
        raise WireError(BAD_REQUEST, "resume needs 'connection_id', 'secret' strings and 'last_seq' >= 0")
    return ConnectFrame(token, Resume(_text(cid, "resume 'connection_id'"), _text(secret, "resume 'secret'"),
                                      last))


# ---- hub frames ---------------------------------------------------------------------------------

LIMITS = {"max_type": MAX_TYPE_CHARS, "max_data": MAX_DATA_BYTES}


#: Every frame of a join (``connected`` and the ``connections`` pages after it) stays within this many
#: bytes of UTF-8, so that a client with a 64 KiB frame limit joins a session of any size.
JOIN_FRAME_BUDGET = MAX_FRAME_BYTES - 1024
_MORE = ',"more":true}'


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


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
    head, _, tail = _dumps(frame).partition('"connections":[]')
    members = [c.wire_json() for c in others]
    pages = _pages(members, JOIN_FRAME_BUDGET - _utf8_len(head) - _utf8_len(tail) - len(_MORE) - 20,
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
        size = _utf8_len(m) + 1  # its comma
        if size > room and (pages[-1] or len(pages) == 1):
            pages.append([])
            room = budget
        pages[-1].append(m)
        room -= size
    return pages


def error(code: int, message: str) -> str:
    return _dumps({"op": "error", "code": code, "message": message})


def ack(frame_id: int) -> str:
    return f'{{"op":"ack","id":{frame_id:d}}}'


def nack(frame_id: int, code: int, message: str) -> str:
    return _dumps({"op": "nack", "id": frame_id, "code": code, "message": message})


def pong(frame_id: int, server_time: int) -> str:
    return f'{{"op":"pong","id":{frame_id:d},"server_time":{server_time:d}}}'


def connection_created(c: Connection) -> str:
    return _dumps({"op": "connection_created", "connection": c.to_wire()})


def connection_destroyed(c: Connection, reason: str) -> str:
    return _dumps({"op": "connection_destroyed", "connection": c.to_wire(), "reason": reason})


def disconnected(reason: str) -> str:
    return _dumps({"op": "disconnected", "reason": reason})


class SignalBody:
    """One signal encoded once; :meth:`frame` gives the frame for a receiver's ``seq``."""

    __slots__ = ("_tail",)

    def __init__(self, type_: str, data: str, from_id: str | None, ts: int) -> None:
        # '{"op":"signal","seq":' + seq + this tail; key order is that of DESIGN.md.
        sender = "null" if from_id is None else _dumps(from_id)
        self._tail = f',"type":{_dumps(type_)},"data":{_dumps(data)},"from":{sender},"ts":{ts:d}}}'

    def frame(self, seq: int) -> str:
        return '{"op":"signal","seq":' + str(seq) + self._tail
