"""Client side of wire protocol v1, fed literal frames (no event loop)."""

from __future__ import annotations

import json

import pytest

from bridge.core.client import Outbox, SeqFilter
from bridge.core.events import ConnectionCreated, ConnectionDestroyed, Signal
from bridge.core.signal import Connection
from bridge.core.wire import (
    Ack,
    Connected,
    HubDisconnected,
    HubError,
    Nack,
    Pong,
    ProtocolError,
    Resume,
    connect_frame,
    disconnect_frame,
    force_disconnect_frame,
    parse_hub_frame,
    ping_frame,
    signal_frame,
)

CONN = {"id": "c1", "data": "name=op", "role": "publisher", "creation_time": 1700000000000}


def test_client_frames() -> None:
    assert json.loads(connect_frame("T")) == {"op": "connect", "token": "T"}
    assert json.loads(connect_frame("T", Resume("c1", "s", 7))) == {
        "op": "connect", "token": "T", "resume": {"connection_id": "c1", "secret": "s", "last_seq": 7}}
    assert json.loads(signal_frame(3, "robot.move", '{"x":0.5}', None, True)) == {
        "op": "signal", "id": 3, "type": "robot.move", "data": '{"x":0.5}', "retry": True}
    assert json.loads(signal_frame(4, "a", "é", "c2", False)) == {
        "op": "signal", "id": 4, "type": "a", "data": "é", "to": "c2", "retry": False}
    assert json.loads(ping_frame(9)) == {"op": "ping", "id": 9}
    assert json.loads(disconnect_frame()) == {"op": "disconnect"}
    assert json.loads(force_disconnect_frame(5, "c2")) == {
        "op": "force_disconnect", "id": 5, "connection_id": "c2"}


def test_parse_each_hub_frame() -> None:
    connected = parse_hub_frame(json.dumps({
        "op": "connected", "connection": CONN, "connections": [dict(CONN, id="c2")],
        "resume_secret": "S", "resumed": False, "server_time": 5, "limits": {"max_type": 128}}))
    assert connected == Connected(Connection.from_wire(CONN), (Connection.from_wire(dict(CONN, id="c2")),),
                                  "S", False, 5)
    assert connected.last_id is None and connected.nacks == ()  # an older hub, or not a resume
    resumed = parse_hub_frame(json.dumps({
        "op": "connected", "connection": CONN, "resume_secret": "S", "resumed": True, "server_time": 5,
        "last_id": 7, "nacks": [{"id": 6, "code": 404, "message": "gone"}]}))
    assert isinstance(resumed, Connected) and resumed.connections == ()
    assert (resumed.last_id, resumed.nacks) == (7, (Nack(6, 404, "gone"),))
    assert parse_hub_frame('{"op":"ack","id":1}') == Ack(1)
    assert parse_hub_frame('{"op":"nack","id":2,"code":404,"message":"no such"}') == Nack(2, 404, "no such")
    assert parse_hub_frame('{"op":"pong","id":3,"server_time":42}') == Pong(3, 42)
    assert parse_hub_frame('{"op":"error","code":401,"message":"bad token"}') == HubError(401, "bad token")
    assert parse_hub_frame('{"op":"disconnected","reason":"forceDisconnected"}') == HubDisconnected(
        "forceDisconnected")
    assert parse_hub_frame(
        '{"op":"signal","seq":1,"type":"t","data":"d","from":null,"ts":9}') == Signal("t", "d", None, 1, 9)
    assert parse_hub_frame(json.dumps({"op": "connection_created", "connection": CONN})) == \
        ConnectionCreated(Connection.from_wire(CONN))
    assert parse_hub_frame(json.dumps({"op": "connection_destroyed", "connection": CONN,
                                       "reason": "clientDisconnected"})) == \
        ConnectionDestroyed(Connection.from_wire(CONN), "clientDisconnected")


@pytest.mark.parametrize("frame, message", [
    ("not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"op":"bogus"}', "unknown op"),
    ('{"id":1}', "unknown op"),
    ('{"op":"ack","id":"1"}', "'id' must be an integer"),
    ('{"op":"ack","id":true}', "'id' must be an integer"),
    ('{"op":"signal","seq":1,"type":"t","data":5,"from":null,"ts":1}', "'data' must be a string"),
    ('{"op":"signal","seq":1,"type":"t","data":"d","from":3,"ts":1}', "'from' must be"),
    ('{"op":"connected","connection":{"id":1},"server_time":1}', "must be strings"),
    ('{"op":"connected","connection":{},"connections":{},"server_time":1}', "must be a list"),
    (json.dumps({"op": "connected", "connection": CONN, "server_time": 1, "last_id": "3"}),
     "'last_id' must be an integer"),
    (json.dumps({"op": "connected", "connection": CONN, "server_time": 1, "last_id": 3, "nacks": [1]}),
     "'nacks' must be a list of objects"),
    (json.dumps({"op": "connected", "connection": CONN, "server_time": 1, "last_id": 3,
                 "nacks": [{"id": 2, "code": "404"}]}), "'code' must be an integer"),
])
def test_malformed_frames_raise_protocol_error(frame: str | bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_hub_frame(frame)


def test_seq_filter_drops_replays() -> None:
    f = SeqFilter()
    assert [f.accept(s) for s in (1, 2, 3, 2, 3, 4, 1)] == [True, True, True, False, False, True, False]
    assert f.last_seq == 4 and f.duplicates == 3


def test_outbox_ids_frames_and_answers() -> None:
    box: Outbox[str] = Outbox()
    a = box.new("t", "1", None, True, "ticket-a")
    assert a.id == 1 and json.loads(a.frame)["id"] == 1 and a.ticket == "ticket-a"
    assert box.new_id() == 2  # a ping or request takes an id from the same counter
    b = box.new("t", "2", "c2", False, "ticket-b")
    assert b.id == 3
    box.sent(a)
    box.sent(b)
    assert box.answered(3) is b and box.answered(3) is None and box.answered(2) is None
    assert box.answered(1) is a and not box.has_queued


def test_outbox_link_lost_requeues_retry_in_order_and_returns_the_rest() -> None:
    box: Outbox[str] = Outbox()
    outs = [box.new("t", str(i), None, i % 2 == 0, f"t{i}") for i in range(5)]  # 0, 2, 4 retry
    for out in outs[:4]:
        box.sent(out)
    box.enqueue(outs[4])  # queued during an earlier outage, after the in-flight ones
    failed = box.link_lost()
    assert [o.id for o in failed] == [2, 4]
    assert box.answered(1) is None  # nothing is in flight any more
    requeued = []
    while (o := box.next_queued()) is not None:
        requeued.append(o)
    assert requeued == [outs[0], outs[2], outs[4]]
    assert requeued[0].frame == outs[0].frame  # same id, same bytes when re-sent


def test_outbox_clear_returns_everything_pending() -> None:
    box: Outbox[str] = Outbox()
    a, b = box.new("t", "", None, True, "a"), box.new("t", "", None, True, "b")
    box.sent(a)
    box.enqueue(b)
    assert box.clear() == [a, b] and box.clear() == [] and not box.has_queued


def test_outbox_resumed_takes_out_what_the_hub_had_and_keeps_the_rest_queued() -> None:
    box: Outbox[str] = Outbox()
    outs = [box.new("t", str(i), None, True, f"t{i}") for i in range(4)]  # ids 1..4
    for out in outs[:3]:
        box.sent(out)
    box.enqueue(outs[3])  # queued during the outage, never sent
    assert box.link_lost() == []
    assert box.resumed(2) == outs[:2]  # the hub processed 1 and 2: settled, not re-sent
    assert box.resumed(2) == []
    assert [box.next_queued(), box.next_queued(), box.next_queued()] == [outs[2], outs[3], None]
