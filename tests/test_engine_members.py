"""The engine's member table, from connection events only; a sender it was never told of; notices;
the typed counters read through ``status()``; the reload hand-over value."""

from __future__ import annotations

import dataclasses

import pytest

from bridge.core.engine import Engine, SendSignal
from bridge.core.engine.actions import Notice, NoticeKind
from bridge.core.engine.decisions import Decision
from bridge.core.engine.handover import HandOver
from bridge.core.events import Signal
from bridge.core.signal import Connection
from tests.helpers.engine import MOD, NOW_MS, OP, acks, engine, make_config, sig, writes

TOKEN_OP = Connection("op9", "", "publisher", 0, "tok-1")


def test_a_sender_never_announced_is_a_roleless_stand_in_whatever_it_claims() -> None:
    e = engine()
    # "mod1" sends without a ConnectionCreated: it may not pass as the moderator it may be.
    out = e.signal(sig("mod.x", {"id": "m"}, sender=MOD), 1.0)
    assert writes(out) == [] and acks(out)[0]["status"] == "unauthorised"
    assert writes(e.signal(sig("rest.ok", sender=MOD), 1.0))   # an open rule: any connection
    assert e.status().decisions[Decision.UNAUTHORISED] == 1
    assert e.status().counters.unknown_senders == 2
    e.connection_created(MOD, 1.1)                            # announced: now it is the moderator
    out = e.signal(sig("mod.x", {"id": "m2"}, sender=MOD, seq=2), 1.2)
    assert acks(out)[0]["status"] == "applied" and e.status().counters.unknown_senders == 2


def test_a_destroyed_member_is_forgotten_and_a_new_session_forgets_everyone() -> None:
    e = engine()
    e.connection_created(MOD, 0.0)
    e.connection_destroyed(MOD, 0.5)
    assert acks(e.signal(sig("mod.x", sender=MOD), 1.0))[0]["status"] == "unauthorised"
    e.connection_created(MOD, 2.0)
    e.session_left()                                          # the bridge's connection is gone for good
    assert acks(e.signal(sig("mod.x", sender=MOD, seq=2), 3.0))[0]["status"] == "unauthorised"


def test_the_age_comes_with_the_signal_alone() -> None:
    e = engine()
    e.connection_created(OP, 0.0)
    # ts says nothing about the age: only age_ms does (the hub clock is the client's business).
    fresh = Signal("robot.move", '{"x":0.5,"y":0,"id":1}', OP.id, 1, 0, age_ms=10)
    old = Signal("robot.move", '{"x":0.5,"y":0,"id":2}', OP.id, 2, NOW_MS, age_ms=301)
    assert acks(e.signal(fresh, 1.0))[0]["status"] == "applied"
    [ack] = acks(e.signal(old, 1.1))
    assert ack["status"] == "stale" and ack["reason"] == "301 ms old, max_age_ms 300"


def test_estop_latch_and_reset_are_notices_once() -> None:
    e = engine()
    e.connection_created(MOD, 0.0)
    assert Notice(NoticeKind.ESTOP_LATCHED) in e.signal(sig("robot.estop", sender=MOD), 1.0)
    assert Notice(NoticeKind.ESTOP_LATCHED) not in e.signal(sig("robot.estop", sender=MOD, seq=2), 1.1)
    assert Notice(NoticeKind.ESTOP_RESET) in e.signal(sig("robot.estop_reset", sender=MOD, seq=3), 1.2)
    c = e.status().counters
    assert (c.estops, c.estop_reset_unlatched) == (2, 1)


def test_status_is_a_copy_no_reader_can_change() -> None:
    e = engine()
    status = e.status()
    status.counters.signals = 99                              # a reader's copy, not the engine's
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.linked = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        status.devices["base"] = True  # type: ignore[index]
    assert e.status().counters.signals == 0


def test_hand_over_is_a_value_and_closes_the_old_engine() -> None:
    old = engine()
    old.connection_created(TOKEN_OP, 0.0)
    old.signal(sig("robot.move", {"x": 0.5, "y": 0}, sender=TOKEN_OP), 1.0)
    handed = old.hand_over()
    assert isinstance(handed, HandOver) and handed.members == (TOKEN_OP,)
    assert handed.fired and handed.counters.watchdog_fired == 1   # the pending watchdog fired
    assert old.closed and old.signal(sig("robot.move", {"x": 0, "y": 0}, sender=TOKEN_OP), 1.1) == []
    new = Engine(make_config())
    out = new.take_over(handed, 1.2)
    assert writes(out)[0] == handed.fired[0]
    assert new.status().counters.signals == 1 and new.linked
    # The member table came along: the token's connection is still known.
    assert acks(new.signal(sig("robot.move", {"x": 0.1, "y": 0}, sender=TOKEN_OP, seq=2), 1.3))[0][
        "status"] == "applied"
    assert new.status().counters.unknown_senders == 0


def test_a_deeply_nested_mqtt_payload_is_telemetry_text_not_a_crash() -> None:
    e = engine()
    out = e.mqtt_message("arm", "arm/state/grip", b"[" * 4000, 1.0)   # one strict decoder for all JSON
    assert [c.type for c in out if isinstance(c, SendSignal)] == ["arm.state"]
