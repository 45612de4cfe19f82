"""Rate limit per rule and per sender: a token bucket for each sender, a bounded table of senders.

Each sender of a rule owns a bucket of ``burst`` tokens that refills at ``hz`` tokens per second; a
command takes one token or is refused (decision ``rate_limited``). So a sender gets at most ``burst``
commands at once and ``hz`` per second on average, whatever other senders do.

A sender is the token it joined with (the engine keys on the ``token_id`` the hub puts in every
connection), so that reconnecting, or opening a fresh connection per command, never refills a bucket;
the connection id (or None for REST senders) only when the hub names no token.

Memory is bounded: at most ``max_senders`` buckets are tracked, the least recently used one is evicted
first. An evicted sender comes back with a full bucket - that grants it at most ``burst`` extra
commands, and only after ``max_senders`` other senders were active in between, which the hub's own
connection limits make expensive. ``forget()`` drops a connection-keyed bucket when its connection is
destroyed (a token's bucket stays: its next connection is the same sender).

Pure: the caller passes time in (monotonic seconds); nothing here reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from bridge.core.engine.decisions import Decision, Verdict
from bridge.core.model import RateLimit
from bridge.core.tokenbucket import TokenBucket

DEFAULT_MAX_SENDERS = 1024


class RateLimiter:
    """The token buckets of one rule, keyed by sender (a token, a connection id, None for REST senders)."""

    __slots__ = ("_buckets", "_burst", "_hz", "_max", "_refusal")

    def __init__(self, hz: float, burst: int = 1, max_senders: int = DEFAULT_MAX_SENDERS) -> None:
        if not hz > 0:
            raise ValueError(f"rate limit hz must be > 0, got {hz}")
        if burst < 1:
            raise ValueError(f"rate limit burst must be >= 1, got {burst}")
        if max_senders < 1:
            raise ValueError(f"max_senders must be >= 1, got {max_senders}")
        self._hz = float(hz)
        self._burst = float(burst)
        self._max = max_senders
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        # Shared, immutable: refusing a flood allocates nothing.
        self._refusal = Verdict(Decision.RATE_LIMITED, f"more than {hz:g}/s (burst {burst})")

    @classmethod
    def for_rule(cls, limit: RateLimit, max_senders: int = DEFAULT_MAX_SENDERS) -> RateLimiter:
        return cls(limit.hz, limit.burst, max_senders)

    def __len__(self) -> int:
        """How many senders are tracked now (at most ``max_senders``)."""
        return len(self._buckets)

    def check(self, sender: Hashable, now: float) -> Verdict | None:
        """Take one token from ``sender``'s bucket: None when allowed, the refusal otherwise.

        ``now`` is monotonic seconds. A clock that goes backwards never adds tokens."""
        buckets = self._buckets
        bucket = buckets.get(sender)
        if bucket is None:
            if len(buckets) >= self._max:
                buckets.popitem(last=False)          # least recently used
            bucket = buckets[sender] = TokenBucket(self._hz, self._burst, now)
        else:
            buckets.move_to_end(sender)
        if bucket.take(now):
            return None
        return self._refusal

    def forget(self, sender: Hashable) -> None:
        """Stop tracking ``sender`` (its connection was destroyed). Unknown senders are ignored."""
        self._buckets.pop(sender, None)
