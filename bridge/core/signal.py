"""The signal model shared by the hub, the clients and the bridge: limits, roles, connections.

Limits follow the Vonage Video signaling API (see shared/reference/signaling-spec.md):
a type is at most 128 characters of ``[A-Za-z0-9._~-]`` (empty means "no type"), data is a string
of at most 8192 UTF-8 bytes. Anything else is refused with 413 (too long) or 400 (bad characters),
never truncated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

MAX_TYPE_CHARS = 128
MAX_DATA_BYTES = 8192
#: WebSocket frames larger than this are refused before any JSON parsing.
MAX_FRAME_BYTES = 64 * 1024
#: Connection data carried by a token, visible to everyone in the session.
MAX_CONNECTION_DATA_CHARS = 1000

_TYPE_CHARS = re.compile(r"[A-Za-z0-9._~-]*")

MODERATOR = "moderator"
PUBLISHER = "publisher"
PUBLISHER_ONLY = "publisheronly"
SUBSCRIBER = "subscriber"
ROLES = frozenset({MODERATOR, PUBLISHER, PUBLISHER_ONLY, SUBSCRIBER})
#: Roles allowed to send signals. Subscribers receive only; publisheronly may not signal at all.
SIGNALLING_ROLES = frozenset({MODERATOR, PUBLISHER})

# Error codes of the signaling API, used on the wire (nack), over REST and by SignalError.
BAD_REQUEST = 400
UNAUTHORIZED = 401
FORBIDDEN = 403
NOT_FOUND = 404
TOO_LARGE = 413
TOO_MANY = 429
NOT_CONNECTED = 500

# Reasons of connection_destroyed / sessionDisconnected.
CLIENT_DISCONNECTED = "clientDisconnected"
FORCE_DISCONNECTED = "forceDisconnected"
NETWORK_DISCONNECTED = "networkDisconnected"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a signal was refused: an API error code and a message a person can act on."""

    code: int
    message: str


def check_signal(type_: object, data: object) -> Refusal | None:
    """Return None when (type_, data) is a valid signal, else the refusal to answer with.

    ``type_`` and ``data`` are what arrived, before any trust: they must both be strings.
    Data must be text that UTF-8 can encode (no lone surrogates). Cost: one regex match, and one UTF-8
    encode of the data when it is not ASCII.
    """
    if not isinstance(type_, str):
        return Refusal(BAD_REQUEST, "signal type must be a string")
    if not isinstance(data, str):
        return Refusal(BAD_REQUEST, "signal data must be a string")
    if len(type_) > MAX_TYPE_CHARS:
        return Refusal(TOO_LARGE, f"signal type is {len(type_)} characters, at most {MAX_TYPE_CHARS}")
    if _TYPE_CHARS.fullmatch(type_) is None:
        return Refusal(BAD_REQUEST, "signal type may only hold A-Z a-z 0-9 . _ ~ -")
    if data.isascii():
        if len(data) > MAX_DATA_BYTES:
            return Refusal(TOO_LARGE, f"signal data is {len(data)} bytes, at most {MAX_DATA_BYTES}")
        return None
    try:
        size = len(data.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): nothing could ever write it out
        return Refusal(BAD_REQUEST, "signal data is not valid UTF-8 text (a lone surrogate escape?)")
    if size > MAX_DATA_BYTES:
        return Refusal(TOO_LARGE, f"signal data is {size} bytes, at most {MAX_DATA_BYTES}")
    return None


def is_bridge_data(data: str) -> bool:
    """The convention that marks a bridge's connection: token connection data ``bridge`` or
    ``bridge:NAME`` (docs/protocol.md). Consoles take what the robot says only from such a connection."""
    return data == "bridge" or data.startswith("bridge:")


@dataclass(frozen=True, slots=True)
class Connection:
    """One client in a session, as every other member sees it.

    ``creation_time`` is in milliseconds since the epoch (hub clock); ``data`` is the token's
    connection data (at most 1000 characters); ``token_id`` names the token it joined with (the same
    on every connection that token opens, so that limits keyed on it survive reconnecting; "" from a
    hub that does not send it). The hub sets it; no client can choose it.
    """

    id: str
    data: str
    role: str
    creation_time: int
    token_id: str = ""
    _json: str | None = field(default=None, init=False, repr=False, compare=False)

    def to_wire(self) -> dict[str, Any]:
        wire = {"id": self.id, "data": self.data, "role": self.role, "creation_time": self.creation_time}
        if self.token_id:
            wire["token_id"] = self.token_id
        return wire

    def wire_json(self) -> str:
        """``to_wire()`` as compact JSON, encoded once: a hub lists every member in every join."""
        text = self._json
        if text is None:
            text = _dumps(self.to_wire())
            object.__setattr__(self, "_json", text)  # a cache, not state: excluded from eq and hash
        return text

    @classmethod
    def from_wire(cls, obj: Any) -> Connection:
        """Build from the wire form; raises ValueError when a field is missing or of a wrong type."""
        if not isinstance(obj, dict):
            raise ValueError("connection must be an object")
        cid, data, role, ctime = (obj.get("id"), obj.get("data", ""), obj.get("role"),
                                  obj.get("creation_time"))
        if not isinstance(cid, str) or not isinstance(data, str) or not isinstance(role, str):
            raise ValueError("connection id, data and role must be strings")
        if not isinstance(ctime, int) or isinstance(ctime, bool):
            raise ValueError("connection creation_time must be an integer")
        token_id = obj.get("token_id", "")
        if not isinstance(token_id, str):
            raise ValueError("connection token_id must be a string")
        return cls(cid, data, role, ctime, token_id)
