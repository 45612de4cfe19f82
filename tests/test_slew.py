"""Slew limiting of numeric params. Time is passed in."""

from __future__ import annotations

import itertools

import pytest

from bridge.core.engine.slew import Slewed, SlewLimiter
from bridge.core.model import ParamSpec


def test_first_command_passes_then_steps_are_bounded() -> None:
    s = SlewLimiter(2.0)                         # 2 units per second
    assert s.limit(0.8, 10.0) == Slewed(0.8, False)
    assert s.limit(0.0, 10.1) == Slewed(pytest.approx(0.6), True)   # at most 0.2 down
    assert s.limit(1.0, 10.2) == Slewed(pytest.approx(0.8), True)   # 0.6 + 0.2
    assert s.limit(0.85, 10.3) == Slewed(0.85, False)              # within the step
    assert s.last == 0.85


def test_reaches_the_target_at_the_configured_rate() -> None:
    s = SlewLimiter(1.0)
    s.limit(0.0, 0.0)
    t, out = 0.0, Slewed(0.0, False)
    while out.value < 1.0:
        t += 0.02
        out = s.limit(1.0, t)
    assert t == pytest.approx(1.0, abs=0.021)


def test_same_instant_or_backwards_clock_allows_no_step() -> None:
    s = SlewLimiter(5.0)
    s.limit(1.0, 3.0)
    assert s.limit(2.0, 3.0) == Slewed(1.0, True)
    assert s.limit(2.0, 2.0) == Slewed(1.0, True)


def test_reset_after_a_safe_action() -> None:
    s = SlewLimiter(1.0)
    s.limit(1.0, 0.0)
    s.reset(0.0, 0.5)                            # the watchdog stopped the motor
    assert s.limit(1.0, 1.0) == Slewed(0.5, True)
    s.reset(None)
    assert s.last is None
    assert s.limit(-1.0, 1.1) == Slewed(-1.0, False)


def test_int_params_stay_ints_and_slow_slews_progress() -> None:
    s = SlewLimiter(5.0, integer=True)           # 5 per second, commands every 50 ms: 0.25 per command
    assert s.limit(10, 0.0) == Slewed(10, False)
    values = [s.limit(20, 0.05 * i) for i in range(1, 41)]
    assert all(isinstance(v.value, int) for v in values)
    assert [v.value for v in values[:4]] == [10, 10, 10, 11]
    assert values[-1] == Slewed(20, False)
    assert all(b.value - a.value <= 1 for a, b in itertools.pairwise(values))
    down = SlewLimiter(5.0, integer=True)
    down.limit(10, 0.0)
    assert down.limit(0, 0.3) == Slewed(9, True)   # 10 - 1.5 rounded toward 10


def test_for_param() -> None:
    assert SlewLimiter.for_param(ParamSpec("x", "float")) is None
    lim = SlewLimiter.for_param(ParamSpec("x", "int", slew_per_s=3))
    assert lim is not None
    lim.limit(0, 0.0)
    assert lim.limit(10, 1.0) == Slewed(3, True)
    with pytest.raises(ValueError, match="int or float"):
        SlewLimiter.for_param(ParamSpec("mode", "string", enum=("a",), slew_per_s=1))


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        SlewLimiter(rate)
