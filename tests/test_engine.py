"""bridge.core.engine, pure: events in, commands out, no event loop."""

from __future__ import annotations

import json

import pytest

from bridge.core.engine import CAPABILITIES, STATUS, Engine, Publish, Purge, SendSignal, WriteLine
from bridge.core.engine.actions import Notice, NoticeKind
from bridge.core.engine.decisions import Decision
from bridge.core.engine.outcomes import DeviceState
from bridge.core.engine.telemetry import BURST, SLACK
from bridge.core.model import (
    Control,
    ParamSpec,
    RateLimit,
    Rule,
    SerialAction,
)
from bridge.core.signal import Connection
from tests.helpers.engine import MOD, NOW_MS, OP, XY, acks, engine, make_config, send, writes


def test_move_becomes_line_and_ack() -> None:
    e = engine()
    out = send(e, "robot.move", {"x": 0.5, "y": 0, "id": "a1"})
    assert writes(out) == [WriteLine("base", "M 0.50 0.00")]
    assert acks(out) == [{"id": "a1", "status": "applied", "reason": None, "values": {"x": 0.5, "y": 0.0}}]
    assert [c.to for c in out if isinstance(c, SendSignal)] == ["op1"]
    assert all(not c.retry for c in out if isinstance(c, SendSignal))


@pytest.mark.parametrize("data,word", [
    ({"x": 2, "y": 0}, "above max"),
    ({"x": "0.5", "y": 0}, "must be a float"),
    ({"x": 0, "y": 0, "fire": 1}, "undeclared"),
    ({"x": "1\nFIRE", "y": 0}, "must be a float"),
    ('{"x": NaN, "y": 0}', "not JSON"),
    ("not json", "not JSON"),
    ({"x": 0}, "missing"),
])
def test_bad_params_write_nothing(data: object, word: str) -> None:
    e = engine()
    out = send(e, "robot.move", data, seq=7)
    assert writes(out) == []
    [ack] = acks(out)
    assert ack["status"] == "rejected" and ack["id"] == 7 and word in ack["reason"]
    assert e.status().decisions[Decision.REJECTED] == 1


def test_mqtt_json_payload_types_kept_and_clamped() -> None:
    e = engine()
    assert send(e, "arm.grip", {"force": 150}) == [Publish("arm", "arm/grip/set", b'{"force":100}', 1)]
    assert e.status().decisions[Decision.CLAMPED] == 1


def test_stale_dropped() -> None:
    e = engine()
    out = send(e, "robot.move", {"x": 0, "y": 0}, ts=NOW_MS - 301)
    assert writes(out) == [] and acks(out)[0]["status"] == "stale"
    assert writes(send(e, "robot.move", {"x": 0, "y": 0}, ts=NOW_MS - 300)) != []


def test_estop_latch_and_reset() -> None:
    e = engine()
    out = send(e, "robot.estop", sender=OP, now=1.0)
    assert writes(out) == [WriteLine("base", "S")]
    assert any(isinstance(c, SendSignal) and c.type == STATUS for c in out)
    out = send(e, "robot.move", {"x": 0, "y": 0})
    assert writes(out) == [] and acks(out)[0]["status"] == "estopped"
    assert send(e, "robot.estop_reset", sender=OP) == []        # publisher may not reset
    assert send(e, "robot.estop_reset", sender=None) == []      # nor REST
    assert e.estopped
    send(e, "robot.estop_reset", sender=MOD)
    assert not e.estopped
    assert writes(send(e, "robot.move", {"x": 0, "y": 0})) == [WriteLine("base", "M 0.00 0.00")]


def test_watchdog_fires_once() -> None:
    e = engine()
    send(e, "robot.move", {"x": 0.3, "y": 0}, now=1.0)
    send(e, "robot.move", {"x": 0.3, "y": 0}, now=1.2)
    assert e.next_deadline() == pytest.approx(1.7)
    assert e.tick(1.6) == []
    assert e.tick(1.7) == [STOP_LINE]
    assert e.tick(5.0) == [] and e.next_deadline() is None


STOP_LINE = WriteLine("base", "M 0 0")


def test_link_down_runs_on_disconnect_and_drops_telemetry() -> None:
    e = engine()
    assert e.link_down(1.0) == [STOP_LINE]
    # Dropped, never queued; the first drop of the outage is a notice for the log, the others are not.
    assert e.device_line("base", "T 87 0.50", 1.0) == [Notice(NoticeKind.TELEMETRY_DROPPING)]
    assert e.device_line("base", "T 88 0.50", 1.5) == []
    assert e.status().counters.telemetry_dropped_link_down == 2
    out = e.link_up("bridge2", 2.0)
    assert out[0] == SendSignal(CAPABILITIES, e.capabilities)
    assert out[-1] == Notice(NoticeKind.TELEMETRY_DROPPED, 2)     # the outage's sum, once
    assert e.device_line("base", "T 86 0.25", 2.0) == [
        SendSignal("robot.telemetry", '{"battery":86,"speed":0.25}', optional=True)]


def test_telemetry_throttled_through_tick() -> None:
    e = engine()
    for _ in range(int(BURST)):                                  # the throttle's burst
        assert len(e.device_line("base", "T 1 0", 0.0)) == 1
    assert e.device_line("base", "T 2 0", 0.01) == []
    assert e.device_line("base", "T 3 0", 0.02) == []
    assert e.next_deadline() == pytest.approx(0.1 / SLACK)
    assert e.tick(0.1) == [SendSignal("robot.telemetry", '{"battery":3,"speed":0}', optional=True)]
    assert e.mqtt_message("arm", "arm/state/grip", b'{"f":1}', 0.2) == [
        SendSignal("arm.state", '{"topic":"arm/state/grip","payload":{"f":1}}', optional=True)]


def test_authorisation_and_rest() -> None:
    e = engine()
    out = send(e, "mod.x")
    assert writes(out) == [] and acks(out)[0]["status"] == "unauthorised"
    assert writes(send(e, "mod.x", sender=MOD)) == [WriteLine("base", "X")]
    assert send(e, "robot.move", {"x": 0, "y": 0}, sender=None) == []    # REST refused, no ack target
    assert e.status().decisions[Decision.UNAUTHORISED] == 2
    assert send(e, "rest.ok", sender=None) == [WriteLine("base", "R")]


def test_unmatched_counted_and_own_signals_ignored() -> None:
    e = engine()
    assert send(e, "nothing.here") == []
    assert e.unmatched == 1
    me = Connection("bridge1", "", "publisher", 0)
    assert send(e, "robot.move", {"x": 0, "y": 0}, sender=me) == []


def test_describe_answers_capabilities_targeted() -> None:
    e = engine()
    out, status = send(e, "bridge.describe")
    assert out.type == CAPABILITIES and out.to == "op1" and not out.retry
    assert (status.type, status.to, json.loads(status.data)["state"]) == (STATUS, "op1", "degraded")
    caps = json.loads(out.data)
    assert caps["version"] == 1
    assert caps["rules"][0] == {"signal": "robot.move", "ack": True, "params": {
        "x": {"type": "float", "min": -1, "max": 1, "default": None, "required": True},
        "y": {"type": "float", "min": -1, "max": 1, "default": None, "required": True}}}
    assert caps["estop"] == {"signal": "robot.estop", "reset": "robot.estop_reset",
                             "reset_roles": ["moderator"]}
    assert caps["telemetry"] == ["robot.telemetry", "arm.state"]
    assert caps["control"] == {"lease": False, "acquire": "control.acquire", "release": "control.release",
                               "roles": ["moderator", "publisher"], "idle_timeout_ms": 60000}


def test_expect_reply_to_sender() -> None:
    e = engine()
    assert send(e, "robot.ping", now=1.0) == [WriteLine("base", "P")]
    assert e.device_line("base", "PONG 42", 1.1) == [SendSignal("robot.pong", '{"n":42}', "op1")]
    send(e, "robot.ping", now=2.0)
    assert e.next_deadline() == pytest.approx(2.2)
    e.tick(2.3)
    assert e.status().counters.expect_timeouts == 1
    # After the timeout the line is ordinary telemetry again (unmatched here).
    assert e.device_line("base", "PONG 1", 2.4) == []


def test_lease_rate_and_controller_lost() -> None:
    rules = (Rule(0, "robot.move", params=XY, send=(SerialAction("base", "M {x:.1f} {y:.1f}"),),
                  rate_limit=RateLimit(1, burst=1), ack=True),)
    e = Engine(make_config(rules=rules, control=Control(lease=True)))
    e.link_up("bridge1", 0.0)
    assert acks(send(e, "robot.move", {"x": 0, "y": 0}))[0]["status"] == "no_lease"
    out = send(e, "control.acquire", now=1.0)
    assert acks(out)[0]["status"] == "granted"
    assert json.loads(next(c for c in out if c.type == STATUS).data)["lease"] == "op1"
    assert writes(send(e, "robot.move", {"x": 0, "y": 0}, now=10.0)) == [WriteLine("base", "M 0.0 0.0")]
    assert acks(send(e, "robot.move", {"x": 0, "y": 0}, now=10.1))[0]["status"] == "rate_limited"
    assert acks(send(e, "robot.move", {"x": 0, "y": 0}, sender=MOD, now=11))[0]["status"] == "no_lease"
    out = e.connection_destroyed(OP, 12.0)
    assert out[0] == STOP_LINE and out[-1].type == STATUS


def test_shutdown_purges_every_queue_then_its_actions_and_closes_the_engine() -> None:
    e = engine()
    assert e.shutdown() == [Purge("base"), Purge("arm"), WriteLine("base", "BYE")]
    # Final: nothing later is taken, not even a watchdog due or a device coming back.
    assert send(e, "robot.move", {"x": 0.5, "y": 0}, now=1.0) == []
    assert e.tick(100.0) == [] and e.device_event(DeviceState("base", True), 2.0) == []


def test_slew_clamps_and_resets_after_safe_action() -> None:
    slewed = (ParamSpec("x", "float", min=-1, max=1, slew_per_s=1.0),)
    rules = (Rule(0, "m", params=slewed, send=(SerialAction("base", "{x:.2f}"),)),)
    e = Engine(make_config(rules=rules))
    e.link_up("b", 0.0)
    assert writes(send(e, "m", {"x": 0.1}, now=0.0)) == [WriteLine("base", "0.10")]
    assert writes(send(e, "m", {"x": 1.0}, now=0.5)) == [WriteLine("base", "0.60")]
    e.link_down(0.6)
    assert writes(send(e, "m", {"x": 1.0}, now=0.7)) == [WriteLine("base", "0.10")]


def test_hot_path_compiles_parses_and_logs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per signal: no regex compilation, no template parsing, no logging (all done once at load)."""
    import logging
    import re
    import string

    e = engine()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("called on the hot path")

    monkeypatch.setattr(re, "_compile", forbidden)
    monkeypatch.setattr(string.Formatter, "parse", forbidden)
    monkeypatch.setattr(logging.Logger, "_log", forbidden)
    assert writes(send(e, "robot.move", {"x": 0.5, "y": 0})) == [WriteLine("base", "M 0.50 0.00")]
    assert writes(send(e, "robot.move", {"x": 5, "y": 0})) == []
    assert writes(send(e, "arm.grip", {"force": 3})) == [Publish("arm", "arm/grip/set", b'{"force":3}', 1)]
    assert writes(send(e, "mod.anything", sender=MOD)) == [WriteLine("base", "X")]
    assert len(e.device_line("base", "T 5 0.5", 0.0)) == 1


def test_audit_records_every_decision_when_configured() -> None:
    from bridge.core.engine import Audit
    from bridge.core.model import Audit as AuditConfig

    e = Engine(make_config(audit=AuditConfig("/nonexistent/audit.log")))
    e.link_up("b", 0.0)
    out = send(e, "robot.move", {"x": 0.5, "y": 0})
    [rec] = [c.record for c in out if isinstance(c, Audit)]
    assert (rec.sender_id, rec.type, rec.decision, rec.time) == (
        "op1", "robot.move", Decision.APPLIED, 1000.0)
    assert json.loads(rec.to_json())["written"] == [{"device": "base", "line": "M 0.50 0.00"}]
    out = send(e, "arm.grip", {"force": 500})
    [rec] = [c.record for c in out if isinstance(c, Audit)]
    assert rec.decision == Decision.CLAMPED and rec.written[0].to_obj()["payload"] == '{"force":100}'
    out = send(e, "robot.move", {"x": 9, "y": 0})
    [rec] = [c.record for c in out if isinstance(c, Audit)]
    assert rec.decision == Decision.REJECTED and "above max" in rec.reason and rec.written == ()
    out = send(e, "robot.estop")
    assert [c.record.decision for c in out if isinstance(c, Audit)] == [Decision.APPLIED]
    out = send(e, "robot.estop_reset")        # a publisher may not reset
    assert [c.record.decision for c in out if isinstance(c, Audit)] == [Decision.UNAUTHORISED]
    # Without audit: configured off, no records.
    assert not [c for c in send(engine(), "robot.move", {"x": 0, "y": 0}) if isinstance(c, Audit)]
