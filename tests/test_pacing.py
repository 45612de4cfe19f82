"""bridge.core.engine.pacing and bridge.core.engine.describe, pure: the bridge's own signal budget (essential
signals wait, optional ones yield) and describe answers limited per sender and coalesced."""

from __future__ import annotations

import pytest

from bridge.core.engine import CAPABILITIES, STATUS, SendSignal
from bridge.core.engine.describe import DescribeLimiter
from bridge.core.engine.pacing import MAX_WAITING, Pacer
from tests.helpers.engine import OP, engine, send


def test_essential_signals_wait_in_order_and_never_exceed_the_rate() -> None:
    p: Pacer[int] = Pacer(10, 5, 0.0)
    assert [p.offer(i, True, 0.0) for i in range(8)] == [True] * 5 + [False] * 3
    assert p.next_deadline() == pytest.approx(0.1)
    assert p.due(0.05) == [] and p.due(0.1) == [5]
    assert p.due(0.3) == [6, 7] and p.next_deadline() is None
    assert p.offer(8, True, 0.3) is False        # the bucket is empty: it waits (never overtakes)
    assert p.due(0.4) == [8] and p.waited == 4


def test_optional_signals_keep_half_the_burst_for_essential_ones_and_never_queue() -> None:
    p: Pacer[str] = Pacer(10, 10, 0.0)
    sent = sum(p.offer("t", False, 0.0) for _ in range(100))
    assert sent == 5 and p.dropped_optional == 95 and p.next_deadline() is None
    assert sum(p.offer("ack", True, 0.0) for _ in range(5)) == 5     # the reserve is there


def test_wait_queue_is_bounded_and_cleared_on_link_down() -> None:
    p: Pacer[int] = Pacer(1, 1, 0.0)
    for i in range(MAX_WAITING + 11):
        p.offer(i, True, 0.0)
    assert p.dropped_essential == 10 and p.clear() == MAX_WAITING and p.due(1e6) == []
    with pytest.raises(ValueError):
        Pacer(0, 1, 0.0)


def test_describe_once_per_interval_per_sender_coalesced() -> None:
    d = DescribeLimiter(interval_s=1.0, max_senders=2)
    assert d.request("a", 0.0) and d.request("b", 0.0)
    assert not any(d.request("a", t / 100) for t in range(1, 100))   # 99 more: one answer owed
    assert d.coalesced == 98 and d.next_deadline() == 1.0
    assert d.due(0.5) == [] and d.due(1.0) == ["a"] and d.next_deadline() is None
    assert not d.request("c", 0.5)               # full: a third sender is dropped, counted ...
    assert d.request("c", 1.5) and d.dropped == 1   # ... until a quiet one is forgotten
    d.forget("a")
    assert d.request("a", 1.6)


def test_engine_answers_a_describe_flood_once_a_second() -> None:
    e = engine()
    answers = [c for t in range(300) for c in (send(e, "bridge.describe", "{}", now=t / 100)
                                                + e.tick(t / 100))]
    assert [c.type for c in answers] == [CAPABILITIES, STATUS] * 3     # at 0, 1 and 2 s
    assert all(isinstance(c, SendSignal) and c.to == OP.id and c.optional for c in answers)
    e.connection_destroyed(OP, 3.0)
    assert e.next_deadline() is None
