"""Small parts of the Redis hub engine (:mod:`bridge.cluster.engine`): its refusals, the per-member
chain of store calls that keeps order per sender, what it holds for a member being admitted, and
conversions between the store's records and the hub's."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bridge.cluster.notes import Member as StoreMember
from bridge.cluster.notes import SignalBody
from bridge.core import wire
from bridge.core.hub.counters import Metrics
from bridge.core.hub.engine import Refusal
from bridge.core.hub.member import Member
from bridge.core.signal import Connection
from bridge.core.tokenbucket import TokenBucket

log = logging.getLogger("bridge.cluster")

UNAVAILABLE = 503
#: What a client is told while the store cannot be reached (it retries, on this hub or another).
STORE_DOWN: Refusal = (UNAVAILABLE, "the hub's session store (Redis) is unreachable: try again shortly")
FENCED: Refusal = (UNAVAILABLE, "this hub lost its lease in the session store: resume on another hub")
RETRY_S = 0.5
RESUME_REFUSALS: dict[str, Refusal] = {
    "forbidden": (403, "cannot resume this connection: wrong resume secret, or a token for another "
                       "role or data"),
    "blocked": (429, "too many wrong resume secrets: wait and try again"),
}


@dataclass
class Early:
    """Frames for a member whose join or resume is in flight: (seq, frame, about, created); seq 0 = a
    connection event about connection ``about`` (``created``: connection_created)."""

    frames: list[tuple[int, str, str, bool]] = field(default_factory=list)


class Chain:
    """Coroutines of one member run one after the other (order per sender), in one task at a time."""

    __slots__ = ("_queue", "_task")

    def __init__(self) -> None:
        self._queue: deque[Callable[[], Awaitable[None]]] = deque()
        self._task: asyncio.Task[None] | None = None

    def add(self, step: Callable[[], Awaitable[None]]) -> None:
        self._queue.append(step)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def drained(self) -> None:
        """Return once every step added so far has run."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._queue:
                step = self._queue.popleft()
                try:
                    await step()
                except Exception:  # a step's own failure must not stop the member's later calls
                    log.exception("cluster engine step failed")
        finally:
            self._task = None


def connection_of(m: StoreMember) -> Connection:
    return Connection(m.id, m.data, m.role, m.creation_time, m.token_id)


def frame_of(body: SignalBody, seq: int) -> str:
    return wire.SignalBody(body.type, body.data, body.sender, body.ts).frame(seq)


def placeholder(session_id: str, connection_id: str, metrics: Metrics) -> Member:
    m = Member(session_id, Connection(connection_id, "", "", 0), NoLink(), TokenBucket(0, 0, 0.0), 0,
               metrics)
    m.link = None
    return m


class NoLink:
    def send(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
