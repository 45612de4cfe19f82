"""One protocol suite, run against both engines: the in-memory hub, and two hubs sharing one Redis
(every test puts its members on different hubs, so on Redis each is a cross-hub test too). Signals to
one and to all, seq and order, connection events, resume with last_id, nacks and replay, grace expiry
with exactly one connection_destroyed, the rate limit and the per-session and per-token caps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.clusterhub import engine_hubs
from tests.helpers.hub import HubHandle, RawClient, raw_connect
from tests.helpers.redis import require_redis, running_redis

Engine = tuple[str, tuple[str, ...]]


@pytest.fixture(scope="module", params=["memory", "redis"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "memory":
        yield ("memory", ())
        return
    require_redis()
    with running_redis() as r:
        yield ("redis", r.urls)


async def _recv_op(c: RawClient, op: str) -> dict[str, Any]:
    """The next frame of kind ``op`` (frames of other kinds before it fail the test)."""
    f = await c.recv()
    assert f["op"] == op, f
    return f


async def _resume(h: HubHandle, sid: str, c: RawClient, last_seq: int) -> RawClient:
    return await raw_connect(h, sid, resume={"connection_id": c.id, "secret": c.connected["resume_secret"],
                                             "last_seq": last_seq})


async def test_connection_events_and_signals_to_one_and_to_all(engine: Engine) -> None:
    async with engine_hubs(*engine) as (h1, h2):
        a = await raw_connect(h1, "ev", "moderator")
        b = await raw_connect(h2, "ev")
        assert [c["id"] for c in b.connected["connections"]] == [a.id]
        assert (await _recv_op(a, "connection_created"))["connection"]["id"] == b.id
        fid = await a.signal("one", "x", to=b.id)
        assert await a.recv() == {"op": "ack", "id": fid}
        got = await b.recv()
        assert (got["type"], got["seq"], got["from"]) == ("one", 1, a.id)
        fid = await a.signal("all", "y")
        mine = await a.recv()   # a broadcast comes back to its sender before the ack
        assert (mine["op"], mine["type"], mine["seq"]) == ("signal", "all", 1)
        assert await a.recv() == {"op": "ack", "id": fid}
        assert ((await b.recv())["type"], 2) == ("all", 2)
        fid = await b.signal("nobody", to="no-such-connection")
        assert (await b.recv())["code"] == 404
        await b.send(op="disconnect")
        assert (await _recv_op(b, "disconnected"))["reason"] == "clientDisconnected"
        gone = await _recv_op(a, "connection_destroyed")
        assert gone["connection"]["id"] == b.id and gone["reason"] == "clientDisconnected"
        await a.close()


async def test_seq_is_contiguous_per_receiver_and_order_kept_per_sender(engine: Engine) -> None:
    async with engine_hubs(*engine, n=3) as (h1, h2, h3):
        r = await raw_connect(h1, "ord")
        s1 = await raw_connect(h2, "ord")
        s2 = await raw_connect(h3, "ord")
        n = 60
        for i in range(n):
            await s1.signal("a", str(i), to=r.id)
            await s2.signal("b", str(i), to=r.id)
        got: list[dict[str, Any]] = []
        while len(got) < 2 * n:
            f = await r.recv()
            if f["op"] == "signal":
                got.append(f)
        assert [f["seq"] for f in got] == list(range(1, 2 * n + 1))
        for t in ("a", "b"):
            assert [int(f["data"]) for f in got if f["type"] == t] == list(range(n))
        for c in (r, s1, s2):
            await c.close()


async def test_resume_on_another_hub_replays_retry_signals_with_last_id_and_nacks(engine: Engine) -> None:
    async with engine_hubs(*engine, reconnect_grace_s=30.0) as (h1, h2):
        a = await raw_connect(h1, "res")
        b = await raw_connect(h2, "res")
        await _recv_op(a, "connection_created")
        await a.signal("live", to=b.id)
        await _recv_op(a, "ack")
        assert (await b.recv())["seq"] == 1
        ok = await b.signal("ok", to=a.id)
        assert await b.recv() == {"op": "ack", "id": ok}
        bad = await b.signal("x" * 200, to=a.id)   # type longer than allowed: nacked 413
        nack = await b.recv()
        assert nack["op"] == "nack" and nack["id"] == bad
        await b.close()
        await _recv_op(a, "signal")   # "ok"
        for type_, retry in (("r1", True), ("f1", False), ("r2", True)):
            await a.signal(type_, to=b.id, retry=retry)
            await _recv_op(a, "ack")
        b2 = await _resume(h1, "res", b, last_seq=1)
        c = b2.connected
        assert c["op"] == "connected" and c["resumed"] is True, c
        assert c["connection"]["id"] == b.id and c["last_id"] == bad
        assert [n["id"] for n in c["nacks"]] == [bad]
        got = [await b2.recv() for _ in range(2)]
        # A retry: false signal to a member without a link may or may not take a seq (a hole): seqs
        # only count up.
        assert [g["type"] for g in got] == ["r1", "r2"] and 1 < got[0]["seq"] < got[1]["seq"]
        await b2.send(op="ping", id=9)
        assert (await b2.recv())["op"] == "pong"   # nothing else: no f1, no duplicate
        await a.signal("after", to=b.id)
        assert ((await b2.recv())["seq"]) > got[1]["seq"]
        # a never saw b leave
        await _recv_op(a, "ack")
        await a.send(op="ping", id=1)
        assert (await a.recv())["op"] == "pong"
        await a.close()
        await b2.close()


async def test_grace_expiry_destroys_a_dropped_member_once(engine: Engine) -> None:
    async with engine_hubs(*engine, reconnect_grace_s=0.5) as (h1, h2):
        a = await raw_connect(h1, "gr")
        b = await raw_connect(h2, "gr")
        await _recv_op(a, "connection_created")
        b.ws.transport.abort()
        gone = await _recv_op(a, "connection_destroyed")
        assert gone["connection"]["id"] == b.id and gone["reason"] == "networkDisconnected"
        # b cannot resume any more: it joins afresh
        b2 = await _resume(h1, "gr", b, last_seq=0)
        assert b2.connected["resumed"] is False and b2.connected["connection"]["id"] != b.id
        assert (await _recv_op(a, "connection_created"))["connection"]["id"] == b2.id
        await asyncio.sleep(0.3)
        await a.send(op="ping", id=1)
        assert (await a.recv())["op"] == "pong"   # no second connection_destroyed came first
        await a.close()
        await b2.close()


async def test_rate_limit_and_caps_hold_on_every_hub(engine: Engine) -> None:
    async with engine_hubs(*engine, rate_limit=1.0, rate_burst=5.0, max_connections_per_session=3,
                           max_connections_per_token=2) as (h1, h2):
        a = await raw_connect(h1, "cap")
        ids = [await a.signal("t") for _ in range(8)]
        answers: dict[object, object] = {}
        while len(answers) < len(ids):
            f = await a.recv()
            if f["op"] in ("ack", "nack"):
                answers[f["id"]] = f.get("code")
        assert list(answers.values()).count(429) >= 2
        token = h1.token("cap", data="same")
        b1 = await raw_connect(h1, "cap", token=token)
        b2 = await raw_connect(h2, "cap", token=token)
        assert b1.connected["op"] == b2.connected["op"] == "connected"
        b3 = await raw_connect(h2, "cap", token=token)
        assert (b3.connected["op"], b3.connected["code"]) == ("error", 429)   # per token, across hubs
        c = await raw_connect(h2, "cap")
        assert (c.connected["op"], c.connected["code"]) == ("error", 429)     # per session
        for x in (a, b1, b2):
            await x.close()
