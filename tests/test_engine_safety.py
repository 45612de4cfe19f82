"""bridge.core: bridge.status (content, coalescing), the reload hand-over between engines, and the slew
limiter moving only for commands that were really written. Pure: no event loop."""

from __future__ import annotations

import itertools
import json
from typing import Any

from bridge.core.engine import CAPABILITIES, STATUS, Engine, SendSignal, WriteLine
from bridge.core.engine.outcomes import DeviceState
from bridge.core.engine.status import StatusAnnouncer
from bridge.core.model import Control, MqttAction, ParamSpec, Rule, SerialAction, Watchdog
from tests.helpers.engine import MOD, OP, STOP, XY, acks, make_config, send, writes


def statuses(out: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(c.data) for c in out if isinstance(c, SendSignal) and c.type == STATUS]


def linked(**over: Any) -> Engine:
    e = Engine(make_config(**over))
    e.link_up("bridge1", 0.0)
    return e


def test_status_on_connect_lists_devices_counters_and_state() -> None:
    e = Engine(make_config())
    out = e.link_up("bridge1", 0.0)
    assert [c.type for c in out] == [CAPABILITIES, STATUS]
    [status] = statuses(out)
    assert status["version"] == 1 and status["state"] == "degraded"     # no device reported up yet
    assert status["devices"] == {"base": "down", "arm": "down"}
    assert (status["estopped"], status["lease"]) == (False, None)
    assert status["counters"]["decisions"] == {d: 0 for d in (
        "applied", "clamped", "rejected", "stale", "estopped", "no_lease", "rate_limited", "unauthorised",
        "device_down", "overloaded")}


def test_status_on_every_change_coalesced_when_flapping() -> None:
    e = linked()
    assert statuses(e.device_event(DeviceState("base", True), 1.0))[0]["devices"]["base"] == "up"
    assert e.device_event(DeviceState("base", True), 1.1) == []                 # no change, nothing said
    assert e.device_event(DeviceState("nosuch", True), 1.1) == []
    # A flapping device inside the interval: nothing now, one status (the latest state) at its end.
    for i in range(50):
        assert e.device_event(DeviceState("arm", i % 2 == 0), 1.1 + i * 0.001) == []
    assert e.next_deadline() == 1.5
    assert statuses(e.tick(1.49)) == []
    [status] = statuses(e.tick(1.5))
    assert status["devices"] == {"base": "up", "arm": "down"} and status["state"] == "degraded"
    assert e.next_deadline() is None
    # After a quiet interval a change is announced at once again; then the e-stop, with its counter.
    assert statuses(e.device_event(DeviceState("arm", True), 3.0))[0]["state"] == "ready"
    send(e, "robot.move", {"x": 0, "y": 0}, now=3.1)
    e.tick(3.6)   # the watchdog of robot.move fires
    [status] = statuses(send(e, "robot.estop", now=4.0))
    assert status["state"] == "estopped" and status["estopped"] is True
    counters = status["counters"]
    assert (counters["estops"], counters["watchdog_fired"], counters["decisions"]["applied"]) == (1, 1, 1)
    [status] = statuses(send(e, "robot.estop_reset", sender=MOD, now=5.0))
    assert status["state"] == "ready"


def test_no_status_while_the_link_is_down_describe_answers_it() -> None:
    e = linked()
    e.link_down(1.0)
    assert e.device_event(DeviceState("base", True), 2.0) == []
    assert e.next_deadline() is None
    out = e.link_up("bridge1", 3.0)
    assert statuses(out)[0]["devices"]["base"] == "up"
    caps, status = send(e, "bridge.describe", now=3.1)
    assert (caps.type, caps.to, status.type, status.to) == (CAPABILITIES, "op1", STATUS, "op1")
    assert send(e, "bridge.describe", sender=None) == []            # REST: nobody to answer


def test_announcer_bounds_broadcasts() -> None:
    a = StatusAnnouncer(0.5)
    sent = [t / 100 for t in range(1000) if a.changed(t / 100) or a.due(t / 100)]
    # 10 s of changes every 10 ms: one broadcast per 0.5 s, never more.
    assert len(sent) == 20 and all(b - a >= 0.5 - 1e-9 for a, b in itertools.pairwise(sent))


def test_lease_change_and_controller_lost_announced() -> None:
    e = linked(control=Control(lease=True))
    out = send(e, "control.acquire", now=1.0)
    assert acks(out)[0]["status"] == "granted" and statuses(out)[0]["lease"] == "op1"
    out = e.connection_destroyed(OP, 2.0)
    assert out[0] == WriteLine("base", "M 0 0") and statuses(out)[0]["lease"] is None


def test_take_over_keeps_estop_lease_link_and_fires_pending_watchdogs() -> None:
    old = linked(control=Control(lease=True))
    old.device_event(DeviceState("base", True), 0.1)
    send(old, "control.acquire", now=1.0)
    assert writes(send(old, "robot.move", {"x": 0.5, "y": 0}, now=1.1)) == [WriteLine("base", "M 0.50 0.00")]
    send(old, "robot.estop", now=1.2)
    assert old.estopped
    send(old, "robot.move", {"x": 0.5, "y": 0}, now=1.3)            # refused, counted
    new_rules = (Rule(0, "robot.move", params=XY, send=(SerialAction("base", "GO {x:.1f} {y:.1f}"),),
                      watchdog=Watchdog(200, (STOP,))),)
    new = Engine(make_config(rules=new_rules, control=Control(lease=True)))
    out = new.take_over(old.hand_over(), 2.0)
    assert writes(out) == []              # the e-stop cleared the watchdog: nothing pending to fire
    caps, status = [c for c in out if isinstance(c, SendSignal)]
    assert caps.type == CAPABILITIES and "GO" not in caps.data and status.type == STATUS
    s = json.loads(status.data)
    assert (s["estopped"], s["lease"], s["devices"]["base"]) == (True, "op1", "up")
    assert s["counters"]["decisions"]["estopped"] == 1 and s["counters"]["decisions"]["applied"] == 1
    assert acks(send(new, "robot.move", {"x": 0, "y": 0}, now=2.1)) == []   # no ack on the new rule
    assert writes(send(new, "robot.move", {"x": 0, "y": 0}, now=2.1)) == []  # still e-stopped
    send(new, "robot.estop_reset", sender=MOD, now=3.0)
    assert writes(send(new, "robot.move", {"x": 0.5, "y": 0}, sender=MOD, now=3.1)) == []  # not holder
    assert writes(send(new, "robot.move", {"x": 0.5, "y": 0}, now=3.2)) == [WriteLine("base", "GO 0.5 0.0")]


def test_take_over_fires_a_pending_watchdog_with_the_old_safe_action() -> None:
    old = linked()
    send(old, "robot.move", {"x": 0.5, "y": 0}, now=1.0)
    new = Engine(make_config(rules=()))
    assert writes(new.take_over(old.hand_over(), 1.1)) == [WriteLine("base", "M 0 0")]
    assert new.next_deadline() is None and old.next_deadline() is None


def test_slew_reference_moves_only_for_written_commands() -> None:
    """A command whose template cannot be filled is rejected and must not move the slew reference."""
    params = (ParamSpec("x", "float", min=-1, max=1, slew_per_s=1.0),
              ParamSpec("name", "string", pattern=r"[a-z+]{1,8}"))
    rules = (Rule(0, "m", params=params, send=(MqttAction("arm", "cmd/{name}", "{x:.2f}"),), ack=True),)
    e = linked(rules=rules)
    assert len(writes(send(e, "m", {"x": 0.0, "name": "a"}, now=0.0))) == 1
    out = send(e, "m", {"x": 1.0, "name": "a+"}, now=0.5)           # '+' in a topic: FillError
    assert writes(out) == [] and acks(out)[0]["status"] == "rejected"
    # From the last *written* value (0.0), 0.0 is no step at all: applied, not clamped from 0.5.
    out = send(e, "m", {"x": 0.0, "name": "a"}, now=0.6)
    assert acks(out)[0]["status"] == "applied"
    assert [c.payload for c in writes(out)] == [b"0.00"]


def test_reload_refusals_name_what_needs_a_restart() -> None:
    from dataclasses import replace

    from bridge.core.engine.reload import restart_needed
    from bridge.core.model import Device, Estop, MqttTelemetry, Safety, SerialDeviceConfig, SessionSettings

    old = make_config()
    assert restart_needed(old, replace(old, rules=())) == []                 # rules: applied live
    moved = dict(old.devices, base=Device("base", serial=SerialDeviceConfig("/dev/ttyUSB1")))
    assert restart_needed(old, replace(old, devices=moved)) == ["device base changed (needs a restart)"]
    extra = dict(old.devices, aux=Device("aux", serial=SerialDeviceConfig("/dev/ttyUSB2")))
    assert restart_needed(old, replace(old, devices=extra)) == ["device aux added (needs a restart)"]
    renewed = replace(old, session=SessionSettings("ws://127.0.0.1:1", "s", "renewed"))
    assert restart_needed(old, renewed) == []                                # a new token: live
    session = replace(old, session=SessionSettings("ws://127.0.0.1:1", "other", "t"))
    assert restart_needed(old, session) == ["session url or session_id changed (needs a restart)"]
    topics = replace(old, telemetry=(MqttTelemetry("arm", "arm/other/#", "arm.state"),))
    assert restart_needed(old, topics) == ["device arm: MQTT telemetry topics changed (needs a restart)"]
    # The latch survives a reload: a config that could never reset it is refused while latched.
    no_estop = replace(old, safety=Safety())
    assert restart_needed(old, no_estop) == []
    assert "e-stop is latched" in restart_needed(old, no_estop, estopped=True)[0]
    other = replace(old, safety=Safety(estop=Estop("halt", "unhalt")))
    assert restart_needed(old, other, estopped=True) == []
