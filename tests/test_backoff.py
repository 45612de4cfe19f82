"""The one backoff (bridge.core.backoff): the delays, the jitter range, and the outage it reports
(started once, ended only by a stable connection); the one (code, message) error base."""

from __future__ import annotations

import pytest

from bridge.core.backoff import Backoff, backoff_delay
from bridge.core.errors import CodedError, SignalError
from bridge.core.tokens import TokenError
from bridge.core.wire import WireError


def test_delays_double_from_min_to_the_cap_and_reset_only_when_stable() -> None:
    b = Backoff(0.5, 4.0)
    got = [b.failed() for _ in range(6)]
    assert [d for d, _ in got] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [started for _, started in got] == [True] + [False] * 5   # one outage, logged once
    assert b.stable_s == 8.0
    assert b.stable() is True and b.stable() is False               # the end is reported once
    assert b.failed() == (0.5, True)


def test_jitter_scales_the_delay_and_a_bad_jitter_is_refused() -> None:
    assert Backoff(1.0, 8.0).failed(0.5) == (0.5, True)
    assert backoff_delay(10_000, 0.5, 5.0, 0.75) == pytest.approx(3.75)   # no overflow
    for bad in (0.49, 1.01, float("nan")):
        with pytest.raises(ValueError):
            backoff_delay(0, 0.5, 5.0, bad)


def test_every_refusal_is_one_coded_error_and_keeps_its_public_shape() -> None:
    wire_error = WireError(400, "bad", 7)
    errors: list[CodedError] = [SignalError(403, "nope"), TokenError(401, "token expired"), wire_error]
    assert all(isinstance(e, CodedError) for e in errors)
    assert [(e.code, e.message) for e in errors] == [(403, "nope"), (401, "token expired"), (400, "bad")]
    assert [str(e) for e in errors] == ["403: nope", "token expired", "bad"]
    assert wire_error.frame_id == 7
