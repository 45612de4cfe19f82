"""Pacing the bridge's own signals under the hub's rate limit for its connection.

The hub refuses (429) what one connection sends beyond its rate limit, and a refused ack or status is
simply lost (they are sent without waiting for the hub's answer). So the bridge keeps its own token
bucket, ``rate`` signals a second with ``burst`` saved up, set at or under the hub's limit
(``session.signal_rate_hz``; the daemon lowers it to just under the limit the hub announces in
``connected``, see ``retune``), and decides before sending:

- an *essential* signal (acks, status broadcasts, capabilities on connect, ``expect`` replies) is
  sent now when a token is there, else waits in a bounded FIFO (``MAX_WAITING``) and leaves as soon as
  tokens come back (``due``), in order: it is late, never lost to a 429;
- an *optional* one (telemetry, ``bridge.describe`` answers) is sent only when a token is there *and*
  half the burst stays in reserve for essential ones, and nothing essential is waiting; else it is
  dropped and counted (telemetry is latest-wins anyway; a describe can be asked again).

Pure: the caller passes monotonic time in and sends what ``offer`` and ``due`` hand back.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

#: Essential signals that may wait for a token; past this, the newest is dropped (counted).
MAX_WAITING = 1000
#: Float slack: a token due exactly at the deadline ``next_deadline`` computed counts as there.
_EPS = 1e-9


class Pacer(Generic[T]):
    __slots__ = ("_burst", "_last", "_rate", "_tokens", "_waiting", "dropped_essential",
                 "dropped_optional", "waited")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"pacing needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = self._burst
        self._last = now
        self._waiting: deque[T] = deque()
        self.waited = 0              # essential signals that had to wait for a token
        self.dropped_essential = 0   # MAX_WAITING were already waiting
        self.dropped_optional = 0

    def retune(self, rate: float, burst: float, now: float) -> None:
        """Pace at ``rate`` with ``burst`` from ``now`` on (a (re)connect: the hub announced its limit);
        the tokens saved up are kept, at most the new burst."""
        if rate <= 0 or burst < 1:
            raise ValueError(f"pacing needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self._refill(now)
        self._rate, self._burst = rate, float(burst)
        self._tokens = min(self._tokens, self._burst)

    @property
    def rate(self) -> tuple[float, float]:
        """(rate, burst) in use."""
        return self._rate, self._burst

    def offer(self, item: T, essential: bool, now: float) -> bool:
        """True: send ``item`` now (a token is spent). False: it waits (essential; ``due`` hands it
        back later) or is dropped (optional, or the wait queue full; counted)."""
        self._refill(now)
        if essential:
            if not self._waiting and self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            if len(self._waiting) >= MAX_WAITING:
                self.dropped_essential += 1
                return False
            self._waiting.append(item)
            self.waited += 1
            return False
        if not self._waiting and self._tokens >= 1.0 + self._burst / 2:
            self._tokens -= 1.0
            return True
        self.dropped_optional += 1
        return False

    def due(self, now: float) -> list[T]:
        """The waiting signals that have a token at ``now``, in order (call at ``next_deadline``)."""
        self._refill(now)
        out: list[T] = []
        while self._waiting and self._tokens >= 1.0 - _EPS:
            self._tokens = max(0.0, self._tokens - 1.0)
            out.append(self._waiting.popleft())
        return out

    def next_deadline(self) -> float | None:
        if not self._waiting:
            return None
        return self._last + max(0.0, 1.0 - self._tokens) / self._rate

    def clear(self) -> int:
        """Forget what waits (the session link went down: it would be stale); returns how many."""
        n = len(self._waiting)
        self._waiting.clear()
        return n

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
