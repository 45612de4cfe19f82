"""The Redis session store against real Redis, standalone and a 3-node Redis Cluster: routing across
hubs, seq per receiver, order per sender, resume with replay, gaps reported, caps held across hubs."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.redis import require_redis

require_redis(module=True)  # before bridge.cluster, which needs the cluster extra

from bridge.cluster import ResumeGap, ResumeResult, SignalBody, SignalNote, StoreError, TakeoverNote  # noqa: E402
from bridge.cluster.keys import SessionKeys  # noqa: E402
from tests.helpers.redis import redis_setup, redis_urls  # noqa: E402, F401  (fixtures)
from tests.helpers.storehub import StoreHub, member, store_hubs  # noqa: E402

S = "lab-{1}}"  # braces in a session id must not move the hash tag


def body(text: str, sender: str | None = None) -> SignalBody:
    return SignalBody("t", text, sender, 1)


def delivered(hub: StoreHub, conn: str) -> list[tuple[int, str]]:
    """(seq, data) of what ``hub`` must deliver to ``conn`` (it holds it), in notification order."""
    return [(r.seq, n.body.data) for n in hub.of(SignalNote) for r in n.receivers
            if r.connection_id == conn and r.hub_id == hub.id]


async def test_cross_hub_routing_and_rest(redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    async with store_hubs(redis_urls) as make:
        a, b, c = await make(), await make(), await make()
        op, robot = member(role="moderator"), member(data="bridge:r1")
        for hub in (a, b, c):
            await hub.store.subscribe(S)
        await a.store.join(S, op, "s-op")
        joined = await b.store.join(S, robot, "s-robot")
        assert {m.id for m in joined.members} == {op.id, robot.id}
        await a.wait_for(lambda ns: any(getattr(n, "member", None) == robot for n in ns))
        got = await a.store.signal(S, op.id, robot.id, body("go", op.id), True, signal_id=7)
        assert [(r.connection_id, r.seq, r.hub_id) for r in got] == [(robot.id, 1, b.id)]
        await b.wait_for(lambda ns: delivered(b, robot.id) == [(1, "go")])
        assert delivered(a, robot.id) == []  # a hub delivers only to the members it holds
        await c.store.signal(S, None, None, body("rest"), True)  # REST on a hub with no member there
        await a.wait_for(lambda ns: delivered(a, op.id) == [(1, "rest")])
        await b.wait_for(lambda ns: delivered(b, robot.id)[-1] == (2, "rest"))
        with pytest.raises(StoreError) as e:
            await a.store.signal(S, op.id, "nobody", body("x"), True)
        assert e.value.code == 404
        with pytest.raises(StoreError) as e:  # hub a cannot speak for b's member
            await a.store.signal(S, robot.id, None, body("x"), True)
        assert e.value.code == 409
        assert await c.store.force_disconnect(S, robot.id)
        await b.wait_for(lambda ns: any(getattr(n, "reason", "") == "forceDisconnected" for n in ns))
        assert not await c.store.force_disconnect(S, robot.id)  # once
        assert set(await a.store.members(S)) == {op.id}


async def test_seq_contiguous_per_receiver_and_order_per_sender(redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    n_each = 150
    async with store_hubs(redis_urls) as make:
        hubs = [await make(), await make()]
        senders = [member(), member(), member(), member()]
        for i, m in enumerate(senders):
            hub = hubs[i % 2]
            await hub.store.subscribe(S)
            await hub.store.join(S, m, "s")

        async def send(i: int) -> None:
            hub, m = hubs[i % 2], senders[i]
            for k in range(n_each):  # to everyone and to the next sender, alternating, retry alternating
                to = None if k % 2 else senders[(i + 1) % 4].id
                await hub.store.signal(S, m.id, to, body(f"{m.id}:{k}", m.id), retry=k % 3 != 0,
                                       signal_id=k + 1)

        await asyncio.gather(*(send(i) for i in range(4)))
        for i, m in enumerate(senders):
            hub = hubs[i % 2]
            expected = 4 * (n_each // 2) + n_each // 2  # broadcasts of all four + targeted from one
            await hub.wait_for(lambda ns, h=hub, m=m, n=expected: len(delivered(h, m.id)) >= n)
            got = delivered(hub, m.id)
            assert [s for s, _ in got] == list(range(1, expected + 1))  # contiguous, in order
            for other in senders:  # each sender's signals in the order sent
                ks = [int(d.split(":")[1]) for _, d in got if d.startswith(other.id + ":")]
                assert ks == sorted(ks) and ks


async def test_resume_on_another_hub_replays_retry_signals_and_takes_over(
        redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    async with store_hubs(redis_urls) as make:
        a, b, c = await make(), await make(), await make()
        op, robot = member(role="moderator"), member("tok-robot")
        await a.store.subscribe(S)
        await a.store.join(S, op, "s-op")
        await a.store.join(S, robot, "secret-1")
        for k in range(1, 7):
            await a.store.signal(S, op.id, robot.id, body(f"m{k}", op.id), retry=k % 2 == 1, signal_id=k)
        await a.store.record_nack(S, robot.id, 40, 404, "no connection with that id in this session")
        await b.store.subscribe(S)
        r = await b.store.resume(S, robot.id, "secret-1", "secret-2", "tok-robot", last_seq=2)
        assert isinstance(r, ResumeResult)
        assert [(s, bd.data) for s, bd in r.replay] == [(3, "m3"), (5, "m5")]  # retry only, after 2
        assert r.last_id == 40 and r.nacks[0]["id"] == 40 and r.epoch == 2
        await a.wait_for(lambda ns: any(isinstance(n, TakeoverNote) and n.old_hub == a.id for n in ns))
        with pytest.raises(StoreError) as e:  # the old hub may no longer act for it
            await a.store.leave(S, robot.id, "networkDisconnected")
        assert e.value.code == 409
        await a.store.signal(S, op.id, robot.id, body("m7", op.id), True)
        await b.wait_for(lambda ns: delivered(b, robot.id) == [(7, "m7")])
        # the previous secret stopped working; a wrong one blocks that token on every hub
        with pytest.raises(StoreError) as e:
            await c.store.resume(S, robot.id, "secret-1", "x", "tok-robot", 7)
        assert e.value.code == 403
        with pytest.raises(StoreError) as e:
            await a.store.resume(S, robot.id, "secret-2", "x", "tok-robot", 7)
        assert e.value.code == 429
        with pytest.raises(StoreError) as e:  # another token may not take the member over
            await b.store.resume(S, robot.id, "secret-2", "x", "tok-other", 7)
        assert e.value.code in (403, 429)


async def test_trimmed_or_lost_history_is_a_gap_never_silent(redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    async with store_hubs(redis_urls, resume_buffer=20) as make:
        a, b = await make(), await make()
        op, robot = member(), member("tok-r")
        await a.store.join(S, op, "s")
        await a.store.join(S, robot, "sec")
        for k in range(400):
            await a.store.signal(S, op.id, robot.id, body(f"m{k}"), True)
        gap = await b.store.resume(S, robot.id, "sec", "sec2", "tok-r", last_seq=5)
        assert gap == ResumeGap("trimmed")
        ok = await b.store.resume(S, robot.id, "sec", "sec2", "tok-r", last_seq=395)
        assert isinstance(ok, ResumeResult) and [s for s, _ in ok.replay] == [396, 397, 398, 399, 400]


async def test_failover_that_lost_history_is_reported(redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    """An asynchronous replica promoted after the newest entries: counters and stream roll back."""
    async with store_hubs(redis_urls) as make:
        a, b = await make(), await make()
        op, robot = member(), member("tok-r")
        await a.store.join(S, op, "s")
        await a.store.join(S, robot, "sec")
        await a.store.signal(S, op.id, robot.id, body("m1", op.id), True)
        sk = SessionKeys.of(S)
        client = a.store._link.client
        keys = [sk.counters, sk.stream(robot.id)]
        snapshot = {k: await client.dump(k) for k in keys}
        for k in range(2, 5):
            await a.store.signal(S, op.id, robot.id, body(f"m{k}", op.id), True)
        for k, v in snapshot.items():  # the promoted replica had only the first signal
            await client.restore(k, 0, v, replace=True)
        assert await b.store.resume(S, robot.id, "sec", "sec2", "tok-r", last_seq=4) == ResumeGap("ahead")
        await client.restore(sk.counters, 0, snapshot[sk.counters], replace=True)
        await client.hset(sk.counters, f"s:{robot.id}", 4)  # counters kept, the stream's tail lost
        await client.hset(sk.counters, f"b:{robot.id}", 4)
        assert await b.store.resume(S, robot.id, "sec", "sec2", "tok-r", last_seq=1) == ResumeGap("lost")
        await client.delete(sk.stream(robot.id))
        assert await b.store.resume(S, robot.id, "sec", "sec2", "tok-r", last_seq=1) == ResumeGap("lost")


async def test_caps_hold_across_hubs(redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    async with store_hubs(redis_urls, max_per_session=3, max_per_token=2) as make:
        a, b = await make(), await make()
        await a.store.join(S, member("t1"), "s")
        await b.store.join(S, member("t1"), "s")
        with pytest.raises(StoreError) as e:
            await a.store.join(S, member("t1"), "s")
        assert e.value.code == 429 and e.value.reason == "tokenfull"
        await a.store.join(S, member("t2"), "s")
        with pytest.raises(StoreError) as e:
            await b.store.join(S, member("t3"), "s")
        assert e.value.reason == "full"
