"""What the Redis session store tells a hub (frozen dataclasses, no I/O), and the errors it raises."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class StoreError(Exception):
    """A refusal or failure of the store, with the wire protocol's error code it maps to.

    ``reason`` is the script's word for it: ``full`` / ``tokenfull`` / ``blocked`` (429), ``forbidden``
    (403), ``nomember`` (404), ``exists`` / ``notowner`` (409), ``fenced`` (410), ``unavailable`` (503).
    """

    CODES = {"full": 429, "tokenfull": 429, "blocked": 429, "forbidden": 403, "nomember": 404,
             "exists": 409, "notowner": 409, "fenced": 410, "unavailable": 503}

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        self.code = self.CODES.get(reason, 500)
        super().__init__(message or reason)


class Fenced(StoreError):
    """This hub's lease lapsed (it was frozen or cut off past its liveness): it must deliver nothing
    more, close its links and start again as a new hub. Raised by every call once it is so."""

    def __init__(self, message: str = "this hub's lease has lapsed") -> None:
        super().__init__("fenced", message)


class Unavailable(StoreError):
    """Redis cannot be reached (or did not answer in time): refuse connects, report not ready."""

    def __init__(self, message: str = "redis is unreachable") -> None:
        super().__init__("unavailable", message)


@dataclass(frozen=True)
class Member:
    """A connection as the wire protocol describes it (``connection`` objects), plus its owner hub."""

    id: str
    data: str
    role: str
    creation_time: int
    token_id: str

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "data": self.data, "role": self.role,
                           "creation_time": self.creation_time, "token_id": self.token_id},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | dict[str, Any]) -> Member:
        d = json.loads(raw) if isinstance(raw, str) else raw
        return cls(str(d["id"]), str(d["data"]), str(d["role"]), int(d["creation_time"]), str(d["token_id"]))


@dataclass(frozen=True)
class Receipt:
    """One receiver of a signal: its connection, the seq the store gave it, the hub that holds it."""

    connection_id: str
    seq: int
    hub_id: str


@dataclass(frozen=True)
class SignalBody:
    """The signal as every receiver gets it (``from`` None for REST; ``ts`` the hub's stamp, ms)."""

    type: str
    data: str
    sender: str | None
    ts: int

    def to_json(self) -> str:
        return json.dumps({"type": self.type, "data": self.data, "from": self.sender, "ts": self.ts},
                          separators=(",", ":"))

    @classmethod
    def from_obj(cls, d: dict[str, Any]) -> SignalBody:
        sender = d.get("from")
        return cls(str(d["type"]), str(d["data"]), None if sender is None else str(sender), int(d["ts"]))


@dataclass(frozen=True)
class SignalNote:
    """A signal was stored: each hub delivers it to the receivers whose ``hub_id`` is its own."""

    session_id: str
    retry: bool
    receivers: tuple[Receipt, ...]
    body: SignalBody


@dataclass(frozen=True)
class JoinNote:
    """``connection_created`` for everyone in the session (on every hub)."""

    session_id: str
    hub_id: str
    member: Member


@dataclass(frozen=True)
class LeaveNote:
    """``connection_destroyed`` (exactly one per member); the owner hub closes the member's link."""

    session_id: str
    owner_hub: str
    reason: str
    member: Member


@dataclass(frozen=True)
class TakeoverNote:
    """A member resumed on ``hub_id``: its previous hub drops its old link silently (no event)."""

    session_id: str
    connection_id: str
    hub_id: str
    old_hub: str | None
    epoch: int


@dataclass(frozen=True)
class Resync:
    """Notifications may have been lost (the pub/sub link to Redis dropped and came back): a hub
    reconciles its sessions (members, and each local receiver's stream after its last delivered seq)."""


Note = SignalNote | JoinNote | LeaveNote | TakeoverNote | Resync


def decode_note(session_id: str, raw: str) -> Note:
    """Decode one notification published by a script. Raises ValueError/KeyError on a foreign message."""
    d = json.loads(raw)
    kind = d["k"]
    if kind == "s":
        receivers = tuple(Receipt(str(c), int(s), str(h)) for c, s, h in d["r"])
        return SignalNote(session_id, bool(d["t"]), receivers, SignalBody.from_obj(d["b"]))
    if kind == "j":
        return JoinNote(session_id, str(d["h"]), Member.from_json(d["m"]))
    if kind == "d":
        return LeaveNote(session_id, str(d["h"]), str(d["r"]), Member.from_json(d["m"]))
    if kind == "t":
        old = d.get("o")
        return TakeoverNote(session_id, str(d["c"]), str(d["h"]), None if old is None else str(old),
                            int(d["e"]))
    raise ValueError(f"unknown notification kind {kind!r}")
