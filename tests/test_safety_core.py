"""bridge.core.engine.safety: the e-stop latch table, watchdog deadlines, stale guard."""

from __future__ import annotations

from bridge.core.engine.age import is_stale, write_deadline
from bridge.core.engine.safety import _TRANSITIONS, SafetyState
from bridge.core.model import Estop, Rule, Safety, SerialAction, Watchdog

STOP = SerialAction("base", "S")
CONFIG = Safety(estop=Estop("robot.estop", "robot.estop_reset", send=(STOP,)))


def test_table_is_complete() -> None:
    assert {(s, e) for s, e in _TRANSITIONS} == {
        (s, e) for s in ("armed", "estopped") for e in ("estop", "reset", "reset_denied", "command")}


def test_latch_and_reset_roles() -> None:
    s = SafetyState(CONFIG)
    assert s.admit() and not s.latched
    assert s.reset("moderator") == "not_latched"
    assert s.estop() == (STOP,)
    assert s.latched and not s.admit() and not s.admit()
    assert s.estop() == (STOP,)                # again: runs the actions again, stays latched
    assert s.reset("publisher") == "denied" and s.latched
    assert s.reset(None) == "denied" and s.latched   # REST never resets
    assert s.reset("moderator") == "unlatched" and not s.latched and s.admit()


def test_custom_reset_roles() -> None:
    s = SafetyState(Safety(estop=Estop("e", "r", reset_roles=frozenset({"publisher"}))))
    s.estop()
    assert s.reset("moderator") == "denied"
    assert s.reset("publisher") == "unlatched"


def test_watchdog_fires_once_and_estop_cancels() -> None:
    rule = Rule(3, "robot.move", watchdog=Watchdog(500, (STOP,)))
    s = SafetyState(CONFIG)
    assert s.next_deadline() is None
    s.refresh(rule, 10.0)
    s.refresh(rule, 10.2)                     # refreshed: the deadline moves
    assert s.next_deadline() == 10.7
    assert s.expired(10.69) == []
    assert s.expired(10.7) == [3]
    assert s.expired(20.0) == [] and s.next_deadline() is None
    s.refresh(rule, 30.0)
    s.estop()
    assert s.next_deadline() is None
    s.refresh(Rule(4, "no.watchdog"), 1.0)
    assert s.next_deadline() is None


def test_stale_guard() -> None:
    assert not is_stale(None, 10**9)
    assert not is_stale(300, 300)
    assert is_stale(300, 301)
    assert not is_stale(300, -100)       # a future ts (clock error) is not stale
    assert write_deadline(None, 5, 1.0) is None
    assert write_deadline(300, 100, 1.0) == 1.2
