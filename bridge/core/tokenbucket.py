"""One token bucket, for every rate limit of the project: the hub's per-connection frame limit and the
engine's per-rule, per-sender limits (:mod:`bridge.core.ratelimit`).

A bucket holds at most ``burst`` tokens (at least 1) and refills at ``rate`` tokens per second; each
:meth:`TokenBucket.take` takes one or refuses. So a user gets at most ``burst`` at once and ``rate``
per second on average. ``rate <= 0`` means no limit (every take succeeds).

Pure: the caller passes time in (monotonic seconds). A clock that goes backwards never adds tokens,
and a user keeping exactly to ``1/rate`` is never refused (float error is absorbed).
"""

from __future__ import annotations

#: Float error absorbed when deciding whether a token is there (see the module docstring).
_EPSILON = 1e-9


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full at ``now``."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = float(rate)
        self.burst = max(float(burst), 1.0)
        self.tokens = self.burst
        self.last = now

    def take(self, now: float) -> bool:
        """Take one token; False when the bucket is empty (the caller refuses: 429, rate_limited)."""
        rate = self.rate
        if rate <= 0:
            return True
        elapsed = now - self.last
        if elapsed > 0:
            tokens = self.tokens + elapsed * rate
            self.tokens = tokens if tokens < self.burst else self.burst
            self.last = now
        if self.tokens >= 1.0 - _EPSILON:
            self.tokens -= 1.0
            return True
        return False
