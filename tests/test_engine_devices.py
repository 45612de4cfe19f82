"""bridge.core.engine and the device links' answers, pure: a command is decided against the state of
its devices (``device_down`` / ``overloaded``, nothing written), and a device that comes back gets the
safe actions it missed (e-stop while latched, watchdog stops that fell due while it was down) first."""

from __future__ import annotations

from typing import Any

from bridge.core.engine import Engine, Purge, SendSignal, WriteLine
from bridge.core.engine.decisions import Decision, Verdict
from bridge.core.engine.outcomes import DeviceState, WriteRefused
from tests.helpers.engine import MOD, acks, engine, send, writes

DOWN = Verdict(Decision.DEVICE_DOWN, "device base is down")


def gated(state: dict[str, Verdict | None]) -> Engine:
    """An engine whose gate answers from ``state`` (device -> refusal), as the daemon's links would."""
    e = engine()
    e.gate = lambda cmd: state.get(cmd.device)
    return e


def test_a_command_for_a_device_down_or_full_is_refused_and_changes_nothing() -> None:
    state: dict[str, Verdict | None] = {"base": DOWN}
    e = gated(state)
    out = send(e, "robot.move", {"x": 0.5, "y": 0, "id": "a"}, now=1.0)
    assert writes(out) == [] and acks(out) == [{"id": "a", "status": "device_down",
                                                 "reason": "device base is down"}]
    assert e.next_deadline() is None            # no watchdog armed: nothing was written
    state["base"] = Verdict(Decision.OVERLOADED, "device base: queue full")
    assert acks(send(e, "robot.move", {"x": 0.5, "y": 0}, now=1.1))[0]["status"] == "overloaded"
    state["base"] = None
    out = send(e, "robot.move", {"x": 0.5, "y": 0}, now=1.2)
    assert writes(out) == [WriteLine("base", "M 0.50 0.00")] and acks(out)[0]["status"] == "applied"
    assert e.status().decisions[Decision.DEVICE_DOWN] == e.status().decisions[Decision.OVERLOADED] == 1


def test_estop_purges_every_device_queue_before_its_actions() -> None:
    out = send(engine(), "robot.estop", now=1.0)
    assert [c for c in out if not isinstance(c, SendSignal)][:3] == [
        Purge("base"), Purge("arm"), WriteLine("base", "S")]


def back(e: Engine, device: str, now: float) -> list[Any]:
    """What the engine writes when ``device`` comes back (its status broadcast left out)."""
    e.device_event(DeviceState(device, False), now)
    return [c for c in e.device_event(DeviceState(device, True), now) if not isinstance(c, SendSignal)]


def test_device_back_gets_the_watchdog_stop_it_missed_and_nothing_else() -> None:
    e = engine()
    e.device_event(DeviceState("base", True), 0.0)
    assert writes(send(e, "robot.move", {"x": 0.5, "y": 0}, now=1.0)) == [WriteLine("base", "M 0.50 0.00")]
    e.device_event(DeviceState("base", False), 1.1)
    [stop] = e.tick(1.6)                          # the watchdog falls due while the port is gone
    assert stop == WriteLine("base", "M 0 0")
    e.device_event(WriteRefused(stop), 1.6)       # ... so the link refused it
    e.device_event(WriteRefused(WriteLine("base", "M 0.90 0.00")), 1.7)   # refused meanwhile: never owed
    assert e.status().counters.writes_refused == 2
    assert [c for c in e.device_event(DeviceState("base", True), 2.0)
            if not isinstance(c, SendSignal)] == [stop]
    assert back(e, "base", 3.0) == []             # delivered once; a later outage owes nothing


def test_device_back_while_latched_gets_the_estop_actions_first() -> None:
    e = engine()
    e.device_event(DeviceState("base", True), 0.0)
    e.device_event(DeviceState("base", False), 0.5)
    out = send(e, "robot.estop", now=1.0)
    for cmd in writes(out):
        e.device_event(WriteRefused(cmd), 1.0)    # the port is gone: refused
    assert back(e, "base", 2.0) == [WriteLine("base", "S")]
    assert back(e, "base", 3.0) == [WriteLine("base", "S")]   # latched: every time it comes back
    assert back(e, "arm", 3.0) == []                           # no e-stop action for the arm
    send(e, "robot.estop_reset", sender=MOD, now=4.0)
    assert not e.estopped and back(e, "base", 5.0) == []


def test_owed_safe_actions_survive_a_reload() -> None:
    old = engine()
    old.device_event(DeviceState("arm", True), 0.0)
    old.device_event(DeviceState("arm", False), 0.1)
    old.device_event(WriteRefused(WriteLine("base", "M 0 0")), 0.0)
    new = Engine(old.config)
    new.take_over(old.hand_over(), 1.0)
    assert back(new, "base", 2.0) == [WriteLine("base", "M 0 0")]
    assert back(new, "arm", 2.0) == []
