"""Key and channel names of the Redis session store (pure: no I/O).

Every key of one session carries the same hash tag, ``{<tag>}``, so that a Redis Cluster keeps them in
one slot and a Lua script may touch all of them atomically. The tag is a digest of the session id, not
the id itself: a session id may contain ``{`` or ``}``, which would move the tag, and may be 256
characters long. 128 bits of SHA-256 make two sessions sharing a tag a non-event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PREFIX = "sb"
#: The hub registry (global): hub id -> lease expiry in ms of Redis time; -1 marks a swept hub.
HUBS_KEY = f"{PREFIX}:hubs"


def hub_sessions_key(hub_id: str) -> str:
    """The set of session ids a hub holds (or held) members in: what a sweeper visits when it dies."""
    return f"{PREFIX}:hs:{hub_id}"


def session_tag(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class SessionKeys:
    """The keys of one session. ``prefix`` + a per-connection suffix names the per-connection keys.

    - ``members``: hash connection id -> the public connection object (JSON, as on the wire);
    - ``owners``: hash connection id -> id of the hub that holds its link (the only hub that may act
      for it, deliver to it or expire it);
    - ``counters``: hash ``s:<conn>`` last seq given, ``b:<conn>`` last seq buffered (retry),
      ``i:<conn>`` last signal id processed, ``e:<conn>`` epoch (+1 at each resume), ``h:<conn>``
      the resume secret's digest;
    - ``hubs``: zset hub id -> that hub's lease in this session (ms, Redis time); -1 after a sweep;
    - ``tokens``: hash token id -> connections open with it (the per-token cap);
    - ``prefix + "q:" + conn``: the connection's resume stream (entry id ``<seq>-0``, field ``b``);
    - ``prefix + "nk:" + conn``: its latest nacks (list of JSON objects);
    - ``prefix + "rb:" + token_id``: the resume back-off after a wrong secret (value: next delay).
    """

    session_id: str
    prefix: str
    members: str
    owners: str
    counters: str
    hubs: str
    tokens: str
    channel: str

    @classmethod
    def of(cls, session_id: str) -> SessionKeys:
        p = f"{PREFIX}:{{{session_tag(session_id)}}}:"
        return cls(session_id, p, p + "m", p + "o", p + "c", p + "hubs", p + "tok", p + "ev")

    def all(self) -> list[str]:
        """The declared keys every script receives (KEYS[1..5]); all share the session's slot."""
        return [self.members, self.owners, self.counters, self.hubs, self.tokens]

    def stream(self, connection_id: str) -> str:
        return f"{self.prefix}q:{connection_id}"
