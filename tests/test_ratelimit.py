"""Token bucket per rule and sender, with a bounded sender table. Time is passed in: no sleeping."""

from __future__ import annotations

import pytest

from bridge.core.engine.decisions import Decision
from bridge.core.engine.ratelimit import RateLimiter
from bridge.core.model import RateLimit


def test_burst_then_refill_at_hz() -> None:
    rl = RateLimiter(hz=10, burst=3)
    assert [rl.check("a", 0.0) for _ in range(3)] == [None, None, None]
    refusal = rl.check("a", 0.0)
    assert refusal is not None and refusal.decision is Decision.RATE_LIMITED
    assert refusal.reason == "more than 10/s (burst 3)"
    assert rl.check("a", 0.05) is not None      # half a token
    assert rl.check("a", 0.1) is None           # one token back
    assert rl.check("a", 0.1) is not None
    assert [rl.check("a", 10.0) for _ in range(4)].count(None) == 3   # refill capped at burst


def test_a_sender_keeping_exactly_to_the_rate_is_never_refused() -> None:
    rl = RateLimiter(hz=10, burst=1)
    assert all(rl.check("a", i * 0.1) is None for i in range(1000))


def test_long_run_average_is_hz() -> None:
    rl = RateLimiter(hz=5, burst=2)
    # 100 Hz of attempts for 10 s: burst + 5/s * 10 s get through.
    allowed = sum(rl.check("a", i / 100) is None for i in range(1000))
    assert allowed in (51, 52)


def test_senders_are_independent_and_rest_is_a_sender() -> None:
    rl = RateLimiter.for_rule(RateLimit(hz=1, burst=1))
    assert rl.check("a", 0.0) is None
    assert rl.check("a", 0.0) is not None
    assert rl.check("b", 0.0) is None
    assert rl.check(None, 0.0) is None
    assert rl.check(None, 0.0) is not None


def test_lru_eviction_bounds_memory() -> None:
    rl = RateLimiter(hz=1, burst=1, max_senders=3)
    for s in "abc":
        assert rl.check(s, 0.0) is None
    assert rl.check("a", 0.0) is not None       # a is now most recently used
    assert rl.check("d", 0.0) is None           # evicts b, the least recently used
    assert len(rl) == 3
    assert rl.check("a", 0.0) is not None       # a was kept: still empty
    assert rl.check("b", 0.0) is None           # b was evicted: comes back full
    for i in range(10_000):
        rl.check(f"flood-{i}", 0.0)
    assert len(rl) == 3


def test_forget_and_backwards_clock() -> None:
    rl = RateLimiter(hz=1, burst=1)
    assert rl.check("a", 5.0) is None
    assert rl.check("a", 4.0) is not None       # clock went back: no tokens granted
    rl.forget("a")
    rl.forget("never-seen")
    assert len(rl) == 0
    assert rl.check("a", 4.0) is None


@pytest.mark.parametrize("kwargs", [{"hz": 0}, {"hz": -1}, {"hz": 1, "burst": 0},
                                    {"hz": 1, "max_senders": 0}, {"hz": float("nan")}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)  # type: ignore[arg-type]
