"""Wire protocol v1, the frames a client sends: their dataclasses, the hub's parser, the client's
encoders (see shared/DESIGN.md and docs/protocol.md).

Contract: one JSON object per text frame with an ``op``. :func:`parse_client_frame` (the hub's) turns
the text of a frame into one of the frozen dataclasses below or raises :class:`WireError` with the code
and message to answer (400, or 413 for a frame over MAX_FRAME_BYTES), and never raises anything else,
whatever the text. A frame it returns is well-formed, and every string in it is valid Unicode text
that can be written out again (JSON's ``"\ud800"`` escape decodes to a lone surrogate, which no UTF-8
encoder accepts: such a frame is refused here, before the hub numbers, buffers or relays anything).
Whether a frame is *allowed* (role, rate, ``to`` in the session, type/data limits) is the hub's
business.

The encoders (``connect_frame``, ``signal_frame``, ...) are the client's: one ``json.dumps`` per signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.core import jsontext
from bridge.core.signal import BAD_REQUEST, MAX_FRAME_BYTES, TOO_LARGE
from bridge.core.wire.common import WireError, dumps, is_text
from bridge.core.wire.common import as_int as _int

_loads = jsontext.frame_loads
#: The signal frame's encoder (orjson when installed; the same text; issue 16).
frame_dumps = jsontext.frame_dumps_floatless

@dataclass(frozen=True, slots=True)
class Resume:
    """What a client presents to take its connection back after a dropped link: its connection id,
    the ``resume_secret`` of its last ``connected``, the last ``seq`` it received."""

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


# ---- the client's encoders ----------------------------------------------------------------------

def connect_frame(token: str, resume: Resume | None = None) -> str:
    frame: dict[str, Any] = {"op": "connect", "token": token}
    if resume is not None:
        frame["resume"] = {"connection_id": resume.connection_id, "secret": resume.secret,
                           "last_seq": resume.last_seq}
    return dumps(frame)


def signal_frame(id_: int, type_: str, data: str, to: str | None, retry: bool) -> str:
    """The one encode on the send path. ``to`` is left out for a broadcast."""
    if to is None:
        return frame_dumps({"op": "signal", "id": id_, "type": type_, "data": data, "retry": retry})
    return frame_dumps({"op": "signal", "id": id_, "type": type_, "data": data, "to": to, "retry": retry})


def with_queued_ms(frame: str, queued_ms: int) -> str:
    """``frame`` (a :func:`signal_frame`) saying it waited ``queued_ms`` in the client's queue before
    being written: the hub stamps its ``ts`` that much earlier (docs/protocol.md, "Signals")."""
    return frame if queued_ms <= 0 else f'{frame[:-1]},"queued_ms":{queued_ms:d}}}'


def ping_frame(id_: int) -> str:
    return dumps({"op": "ping", "id": id_})


def disconnect_frame() -> str:
    return '{"op":"disconnect"}'


def force_disconnect_frame(id_: int, connection_id: str) -> str:
    return dumps({"op": "force_disconnect", "id": id_, "connection_id": connection_id})
