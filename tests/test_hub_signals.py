"""The hub over real WebSockets: connect, membership events, signals (broadcast, targeted, order),
limits and every nack code, roles, rate limit, ping, malformed frames."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import scaled
from tests.helpers.hub import HubHandle, RawClient, raw_connect, running_hub


async def _pair(h: HubHandle, sid: str = "lab-1", role_b: str = "publisher") -> tuple[RawClient, RawClient]:
    a = await raw_connect(h, sid, data="alice")
    b = await raw_connect(h, sid, role=role_b, data="bob")
    created = await a.recv()
    assert created["op"] == "connection_created" and created["connection"]["id"] == b.id
    return a, b


async def test_connect_lists_others_and_announces_newcomer() -> None:
    async with running_hub() as h:
        a = await raw_connect(h, "lab-1", data="alice")
        c = a.connected
        assert c["op"] == "connected" and c["resumed"] is False and c["connections"] == []
        assert c["connection"]["data"] == "alice" and c["connection"]["role"] == "publisher"
        assert c["limits"] == {"max_type": 128, "max_data": 8192, "rate": 1000, "burst": 2000}  # the defaults
        assert isinstance(c["server_time"], int) and isinstance(c["resume_secret"], str)
        b = await raw_connect(h, "lab-1", role="moderator", data="bob")
        assert [x["id"] for x in b.connected["connections"]] == [a.id]
        assert b.connected["connections"][0]["data"] == "alice"
        created = await a.recv()
        assert created == {"op": "connection_created", "connection": b.connected["connection"]}
        # another session is another world
        other = await raw_connect(h, "lab-2")
        assert other.connected["connections"] == []
        for x in (a, b, other):
            await x.close()


async def test_broadcast_comes_back_to_sender_and_targeted_goes_to_one() -> None:
    async with running_hub() as h:
        a, b = await _pair(h)
        c = await raw_connect(h, "lab-1")
        assert (await a.recv())["op"] == "connection_created"
        assert (await b.recv())["op"] == "connection_created"
        fid = await a.signal("robot.move", '{"x":0.5}')
        for rx in (a, b, c):
            s = await rx.recv()
            assert s["op"] == "signal" and s["seq"] == 1 and s["type"] == "robot.move"
            assert s["data"] == '{"x":0.5}' and s["from"] == a.id and isinstance(s["ts"], int)
        assert await a.recv() == {"op": "ack", "id": fid}  # after the deliveries, its own copy included
        fid = await a.signal("only.b", "x", to=b.id)
        assert await a.recv() == {"op": "ack", "id": fid}
        s = await b.recv()
        assert (s["type"], s["seq"], s["from"]) == ("only.b", 2, a.id)
        # c got nothing more: its next frame is the next broadcast, with seq 2
        await b.signal("all", "y")
        assert (await b.recv())["op"] == "signal"  # its own copy first
        assert (await b.recv())["op"] == "ack"
        s = await c.recv()
        assert (s["type"], s["seq"], s["from"]) == ("all", 2, b.id)
        for x in (a, b, c):
            await x.close()


async def test_order_per_sender_and_per_receiver_seq() -> None:
    async with running_hub() as h:
        a, b = await _pair(h)
        n = 300
        for i in range(n):
            await a.signal("n", str(i), to=b.id)
        acks = [await a.recv() for _ in range(n)]
        assert [x["id"] for x in acks] == list(range(1, n + 1)) and all(x["op"] == "ack" for x in acks)
        got = [await b.recv() for _ in range(n)]
        assert [g["data"] for g in got] == [str(i) for i in range(n)]
        assert [g["seq"] for g in got] == list(range(1, n + 1))
        await a.close()
        await b.close()


async def test_limits_and_bad_signals_get_the_right_nack() -> None:
    async with running_hub() as h:
        a, b = await _pair(h)
        cases = [
            ({"type": "t", "data": "x" * 8192}, None),
            ({"type": "t", "data": "é" * 4096}, None),  # 8192 bytes of UTF-8
            ({"type": "t", "data": "x" * 8193}, 413),
            ({"type": "t", "data": "é" * 4096 + "x"}, 413),
            ({"type": "a" * 128, "data": ""}, None),
            ({"type": "a" * 129, "data": ""}, 413),
            ({"type": "robot move", "data": ""}, 400),
            ({"type": "robot/move", "data": ""}, 400),
            ({"type": "ü", "data": ""}, 400),
            ({"type": 5, "data": ""}, 400),
            ({"type": "t", "data": {"x": 1}}, 400),
            ({"type": "t", "data": "", "to": "no-such-connection"}, 404),
            ({"type": "t", "data": "", "to": 17}, 400),
            ({"type": "t", "data": "", "retry": "yes"}, 400),
        ]
        for i, (fields, code) in enumerate(cases, start=1):
            await a.send(op="signal", id=i, **fields)
            answer = await a.recv()
            if code is None:
                assert answer["op"] == "signal", fields  # own broadcast, before the ack
                assert await a.recv() == {"op": "ack", "id": i}, fields
                assert (await b.recv())["op"] == "signal"
            else:
                assert (answer["op"], answer["id"], answer["code"]) == ("nack", i, code), (fields, answer)
                assert answer["message"]
        # a signal with neither type nor data is a valid "ping" signal
        await a.send(op="signal", id=99)
        assert (await a.recv())["op"] == "signal"
        assert await a.recv() == {"op": "ack", "id": 99}
        s = await b.recv()
        assert (s["type"], s["data"]) == ("", "")
        await a.close()
        await b.close()


@pytest.mark.parametrize("role", ["subscriber", "publisheronly"])
async def test_roles_that_may_not_signal_get_403_but_subscribers_receive(role: str) -> None:
    async with running_hub() as h:
        a, b = await _pair(h, role_b=role)
        fid = await b.signal("t", "x")
        nack = await b.recv()
        assert nack["op"] == "nack" and nack["id"] == fid and nack["code"] == 403
        await a.signal("t", "to-them", to=b.id)
        assert (await a.recv())["op"] == "ack"
        assert (await b.recv())["data"] == "to-them"
        await a.close()
        await b.close()


async def test_rate_limit_answers_429_and_can_be_switched_off() -> None:
    # 1 token/s refill: the burst of 20 decides, however slowly this machine sends the 40 frames
    async with running_hub(rate_limit=1.0, rate_burst=20.0) as h:
        a = await raw_connect(h, "s")
        for _ in range(40):
            await a.signal("t", "", to=a.id, retry=False)
        answers = []
        while len(answers) < 40:
            f = await a.recv()
            if f["op"] in ("ack", "nack"):
                answers.append(f)
        codes = [f.get("code") for f in answers if f["op"] == "nack"]
        acked = sum(f["op"] == "ack" for f in answers)
        assert set(codes) == {429} and 20 <= acked < 30, (acked, codes)
        await a.close()
    async with running_hub(rate_limit=0) as h:
        a = await raw_connect(h, "s")
        for _ in range(3000):
            await a.signal("t", "", to=a.id)
        ops = [(await a.recv())["op"] for _ in range(6000)]
        assert ops.count("ack") == 3000 and ops.count("signal") == 3000
        await a.close()


async def test_ping_pong_carries_server_time() -> None:
    async with running_hub() as h:
        a = await raw_connect(h, "s")
        await a.send(op="ping", id=7)
        pong = await a.recv()
        assert pong["op"] == "pong" and pong["id"] == 7
        assert abs(pong["server_time"] - a.connected["server_time"]) < scaled(10) * 1000
        await a.close()


async def test_malformed_frames_get_errors_and_the_link_keeps_working() -> None:
    async with running_hub() as h:
        a = await raw_connect(h, "s")
        bad = ["not json", "[1,2]", '"str"', "{}", '{"op": 5}', '{"op":"dance","id":3}',
               '{"op":"signal"}', '{"op":"signal","id":"x"}', '{"op":"ping"}', "{" * 100_000,
               '{"op":"force_disconnect","id":4}', json.dumps({"op": "connect", "token": "x"})]
        for text in bad:
            await a.ws.send(text)
            f = await a.recv()
            assert f["op"] in ("error", "nack") and f["code"] in (400, 413), (text[:30], f)
        await a.ws.send(b"\x00binary")
        assert (await a.recv())["code"] == 400
        big = json.dumps({"op": "signal", "id": 1, "type": "t", "data": "x" * (64 * 1024)})
        await a.ws.send(big)
        f = await a.recv()
        assert f == {"op": "error", "code": 413, "message": f["message"]}
        await a.send(op="ping", id=1)
        assert (await a.recv())["op"] == "pong"
        await a.close()


async def test_first_frame_must_be_a_valid_connect() -> None:
    async with running_hub() as h:
        import websockets

        for first in ['{"op":"ping","id":1}', "garbage", '{"op":"connect"}']:
            async with websockets.connect(h.session_url("s")) as ws:
                await ws.send(first)
                f = json.loads(await ws.recv())
                assert f["op"] == "error" and f["code"] == 400
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()


async def test_clean_disconnect_tells_the_others() -> None:
    async with running_hub() as h:
        a, b = await _pair(h)
        await b.send(op="disconnect")
        assert await b.recv() == {"op": "disconnected", "reason": "clientDisconnected"}
        f = await a.recv()
        assert f["op"] == "connection_destroyed" and f["reason"] == "clientDisconnected"
        assert f["connection"]["id"] == b.id
        await a.signal("t", "", to=b.id)
        assert (await a.recv())["code"] == 404
        await a.close()


async def test_a_frame_over_one_mebibyte_closes_the_link_with_1009() -> None:
    import websockets

    async with running_hub(reconnect_grace_s=0.1) as h:
        a = await raw_connect(h, "s")
        watcher = await raw_connect(h, "s")
        assert (await a.recv())["op"] == "connection_created"
        await a.ws.send("x" * (2 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as e:
            await a.recv()
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009
        # the hub is fine, and treats it as a dropped link
        f = await watcher.recv()
        assert f["op"] == "connection_destroyed" and f["reason"] == "networkDisconnected"
        await watcher.close()


async def test_a_link_that_never_sends_connect_is_refused_401() -> None:
    import websockets

    async with running_hub(connect_timeout_s=0.2) as h, websockets.connect(h.session_url("s")) as ws:
        f = json.loads(await asyncio.wait_for(ws.recv(), scaled(10)))
        assert f["op"] == "error" and f["code"] == 401 and "connect" in f["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), scaled(10))


async def test_two_senders_interleaved_keep_each_own_order() -> None:
    async with running_hub() as h:
        rx = await raw_connect(h, "s")
        s1 = await raw_connect(h, "s")
        s2 = await raw_connect(h, "s")
        for _ in range(2):
            assert (await rx.recv())["op"] == "connection_created"
        n = 200

        async def send_all(c: RawClient) -> None:
            for i in range(n):
                await c.signal("n", str(i), to=rx.id)

        await asyncio.gather(send_all(s1), send_all(s2))
        got = [await rx.recv() for _ in range(2 * n)]
        for sender in (s1, s2):
            assert [g["data"] for g in got if g["from"] == sender.id] == [str(i) for i in range(n)]
        assert [g["seq"] for g in got] == list(range(1, 2 * n + 1))
        for c in (rx, s1, s2):
            await c.close()


async def test_a_receiver_that_stops_reading_does_not_hold_up_the_sender() -> None:
    # An outbox bound above the 12 MB queued here (the default cuts such a receiver: test_hub_hostile).
    async with running_hub(outbox_bytes=64 * 2**20) as h:
        a, b = await _pair(h)
        b.ws.transport.pause_reading()
        n, data = 1500, "x" * 8000  # 12 MB: more than the socket buffers hold
        for _ in range(n):
            await a.signal("bulk", data, to=b.id)
        acks = [await a.recv() for _ in range(n)]
        assert all(f["op"] == "ack" for f in acks)
        b.ws.transport.resume_reading()
        got = [await b.recv() for _ in range(n)]
        assert [g["seq"] for g in got] == list(range(1, n + 1))
        await a.close()
        await b.close()
