"""The sans-I/O session client (bridge.core.client.ClientSession) with no socket and no event loop:
the hub's own encoders (bridge.core.wire) make the frames, a concurrent.futures.Future is the ticket a
caller waits on, and the clock is whatever number the test passes."""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core import wire
from bridge.core.client import ClientSession, LinkState
from bridge.core.errors import SignalError
from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    Signal,
)
from bridge.core.signal import Connection

ME = Connection("me", "name=op", "publisher", 1)
ROBOT = Connection("robot", "bridge=rover", "publisher", 2)
CAM = Connection("cam", "", "subscriber", 3)
TOKEN = "T1==token"


def join(core: ClientSession, me: Connection, others: list[Connection], *, sent: float, received: float,
         server_time: int, resumed: bool = False, last_id: int | None = None,
         nacks: tuple[tuple[int, int, str], ...] = ()) -> tuple[list[object], str | None]:
    """What the adapter does: the hub's answer, frame by frame, through JoinReader, then joined()."""
    reader = wire.JoinReader()
    answer = None
    for text in wire.connected_frames(me, others, "secret-1", resumed, server_time, last_id, nacks):
        answer = reader.feed(text)
    assert answer is not None
    events, reply = core.joined(answer, sent, received)
    return list(events), reply


def joined(**options: float) -> ClientSession:
    core = ClientSession(**options)
    events, reply = join(core, ME, [ROBOT], sent=10.0, received=10.010, server_time=5000)
    assert events == [ConnectionCreated(ROBOT)] and reply is None
    return core


def signal_in(seq: int, ts: int, type_: str = "robot.telemetry") -> str:
    return wire.SignalBody(type_, '{"v":1}', "robot", ts).frame(seq)


def test_first_join_connects_and_announces_everyone_already_there() -> None:
    core = ClientSession()
    assert json.loads(core.connect_frame(TOKEN)) == {"op": "connect", "token": TOKEN}
    events, _ = join(core, ME, [ROBOT, CAM], sent=1.0, received=1.002, server_time=9000)
    assert events == [ConnectionCreated(ROBOT), ConnectionCreated(CAM)]
    assert core.state is LinkState.CONNECTED and core.connection == ME
    assert set(core.connections) == {"robot", "cam"}
    assert core.clock.rtt_ms == pytest.approx(2.0)


def test_a_refused_first_join_raises_the_hubs_code_and_closes() -> None:
    core = ClientSession()
    with pytest.raises(SignalError) as e:
        core.joined(wire.JoinReader().feed(wire.error(401, "token expired")) or pytest.fail(), 1.0, 1.1)
    assert (e.value.code, e.value.message) == (401, "token expired")
    assert core.state is LinkState.CLOSED


def test_signal_in_is_an_event_with_its_age_on_the_hub_clock_and_duplicates_are_dropped() -> None:
    core = joined()
    # offset = 5000 - (10000 + 10010) / 2 = -5005 ms: at local 11.0 s the hub's clock reads 5995.
    event = core.receive(signal_in(1, 5900), now=11.0)
    assert event == Signal("robot.telemetry", '{"v":1}', "robot", 1, 5900, age_ms=95)
    assert core.receive(signal_in(1, 5900), now=11.1) is None   # a replay overlapping what came
    assert core.stats["received"] == 1 and core.stats["duplicates"] == 1
    later = core.receive(signal_in(2, 5900), now=12.0)
    assert isinstance(later, Signal) and later.age_ms == 1095


def test_acks_and_nacks_settle_the_signal_they_answer() -> None:
    core = joined()
    a: Future[None] = Future()
    b: Future[None] = Future()
    frame_a = core.signal("robot.move", '{"x":1}', None, True, a, now=11.0)
    frame_b = core.signal("robot.move", '{"x":9}', "robot", True, b, now=11.0)
    assert frame_a is not None and frame_b is not None
    ida, idb = json.loads(frame_a)["id"], json.loads(frame_b)["id"]
    assert json.loads(frame_b)["to"] == "robot" and core.awaiting_answer == 2
    assert core.receive(wire.ack(ida), now=11.1) is None
    assert core.receive(wire.nack(idb, 403, "not allowed"), now=11.1) is None
    assert a.result(0) is None
    err = b.exception(0)
    assert isinstance(err, SignalError) and (err.code, err.message) == (403, "not allowed")
    assert core.stats["acked"] == 1 and core.awaiting_answer == 0
    assert core.receive(wire.ack(ida), now=11.2) is None   # answered twice: nothing happens


def test_the_local_check_refuses_before_anything_is_sent() -> None:
    core = joined()
    for args in (("bad type!", ""), ("t", "x" * 9000)):
        with pytest.raises(SignalError) as e:
            core.signal(*args, None, True, Future(), now=1.0)
        assert e.value.code in (400, 413)
    with pytest.raises(SignalError):
        core.nowait_frame("t", "", "")
    assert core.outbox.last_id == 0


def test_link_lost_requeues_retry_signals_fails_the_others_then_resume_settles_by_last_id() -> None:
    core = joined()
    core.receive(signal_in(7, 5900), now=11.0)
    processed: Future[None] = Future()
    refused: Future[None] = Future()
    unseen: Future[None] = Future()
    no_retry: Future[None] = Future()
    pinged: Future[float] = Future()
    ids = []
    for ticket, retry in ((processed, True), (refused, True), (unseen, True), (no_retry, False)):
        frame = core.signal("robot.move", "{}", None, retry, ticket, now=11.0)
        assert frame is not None
        ids.append(json.loads(frame)["id"])
    core.ping_frame(11.0, pinged)

    assert core.link_lost(now=12.0) == [Reconnecting()]
    assert core.state is LinkState.RECONNECTING
    assert getattr(no_retry.exception(0), "code", None) == 500
    assert isinstance(pinged.exception(0), SignalError)
    assert not (processed.done() or refused.done() or unseen.done())
    # While reconnecting: a retry signal queues, a non-retry one fails at once.
    queued: Future[None] = Future()
    assert core.signal("robot.move", "{}", None, True, queued, now=12.5) is None
    with pytest.raises(SignalError) as e:
        core.signal("robot.move", "{}", None, False, Future(), now=12.5)
    assert e.value.code == 500 and core.stats["dropped"] == 2
    assert core.nowait_frame("t", "", None) is None

    resume = json.loads(core.connect_frame(TOKEN))["resume"]
    assert resume == {"connection_id": "me", "secret": "secret-1", "last_seq": 7}
    events, reply = join(core, ME, [CAM], sent=13.0, received=13.004, server_time=8000, resumed=True,
                         last_id=ids[1], nacks=((ids[1], 429, "rate limit"),))
    assert reply is None
    assert events == [Reconnected(), ConnectionDestroyed(ROBOT, "networkDisconnected"),
                      ConnectionCreated(CAM)]
    assert core.connected and core.stats["reconnects"] == 1
    assert processed.result(0) is None                            # the hub had it: its ack was lost
    assert getattr(refused.exception(0), "code", None) == 429     # ... and this one's nack
    # The unseen one and the one queued during the outage go out again, in order, saying how long
    # they waited (queued_ms), so the hub stamps ts when they were issued.
    again = [json.loads(f or "") for f in (core.next_queued(14.0), core.next_queued(14.0))]
    assert [f["id"] for f in again] == [ids[2], ids[3] + 2]   # ids[3] + 1 was the ping
    assert [f["queued_ms"] for f in again] == [3000, 1500]
    assert core.next_queued(14.0) is None
    for f in again:
        core.receive(wire.ack(f["id"]), now=14.1)
    assert unseen.result(0) is None and queued.result(0) is None


def test_an_older_hub_without_last_id_gets_everything_in_flight_again() -> None:
    core = joined()
    t: Future[None] = Future()
    frame = core.signal("a", "", None, True, t, now=11.0)
    core.link_lost(now=11.5)
    join(core, ME, [ROBOT], sent=12.0, received=12.001, server_time=7000, resumed=True)
    assert core.next_queued(12.0) == wire.with_queued_ms(frame or "", 1000) and not t.done()


def test_a_refused_resume_ends_the_session_and_fails_everything_pending() -> None:
    core = joined()
    t: Future[None] = Future()
    core.signal("a", "", None, True, t, now=11.0)
    core.link_lost(now=11.5)
    answer = wire.JoinReader().feed(wire.error(403, "resume window over"))
    assert answer is not None
    events, reply = core.joined(answer, 12.0, 12.1)
    assert events == [Disconnected("networkDisconnected")] and reply is None
    assert core.state is LinkState.CLOSED and getattr(t.exception(0), "code", None) == 500
    assert core.finish("clientDisconnected") == []   # idempotent: Disconnected once


def test_a_fresh_connection_instead_of_ours_is_given_back() -> None:
    core = joined()
    core.link_lost(now=11.5)
    events, reply = join(core, Connection("other", "", "publisher", 9), [ROBOT], sent=12.0,
                         received=12.1, server_time=7000, resumed=False)
    assert events == [Disconnected("networkDisconnected")]
    assert reply is not None and json.loads(reply) == {"op": "disconnect"}


def test_the_hub_putting_us_out_is_the_last_event() -> None:
    core = joined()
    t: Future[None] = Future()
    core.signal("a", "", None, True, t, now=11.0)
    assert core.receive(wire.disconnected("forceDisconnected"), now=11.1) == Disconnected("forceDisconnected")
    assert core.state is LinkState.CLOSED and t.done()
    with pytest.raises(SignalError):
        core.signal("a", "", None, True, Future(), now=11.2)


def test_members_come_and_go_once_each() -> None:
    core = joined()
    assert core.receive(wire.connection_created(CAM), now=11.0) == ConnectionCreated(CAM)
    assert core.receive(wire.connection_created(CAM), now=11.0) is None
    assert core.receive(wire.connection_created(ME), now=11.0) is None     # never ourselves
    assert core.receive(wire.connection_destroyed(CAM, "clientDisconnected"), now=11.0) == \
        ConnectionDestroyed(CAM, "clientDisconnected")
    assert core.receive(wire.connection_destroyed(CAM, "clientDisconnected"), now=11.0) is None
    assert set(core.connections) == {"robot"}


def test_keepalive_pings_when_due_measures_the_rtt_and_declares_a_silent_link_lost() -> None:
    core = joined(ping_interval_s=2.0, link_timeout_s=6.0)
    first = core.keepalive(10.010)
    assert first is not None and json.loads(first)["op"] == "ping"
    assert core.keepalive(11.0) is None                     # not due yet
    waiter: Future[float] = Future()
    pid = json.loads(core.ping_frame(12.0, waiter))["id"]
    core.receive(wire.pong(pid, 7000), now=12.003)
    assert waiter.result(0) == pytest.approx(3.0) and core.clock.rtt_ms == pytest.approx(3.0)
    assert core.keepalive(18.0) is not None                 # 5.997 s of silence: still alive
    with pytest.raises(TimeoutError):
        core.keepalive(18.1)


def test_reconnect_backs_off_and_gives_up_at_the_deadline() -> None:
    core = joined(reconnect_min_s=0.5, reconnect_max_s=2.0, give_up_s=3.0, open_timeout_s=10.0)
    core.link_lost(now=100.0)
    assert [core.reconnect_delay(100.0, 1.0) for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert core.reconnect_delay(102.5, 1.0) == 0.5          # never past the give-up time
    assert core.attempt_timeout(101.0) == 2.0
    core.attempt_failed()
    assert core.state is LinkState.RECONNECTING
    assert core.attempt_timeout(103.0) is None
    assert core.give_up() == [Disconnected("networkDisconnected")]


@pytest.mark.parametrize("text", ["", "nope", "[1]", '{"op":"warp"}', '{"op":"signal","seq":"1"}',
                                  "[" * 100_000, '{"op":"connected"}'])
def test_a_bad_or_misplaced_hub_frame_is_a_protocol_error_and_changes_nothing(text: str) -> None:
    core = joined()
    with pytest.raises(wire.ProtocolError):
        core.receive(text, now=11.0)
    assert core.state is LinkState.CONNECTED and core.stats["received"] == 0


def test_a_nowait_nack_is_counted_and_waits_for_nothing() -> None:
    core = joined()
    frame = core.nowait_frame("robot.telemetry", "{}", None)
    assert frame is not None and json.loads(frame)["retry"] is False
    assert core.nowait_written(True) and core.stats["sent"] == 1
    core.receive(wire.nack(json.loads(frame)["id"], 429, "slow down"), now=11.0)
    assert core.stats["nowait_nacked"] == 1


HUB_OPS = ["signal", "ack", "nack", "pong", "connected", "connections", "connection_created",
           "connection_destroyed", "error", "disconnected"]
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3), max_leaves=8)
HUB_KEYS = st.sampled_from(["id", "seq", "ts", "type", "data", "from", "code", "message", "server_time",
                            "connection", "connections", "reason", "more", "limits", "last_id", "nacks"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({"op": st.sampled_from(HUB_OPS) | st.text(max_size=4)})
                .flatmap(lambda f: st.dictionaries(HUB_KEYS, VALUES, max_size=6).map(lambda d: {**d, **f})),
                max_size=6))
def test_any_hub_frames_give_events_or_protocol_errors_and_nothing_else(frames: list[dict[str, Any]]) -> None:
    """A hostile or broken hub: whatever it sends, the session returns an event, None, or raises
    ProtocolError (the adapter logs and skips it); pending tickets are settled at most once."""
    core = joined()
    ticket: Future[None] = Future()
    core.signal("a", "", None, True, ticket, now=11.0)
    for f in frames:
        try:
            text = json.dumps(f)
        except ValueError:
            continue
        try:
            event = core.receive(text, now=11.5)
        except wire.ProtocolError:
            continue
        assert event is None or isinstance(event, Signal | ConnectionCreated | ConnectionDestroyed
                                           | Disconnected)
    assert core.state in (LinkState.CONNECTED, LinkState.CLOSED)
