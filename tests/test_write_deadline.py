"""Write deadlines, pure: every write of a rule with max_age_ms carries the monotonic time at which its
command turns max_age_ms old (its issue time, the hub ``ts``, plus max_age_ms); safe actions and rules
without max_age_ms carry none. What a link drops for it is counted in bridge.status and audited.
(The links themselves are tested with a real pty and a real frozen broker: test_link_deadline_e2e.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.core.engine import Audit, Engine, Publish, SendSignal, WriteLine
from bridge.core.engine.decisions import Decision
from bridge.core.engine.outcomes import WritesExpired
from bridge.core.model import Audit as AuditConfig
from tests.helpers.engine import NOW_MS, engine, make_config, send, writes


def test_a_move_carries_the_deadline_of_its_issue_time_plus_max_age() -> None:
    e = engine()
    # Issued 100 ms before the hub's now, judged at monotonic 50.0; max_age_ms 300: 200 ms left.
    [line] = writes(send(e, "robot.move", {"x": 0.5, "y": 0}, now=50.0, ts=NOW_MS - 100))
    assert isinstance(line, WriteLine) and line.deadline == pytest.approx(50.2)
    [fresh] = writes(send(e, "robot.move", {"x": 0.5, "y": 0}, now=60.0, ts=NOW_MS, seq=2))
    assert fresh.deadline == pytest.approx(60.3)


def test_rules_without_max_age_and_safe_actions_carry_no_deadline() -> None:
    e = engine()
    [grip] = writes(send(e, "arm.grip", {"force": 5}, now=1.0))
    assert isinstance(grip, Publish) and grip.deadline is None
    writes(send(e, "robot.move", {"x": 0.5, "y": 0}, now=1.0))
    [stop] = e.tick(10.0)                            # the watchdog's stop
    assert isinstance(stop, WriteLine) and stop.deadline is None
    estop = [c for c in writes(send(e, "robot.estop", now=11.0)) if isinstance(c, WriteLine)]
    assert estop and all(c.deadline is None for c in estop)
    assert all(getattr(c, "deadline", None) is None for c in e.shutdown())


def status_counters(e: Engine) -> dict[str, Any]:
    out = e.link_up("bridge1", 0.0)
    [status] = [c for c in out if isinstance(c, SendSignal) and c.type == "bridge.status"]
    counters: dict[str, Any] = json.loads(status.data)["counters"]
    return counters


def test_dropped_writes_are_counted_in_status_and_audited() -> None:
    e = engine()
    assert status_counters(e)["writes_expired"] == 0
    assert e.device_event(WritesExpired("base", ("M 0.50 0.00", "M 0.60 0.00")), 1.0) == []   # no audit
    assert status_counters(e)["writes_expired"] == 2
    audited = Engine(make_config(audit=AuditConfig("/nonexistent/audit.log")))
    audited.link_up("bridge1", 0.0)
    send(audited, "robot.move", {"x": 0.5, "y": 0}, now=10.0)   # the hub's clock read NOW_MS at 10.0
    [record] = audited.device_event(WritesExpired("base", tuple(f"M 0.{i}" for i in range(5))), 12.5)
    assert isinstance(record, Audit) and record.record.decision is Decision.STALE
    assert record.record.time == pytest.approx((NOW_MS + 2500) / 1000)   # the hub's time, 2.5 s later
    assert record.record.written == ()
    assert "device base" in record.record.reason and "M 0.0; M 0.1; M 0.2 (+2 more)" in record.record.reason
