"""Dropped links: grace window, resume with replay of retry:true signals (exactly once), retry:false
never late, bounded buffers, heartbeat detection of a silent link, and forced disconnects."""

from __future__ import annotations

import asyncio

import websockets

from tests.conftest import scaled
from tests.helpers.hub import HubHandle, RawClient, raw_connect, running_hub
from tests.helpers.poll import until


def _cut(c: RawClient) -> None:
    """Drop the TCP link without a close handshake, as a network failure would."""
    c.ws.transport.abort()


def _linked(h: HubHandle, sid: str, cid: str) -> bool:
    assert h.hub is not None
    m = h.hub.state.find(sid, cid)
    return m is not None and m.link is not None


async def _resume(h: HubHandle, b: RawClient, last_seq: int, sid: str = "s") -> RawClient:
    return await raw_connect(h, sid, resume={"connection_id": b.id, "secret": b.connected["resume_secret"],
                                             "last_seq": last_seq})


async def _send_ok(a: RawClient, type_: str, to: str | None, retry: bool) -> None:
    fid = await a.signal(type_, type_, to=to, retry=retry)
    if to is None:
        assert (await a.recv())["type"] == type_  # a broadcast comes back to its sender, before the ack
    assert await a.recv() == {"op": "ack", "id": fid}


async def test_retry_signals_are_replayed_once_after_resume_and_no_retry_never_late() -> None:
    async with running_hub(reconnect_grace_s=30.0) as h:
        a = await raw_connect(h, "s")
        b = await raw_connect(h, "s")
        assert (await a.recv())["op"] == "connection_created"
        await _send_ok(a, "live", b.id, True)
        assert (await b.recv())["seq"] == 1
        _cut(b)
        # Sent at once: the hub may not have noticed the drop yet, frames may die in the socket.
        await _send_ok(a, "r1", b.id, True)
        await until(lambda: not _linked(h, "s", b.id))
        await _send_ok(a, "f1", b.id, False)
        await _send_ok(a, "r2", b.id, True)
        await _send_ok(a, "rb", None, True)
        await _send_ok(a, "fb", None, False)
        b2 = await _resume(h, b, last_seq=1)
        c = b2.connected
        assert c["op"] == "connected" and c["resumed"] is True and c["connection"]["id"] == b.id
        assert [x["id"] for x in c["connections"]] == [a.id]
        got = [await b2.recv() for _ in range(3)]
        assert [g["type"] for g in got] == ["r1", "r2", "rb"]
        assert [g["seq"] for g in got] == sorted(g["seq"] for g in got) and got[0]["seq"] > 1
        # nothing else is pending for b (no late f1/fb, no duplicates); and a never saw b leave
        await b2.send(op="ping", id=1)
        assert (await b2.recv())["op"] == "pong"
        await a.send(op="ping", id=1)
        assert (await a.recv())["op"] == "pong"
        await _send_ok(a, "after", b.id, False)
        assert (await b2.recv())["type"] == "after"
        await a.close()
        await b2.close()


async def test_resume_buffer_is_bounded_and_counts_drops() -> None:
    async with running_hub(reconnect_grace_s=30.0, resume_buffer=3) as h:
        assert h.hub is not None
        a = await raw_connect(h, "s")
        b = await raw_connect(h, "s")
        assert (await a.recv())["op"] == "connection_created"
        _cut(b)
        await until(lambda: not _linked(h, "s", b.id))
        for i in range(5):
            await _send_ok(a, f"m{i}", b.id, True)
        assert h.hub.state.metrics.dropped == 2 and h.hub.state.metrics.buffered == 5
        b2 = await _resume(h, b, last_seq=0)
        assert [(await b2.recv())["type"] for _ in range(3)] == ["m2", "m3", "m4"]
        await a.close()
        await b2.close()


async def test_resume_with_a_wrong_secret_is_refused_and_the_connection_kept() -> None:
    async with running_hub(reconnect_grace_s=30.0) as h:
        a = await raw_connect(h, "s")
        _cut(a)
        await until(lambda: not _linked(h, "s", a.id))
        bad = await raw_connect(h, "s", resume={"connection_id": a.id, "secret": "guess", "last_seq": 0})
        assert bad.connected["op"] == "error" and bad.connected["code"] == 403
        good = await _resume(h, a, 0)
        assert good.connected["resumed"] is True and good.connected["connection"]["id"] == a.id
        await good.close()


async def test_grace_window_end_destroys_with_network_disconnected() -> None:
    async with running_hub(reconnect_grace_s=0.3) as h:
        a = await raw_connect(h, "s")
        b = await raw_connect(h, "s")
        assert (await a.recv())["op"] == "connection_created"
        _cut(b)
        f = await a.recv()
        assert f["op"] == "connection_destroyed" and f["reason"] == "networkDisconnected"
        assert f["connection"]["id"] == b.id
        # too late to resume: the hub gives a fresh connection
        late = await _resume(h, b, 0)
        assert late.connected["resumed"] is False and late.connected["connection"]["id"] != b.id
        await a.close()
        await late.close()


async def test_heartbeat_notices_a_silent_link() -> None:
    # heartbeat 1 s: the hub gives a pong 0.5 s, well above a loop stall of a busy machine
    async with running_hub(reconnect_grace_s=0.2, heartbeat_s=scaled(1.0)) as h:
        a = await raw_connect(h, "s")
        b = await raw_connect(h, "s")
        assert (await a.recv())["op"] == "connection_created"
        b.ws.transport.pause_reading()  # alive TCP, but never answers the hub's pings
        f = await a.recv(timeout=10)
        assert f["op"] == "connection_destroyed" and f["reason"] == "networkDisconnected"
        b.ws.transport.abort()
        await a.close()


async def test_force_disconnect_over_websocket() -> None:
    async with running_hub(reconnect_grace_s=30.0) as h:
        mod = await raw_connect(h, "s", role="moderator")
        pub = await raw_connect(h, "s")
        tgt = await raw_connect(h, "s")
        gone = await raw_connect(h, "s")
        for _ in range(3):
            assert (await mod.recv())["op"] == "connection_created"
        for _ in range(2):
            assert (await pub.recv())["op"] == "connection_created"
        await pub.send(op="force_disconnect", id=1, connection_id=tgt.id)
        assert (await pub.recv())["code"] == 403
        await mod.send(op="force_disconnect", id=2, connection_id="nobody")
        assert (await mod.recv())["code"] == 404
        await mod.send(op="force_disconnect", id=3, connection_id=tgt.id)
        assert await mod.recv() == {"op": "ack", "id": 3}
        f = await mod.recv()
        assert f["op"] == "connection_destroyed" and f["reason"] == "forceDisconnected"
        assert (await tgt.recv())["op"] == "connection_created"  # gone's
        assert await tgt.recv() == {"op": "disconnected", "reason": "forceDisconnected"}
        try:
            await asyncio.wait_for(tgt.ws.recv(), scaled(10))
            raise AssertionError("link should be closed")
        except websockets.ConnectionClosed:
            pass
        f = await pub.recv()
        assert f["op"] == "connection_destroyed" and f["reason"] == "forceDisconnected"
        # a member inside its grace window can be forced out too
        _cut(gone)
        await until(lambda: not _linked(h, "s", gone.id))
        await mod.send(op="force_disconnect", id=4, connection_id=gone.id)
        assert await mod.recv() == {"op": "ack", "id": 4}
        assert (await mod.recv())["connection"]["id"] == gone.id
        f = await pub.recv()
        assert f["op"] == "connection_destroyed" and f["connection"]["id"] == gone.id
        for x in (mod, pub):
            await x.close()


async def test_rest_signals_are_buffered_for_a_reconnecting_connection() -> None:
    import aiohttp

    async with running_hub(reconnect_grace_s=30.0) as h:
        b = await raw_connect(h, "s")
        _cut(b)
        await until(lambda: not _linked(h, "s", b.id))
        url = f"{h.http_url}/v2/project/{h.api_key}/session/s/connection/{b.id}/signal"
        async with aiohttp.ClientSession() as http, http.post(
                url, json={"type": "rest", "data": "d"}, headers={"X-OPENTOK-AUTH": h.rest_jwt()}) as r:
            assert r.status == 204
        b2 = await _resume(h, b, 0)
        s = await b2.recv()
        assert (s["type"], s["from"], s["seq"]) == ("rest", None, 1)
        await b2.close()


async def test_resume_tells_last_id_and_a_client_restarting_its_ids_is_not_dropped() -> None:
    async with running_hub(reconnect_grace_s=30.0) as h:
        a = await raw_connect(h, "s")
        b = await raw_connect(h, "s")
        assert (await a.recv())["op"] == "connection_created"
        assert "last_id" not in a.connected  # only a resumed connection has a past to tell
        await a.send(op="signal", id=5, type="t", data="once", to=b.id)
        assert await a.recv() == {"op": "ack", "id": 5}
        await a.send(op="signal", id=6, type="t", data="x", to="nobody")
        refused = await a.recv()
        assert refused["op"] == "nack" and refused["code"] == 404
        _cut(a)  # as if both answers had been lost with the link
        await until(lambda: not _linked(h, "s", a.id))
        a2 = await _resume(h, a, last_seq=0)
        assert a2.connected["resumed"] is True
        # The hub tells what it processed: the client settles 5 and 6 from this, re-sends nothing.
        assert a2.connected["last_id"] == 6
        assert a2.connected["nacks"] == [{k: refused[k] for k in ("id", "code", "message")}]
        # A third-party client that restarts its ids at 1 on the new link (wire v1 allows it) is
        # served normally: relayed, not dropped as a re-send.
        for i, data in ((1, "new-1"), (2, "new-2")):
            await a2.send(op="signal", id=i, type="t", data=data, to=b.id)
            assert await a2.recv() == {"op": "ack", "id": i}
        assert [(await b.recv())["data"] for _ in range(3)] == ["once", "new-1", "new-2"]
        await a2.send(op="signal", id=3, type="t", data="x", to="nobody")
        assert (await a2.recv())["code"] == 404
        _cut(a2)
        await until(lambda: not _linked(h, "s", a.id))
        a3 = await _resume(h, a2, last_seq=0)  # with the secret of the latest resume
        # The highest id so far, and only the nacks of the link that just dropped.
        assert (a3.connected["last_id"], [n["id"] for n in a3.connected["nacks"]]) == (6, [3])
        for x in (a3, b):
            await x.close()
