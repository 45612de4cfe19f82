"""Clock offset / RTT estimate: min-RTT filter, window ageing, bad samples; and the hub time a client
estimates (what the stale guard reads) kept against the monotonic clock, so a wall-clock step
moves nothing."""

from __future__ import annotations

import time

import pytest

from bridge.client import SessionClient
from bridge.core.client import ClockEstimator
from bridge.core.engine.age import is_stale
from tests.conftest import scaled
from tests.helpers.hub import hub_process


def test_no_sample_means_zero_offset() -> None:
    c = ClockEstimator()
    assert c.offset_ms == 0.0 and c.rtt_ms is None and c.min_rtt_ms is None


def test_symmetric_exchange_gives_exact_offset() -> None:
    c = ClockEstimator()
    # local sends at 1000, hub (running 500 ms ahead) stamps 1505, local receives at 1010
    s = c.add(1000.0, 1505.0, 1010.0)
    assert s is not None and s.rtt_ms == 10.0
    assert c.offset_ms == pytest.approx(500.0) and c.rtt_ms == 10.0


def test_lowest_rtt_sample_wins_over_a_delayed_one() -> None:
    c = ClockEstimator()
    c.add(0.0, 505.0, 10.0)          # rtt 10, offset 500
    c.add(100.0, 900.0, 400.0)       # rtt 300, queueing on the way back: offset 650, must not win
    assert c.offset_ms == pytest.approx(500.0)
    assert c.rtt_ms == 300.0 and c.min_rtt_ms == 10.0


def test_old_samples_age_out_of_the_window() -> None:
    c = ClockEstimator(window=3)
    c.add(0.0, 505.0, 10.0)                       # best, offset 500
    for t in (100.0, 200.0, 300.0):
        c.add(t, t - 90.0, t + 20.0)  # rtt 20, offset -100 (the clock stepped)
    assert c.samples == 3
    assert c.offset_ms == pytest.approx(-100.0)


def test_negative_rtt_is_ignored() -> None:
    c = ClockEstimator()
    assert c.add(100.0, 0.0, 50.0) is None
    assert c.samples == 0 and c.offset_ms == 0.0


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ClockEstimator(window=0)


def test_hub_time_is_the_local_monotonic_time_plus_the_offset() -> None:
    c = ClockEstimator()
    c.add(1000.0, 1505.0, 1010.0)
    assert c.hub_now_ms(4000.0) == pytest.approx(4500.0)


# ---------------------------------------------------------------- a wall-clock step on the client host


@pytest.mark.parametrize("step_s", [-10.0, 10.0], ids=["back", "forward"])
async def test_a_wall_clock_step_moves_neither_the_hub_time_nor_the_stale_verdict(
        monkeypatch: pytest.MonkeyPatch, step_s: float) -> None:
    """The hub runs in its own process (its clock is not stepped); this process's wall clock is stepped
    under a connected client, as an NTP correction would. The client's estimate of the hub's time, and
    with it the stale guard's verdict on a 3 s old and on a fresh command, must not move, neither at
    once nor after a new clock sample taken under the stepped clock."""
    real = time.time
    with hub_process() as hub:
        async with SessionClient(hub.url, "clk", hub.token("clk")) as c:
            await c.ping()
            slack_ms = scaled(0.25) * 1000

            def judged() -> None:
                hub_now = real() * 1000          # the hub shares this host's (unstepped) clock
                assert abs(c.hub_time_ms() - hub_now) < slack_ms
                assert is_stale(300, int(c.hub_time_ms()) - int(hub_now - 3000))
                assert not is_stale(300, int(c.hub_time_ms()) - int(hub_now - 50))

            judged()
            monkeypatch.setattr(time, "time", lambda: real() + step_s)
            judged()                             # at once
            for _ in range(3):
                await c.ping()                   # samples taken under the stepped wall clock
                judged()
            # What the client reports as hub minus wall clock shows the step (it is the truth).
            assert c.clock_offset_ms == pytest.approx(-step_s * 1000, abs=slack_ms)
