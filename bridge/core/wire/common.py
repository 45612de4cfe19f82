"""What both directions of wire protocol v1 share: the JSON encoder, the text check, the two errors."""

from __future__ import annotations

import json
from typing import Any

from bridge.core.errors import CodedError

#: Compact JSON, non-ASCII kept as is (the frame is UTF-8 text anyway).
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class WireError(CodedError):
    """A client frame the hub cannot act on (400, or 413 for a frame over MAX_FRAME_BYTES).
    ``frame_id`` is the frame's ``id`` when it had a usable one (answer with a ``nack``), else None
    (answer with an ``error`` frame)."""

    def __init__(self, code: int, message: str, frame_id: int | None = None) -> None:
        super().__init__(code, message)
        self.frame_id = frame_id


class ProtocolError(ValueError):
    """A hub frame that does not follow wire protocol v1 (the client logs and skips it)."""


def as_int(v: Any) -> int | None:
    """``v`` when it is a JSON integer (not a bool), else None."""
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


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
