"""Hub liveness against real Redis (standalone and a 3-node cluster): fencing of a hub frozen past its
lease (a real process stopped with SIGSTOP), the sweep of a dead hub's members (exactly one
connection_destroyed each, with two hubs sweeping at once), Redis going down and coming back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.redis import require_redis

require_redis(module=True)  # before bridge.cluster, which needs the cluster extra

from bridge.cluster import Fenced, LeaveNote, ResumeResult, Resync, SignalBody, SignalNote, Unavailable  # noqa: E402
from bridge.cluster.keys import HUBS_KEY  # noqa: E402
from tests.helpers.redis import RedisSetup, redis_setup, redis_urls  # noqa: E402, F401  (fixtures)
from tests.helpers.storehub import member, store_hubs  # noqa: E402

S, S2 = "lab-1", "lab-2"

# A hub process holding one member; on each stdin line it tries to signal and prints the outcome.
CHILD = r"""
import asyncio, sys
from bridge.cluster import Member, RedisSessionStore, SignalBody, StoreConfig, StoreError  # noqa: E402
async def main():
    store = RedisSessionStore(StoreConfig(urls=tuple(sys.argv[1:]), hub_id="frozen", lease_ms=400))
    await store.start()
    m = Member("robot", "bridge:r", "publisher", 1, "tok-r")
    await store.join("lab-1", m, "sec")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        fenced_on_waking = store.fenced
        try:
            await store.signal("lab-1", "robot", None, SignalBody("t", "late", "robot", 1), True)
            outcome = "sent"
        except StoreError as e:
            outcome = e.reason
        store._fenced, store._deadline = False, 0.0  # forget what it knows: Redis must refuse too
        try:
            await store.signal("lab-1", "robot", None, SignalBody("t", "later", "robot", 1), True)
            second = "sent"
        except StoreError as e:
            second = e.reason
        print(fenced_on_waking, outcome, second, flush=True)
asyncio.run(main())
"""


async def test_frozen_hub_is_fenced(redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", CHILD, *redis_urls], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None and child.stdin is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line.strip() == "ready"
        async with store_hubs(redis_urls) as make:
            b = await make()
            await b.store.subscribe(S)
            child.send_signal(signal.SIGSTOP)
            # Frozen past its lease: its client resumes on b meanwhile.
            client = b.store._link.client
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                score = await client.zscore(HUBS_KEY, "frozen")
                now_s, now_us = await client.time() if not b.store._link.cluster else \
                    await client.time(target_nodes=client.get_node_from_key(HUBS_KEY))
                if score is not None and score < now_s * 1000 + now_us // 1000:
                    break
                await asyncio.sleep(0.05)
            r = await b.store.resume(S, "robot", "sec", "sec2", "tok-r", 0)
            assert isinstance(r, ResumeResult)
            child.send_signal(signal.SIGCONT)
            child.stdin.write("go\n")
            child.stdin.flush()
            answer = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
            fenced_on_waking, first, second = answer.split()
            assert fenced_on_waking == "True"  # it knows before any round trip
            assert first == "fenced" and second in ("fenced", "notowner")
            await asyncio.sleep(0.2)
            assert not b.of(SignalNote)  # nothing it tried reached anyone
            await b.store.signal(S, None, "robot", SignalBody("t", "now", None, 1), True)
            await b.wait_for(lambda ns: len(b.of(SignalNote)) == 1)
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait(10)


async def test_script_refuses_a_lapsed_lease_in_every_session(redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    async with store_hubs(redis_urls, lease_ms=300) as make:
        a = await make()
        op = member()
        await a.store.join(S, op, "s")
        await a.store._stop_tasks()  # its loop stalls: no heartbeat
        await asyncio.sleep(0.6)
        a.store._deadline = 0.0  # blind to its own deadline: the scripts must refuse it
        with pytest.raises(Fenced):
            await a.store.signal(S, op.id, None, SignalBody("t", "x", op.id, 1), True)
        a.store._fenced = False
        with pytest.raises(Fenced):
            await a.store.heartbeat()
        assert not a.store.ready
        await a.store.renew()  # a new hub now; the old identity stays fenced
        assert a.store.ready
        await a.store.join(S, member(), "s")


async def test_dead_hub_members_swept_once_each(redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    async with store_hubs(redis_urls, grace_ms=300) as make:
        # Long enough that a loaded machine cannot fence hub a while it is still joining its members
        # (400 ms did, once); the sweep then waits this lease plus the grace window.
        a = await make(lease_ms=1500)
        b, c = await make(sweep_s=0.05), await make(sweep_s=0.05)
        mine = [member() for _ in range(5)]
        for i, m in enumerate(mine):
            await a.store.join(S if i < 3 else S2, m, f"sec-{i}")
        for hub in (b, c):
            await hub.store.subscribe(S)
            await hub.store.subscribe(S2)
        await b.store.join(S, member(), "b-own")
        await a.store.close()  # dies: no leave, no heartbeat
        assert await b.store.sweep() == 0  # its lease and then the grace window run first
        survivor = mine[0]
        r = await b.store.resume(S, survivor.id, "sec-0", "sec-0b", survivor.token_id, 0)
        assert isinstance(r, ResumeResult)  # resumed within the grace window: never destroyed

        def swept(ns: list[object]) -> int:
            return sum(1 for n in ns if isinstance(n, LeaveNote))

        for hub in (b, c):
            await hub.wait_for(lambda ns: swept(ns) >= 4)
        client = b.store._link.client
        for _ in range(100):  # the registry forgets the hub once all its sessions are swept
            if await client.zscore(HUBS_KEY, a.id) is None:
                break
            await asyncio.sleep(0.05)
        assert await b.store.sweep() == 0 and await c.store.sweep() == 0
        for hub in (b, c):
            leaves = hub.of(LeaveNote)
            assert sorted(n.member.id for n in leaves) == sorted(m.id for m in mine[1:])
            assert {n.reason for n in leaves} == {"networkDisconnected"}
        assert survivor.id in await b.store.members(S)


async def test_redis_down_and_back(redis_setup: RedisSetup, redis_urls: tuple[str, ...]) -> None:  # noqa: F811
    async with store_hubs(redis_urls) as make:
        a = await make()
        await a.store.subscribe(S)
        await a.store.join(S, member(), "s")
        for n in redis_setup.nodes:
            n.stop()
        for _ in range(200):
            if not a.store.ready:
                break
            await asyncio.sleep(0.05)
        assert not a.store.ready
        with pytest.raises(Unavailable):
            await a.store.join(S, member(), "s")
        redis_setup.restart()  # comes back empty: the hub's lease is gone with everything else
        for _ in range(400):
            if a.of(Resync) and a.store._link.ready:
                break
            await asyncio.sleep(0.05)
        assert a.of(Resync)
        with pytest.raises(Fenced):
            await a.store.heartbeat()
        await a.store.renew()
        op = member()
        await a.store.join(S, op, "s")
        await a.store.signal(S, op.id, None, SignalBody("t", "back", op.id, 1), True)
        await a.wait_for(lambda ns: any(isinstance(n, SignalNote) and n.body.data == "back" for n in ns))
