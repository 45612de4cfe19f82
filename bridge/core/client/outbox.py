"""The session client's bookkeeping of signals: duplicates filtered by ``seq`` on the way in, ids,
in-flight and queued signals on the way out. Pure; used by :class:`bridge.core.client.ClientSession`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from bridge.core.wire import signal_frame, with_queued_ms

R = TypeVar("R", contravariant=True)


class Ticket(Protocol[R]):
    """What a caller waits on (an ``asyncio.Future`` fits)."""

    def done(self) -> bool: ...
    def set_result(self, result: R, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class SeqFilter:
    """Duplicate suppression by the hub's per-receiver ``seq``.

    The hub numbers the signals it delivers to one connection 1, 2, 3, ...; after a resume it replays
    those with ``seq > last_seq``. A signal whose seq is not above the last one accepted was already
    delivered (a replay overlapping what arrived before the drop) and is dropped.
    """

    def __init__(self) -> None:
        self.last_seq = 0
        self.duplicates = 0

    def accept(self, seq: int) -> bool:
        if seq <= self.last_seq:
            self.duplicates += 1
            return False
        self.last_seq = seq
        return True


T = TypeVar("T")


@dataclass(slots=True, eq=False)
class Outgoing(Generic[T]):
    """One signal between ``signal()`` and the hub's answer. The frame is encoded once and keeps its
    id across re-sends; ``ticket`` is whatever the I/O side resolves on the answer (a future);
    ``issued`` is when ``signal()`` was called (the caller's monotonic clock, seconds), from which a
    re-sent or queued frame says how long it waited (:meth:`Outbox.frame_at`)."""

    id: int
    frame: str
    retry: bool
    ticket: T
    issued: float = 0.0


class Outbox(Generic[T]):
    """Client-side bookkeeping of signals: ids, in flight (sent, unanswered), queued (for after a
    resume), and what a dropped link does to them.

    Ids count up over the client's whole life, not per link, so that pings and requests never
    collide with signals, and so that the ``last_id`` of a resumed ``connected`` (the highest signal
    id the hub has processed for this connection) sorts what was in flight at the drop: at or below
    it, processed (only the answer was lost; :meth:`resumed` hands them back to be settled); above
    it, never seen, re-sent. Contract: send what :meth:`next_queued` returns before anything new
    while :attr:`has_queued` is true, so order is kept per sender.
    """

    def __init__(self) -> None:
        self.last_id = 0
        self._inflight: dict[int, Outgoing[T]] = {}
        self._queue: deque[Outgoing[T]] = deque()

    def new_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def new(self, type_: str, data: str, to: str | None, retry: bool, ticket: T,
            now: float = 0.0) -> Outgoing[T]:
        """A new signal issued at ``now`` (monotonic seconds)."""
        id_ = self.new_id()
        return Outgoing(id_, signal_frame(id_, type_, data, to, retry), retry, ticket, now)

    @staticmethod
    def frame_at(out: Outgoing[T], now: float) -> str:
        """The frame to write for ``out`` at ``now``: one that waited (queued during an outage, behind
        a flush, or re-sent after a drop) carries ``queued_ms``, so the hub's ``ts`` is the time it was
        issued and a stale guard downstream sees its true age. Within a millisecond: the plain frame."""
        return with_queued_ms(out.frame, int((now - out.issued) * 1000))

    def sent(self, out: Outgoing[T]) -> None:
        """Record ``out`` as written to the current link (call before the write)."""
        self._inflight[out.id] = out

    @property
    def awaiting_answer(self) -> int:
        """Signals written to the current link and not yet answered."""
        return len(self._inflight)

    def enqueue(self, out: Outgoing[T]) -> None:
        self._queue.append(out)

    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    def next_queued(self) -> Outgoing[T] | None:
        return self._queue.popleft() if self._queue else None

    def answered(self, id_: int) -> Outgoing[T] | None:
        """The signal an ack/nack with ``id_`` answers, or None (not a signal, or already settled)."""
        return self._inflight.pop(id_, None)

    def link_lost(self) -> list[Outgoing[T]]:
        """The link dropped before these were answered. Retry ones go back to the head of the queue,
        in id order (to be re-sent after the resume); the others are returned, to fail with 500: the
        hub may or may not have relayed them, and they must not go out late."""
        pending = sorted(self._inflight.values(), key=lambda o: o.id)
        self._inflight.clear()
        self._queue.extendleft(reversed([o for o in pending if o.retry]))
        return [o for o in pending if not o.retry]

    def resumed(self, last_id: int) -> list[Outgoing[T]]:
        """The hub resumed the connection having processed every signal id up to ``last_id``: the
        queued signals at or below it are taken out (to be settled with the hub's answer, an ack
        unless it sent a nack); the others stay queued, to be re-sent."""
        done = [o for o in self._queue if o.id <= last_id]
        if done:
            self._queue = deque(o for o in self._queue if o.id > last_id)
        return done

    def clear(self) -> list[Outgoing[T]]:
        """The session ended: everything still pending, to fail."""
        everything = [*self._inflight.values(), *self._queue]
        self._inflight.clear()
        self._queue.clear()
        return everything
