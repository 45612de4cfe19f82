"""Redis session store for a fleet of hubs sharing sessions (issue 13; docs/cluster.md).

Needs the optional extra ``signal-bridge[cluster]`` (redis.asyncio + hiredis): import this package only
when the hub's configuration chooses the Redis engine.
"""

from bridge.cluster.notes import (
    Fenced,
    JoinNote,
    LeaveNote,
    Member,
    Note,
    Receipt,
    Resync,
    SignalBody,
    SignalNote,
    StoreError,
    TakeoverNote,
    Unavailable,
)
from bridge.cluster.store import (
    JoinResult,
    RedisSessionStore,
    ResumeGap,
    ResumeResult,
    StoreConfig,
    digest,
)

__all__ = [
    "Fenced",
    "JoinNote",
    "JoinResult",
    "LeaveNote",
    "Member",
    "Note",
    "Receipt",
    "RedisSessionStore",
    "ResumeGap",
    "ResumeResult",
    "Resync",
    "SignalBody",
    "SignalNote",
    "StoreConfig",
    "StoreError",
    "TakeoverNote",
    "Unavailable",
    "digest",
]
