"""What the engine answers its sender: acks that carry the values written (and which were clamped),
and bridge.ping -> bridge.pong, targeted, rate-limited per sender, never touching a device."""

from __future__ import annotations

import json
from typing import Any

from bridge.core.engine import Engine, SendSignal
from bridge.core.engine.ping import PING, PING_BURST, PING_HZ, PONG
from bridge.core.model import ParamSpec, Rule, SerialAction
from bridge.core.signal import Connection
from tests.helpers.engine import MOD, NOW_MS, OP, acks, engine, make_config, send, writes


def pongs(out: list[Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [(c.to, json.loads(c.data)) for c in out if isinstance(c, SendSignal) and c.type == PONG]


def test_a_clamped_ack_says_which_values_were_written() -> None:
    clamp = (ParamSpec("x", "float", min=-1, max=1, on_range="clamp"),
             ParamSpec("y", "float", min=-1, max=1, on_range="clamp"),
             ParamSpec("speed", "int", min=0, max=9, default=3, required=False))
    rules = (Rule(0, "m", params=clamp, send=(SerialAction("base", "M {x} {y} {speed}"),), ack=True),)
    e = Engine(make_config(rules=rules))
    e.link_up("b", 0.0)
    out = send(e, "m", {"x": 2.5, "y": 0.5, "id": "c1"})
    assert [w.line for w in writes(out)] == ["M 1.0 0.5 3"]
    assert acks(out) == [{"id": "c1", "status": "clamped", "reason": None,
                          "values": {"x": 1.0, "y": 0.5, "speed": 3}, "clamped": ["x"]}]


def test_a_slewed_value_is_reported_as_clamped() -> None:
    slewed = (ParamSpec("x", "float", min=-1, max=1, slew_per_s=1.0),)
    e = Engine(make_config(rules=(Rule(0, "m", params=slewed, send=(SerialAction("base", "{x:.2f}"),),
                                       ack=True),)))
    e.link_up("b", 0.0)
    send(e, "m", {"x": 0.0}, now=0.0)
    [ack] = acks(send(e, "m", {"x": 1.0}, now=0.25, seq=2))
    assert (ack["status"], ack["values"], ack["clamped"]) == ("clamped", {"x": 0.25}, ["x"])


def test_a_refusal_carries_no_values() -> None:
    [ack] = acks(send(engine(), "robot.move", {"x": 5, "y": 0}))
    assert ack["status"] == "rejected" and "values" not in ack


def test_ping_is_answered_to_its_sender_only_with_its_id_and_writes_nothing() -> None:
    e = engine()
    out = send(e, PING, {"id": "p1"})
    assert writes(out) == []
    assert pongs(out) == [(OP.id, {"id": "p1", "hub_ms": NOW_MS})]
    assert all(not c.retry for c in out if isinstance(c, SendSignal))
    assert pongs(send(e, PING, "not json", sender=MOD)) == [(MOD.id, {"id": None, "hub_ms": NOW_MS})]
    assert pongs(send(e, PING, {"id": "x" * 129}, sender=MOD, now=1.0)) == [
        (MOD.id, {"id": None, "hub_ms": NOW_MS})]


def test_pings_are_rate_limited_per_sender_and_rest_pings_get_nothing() -> None:
    e = engine()
    answered = sum(len(pongs(send(e, PING, {"id": i}))) for i in range(PING_BURST + 5))
    assert answered == PING_BURST
    # Another sender is not affected by the first one's flood.
    other = Connection("op2", "", "publisher", 0)
    assert len(pongs(send(e, PING, {"id": 1}, sender=other))) == 1
    # The bucket refills at PING_HZ.
    assert len(pongs(send(e, PING, {"id": 2}, now=1.0 / PING_HZ))) == 1
    assert send(e, PING, {"id": 3}, sender=None) == []
    assert e.status().counters.pings_refused == 5 + 1 and e.status().counters.pings_answered == PING_BURST + 2
