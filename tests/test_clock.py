"""Clock offset / RTT estimate: min-RTT filter, window ageing, bad samples."""

from __future__ import annotations

import pytest

from bridge.core.clock import ClockEstimator


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
