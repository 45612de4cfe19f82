"""The store's configuration and the answers of its calls (frozen dataclasses, no I/O)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from bridge.cluster.notes import Member, SignalBody


@dataclass(frozen=True)
class StoreConfig:
    """``urls``: one URL (standalone) or the seed nodes of a Redis Cluster. ``lease_ms``: how long a hub
    lives without a heartbeat (renewed every ``lease_ms / 3``). ``grace_ms``: how long a dead hub's
    members wait to be resumed elsewhere before they are destroyed (the hub's reconnect grace)."""

    urls: tuple[str, ...]
    hub_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    lease_ms: int = 3000
    grace_ms: int = 60_000
    resume_buffer: int = 1000
    max_per_session: int = 4096
    max_per_token: int = 32
    nacks_kept: int = 256
    block_base_ms: int = 500
    block_max_ms: int = 30_000
    sweep_s: float = 0.2
    timeout_s: float = 2.0

    @property
    def ttl_ms(self) -> int:
        """Every session key expires this long after its last write or heartbeat (bounded memory when
        every hub of a session is gone and nobody sweeps)."""
        return 2 * self.grace_ms + 60_000


@dataclass(frozen=True)
class JoinResult:
    members: tuple[Member, ...]


@dataclass(frozen=True)
class ResumeResult:
    """A resume that took the member over: replay ``replay`` (in seq order), then carry on."""

    epoch: int
    last_id: int
    nacks: tuple[dict[str, Any], ...]
    members: tuple[Member, ...]
    replay: tuple[tuple[int, SignalBody], ...]


@dataclass(frozen=True)
class ResumeGap:
    """History after ``last_seq`` is incomplete (``trimmed``, ``lost`` or ``ahead``): answer
    ``resumed: false``. The member is left as it was (its owner's grace runs on)."""

    reason: str


def digest(secret: str) -> str:
    """What the store keeps of a resume secret: Redis never sees the secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()
