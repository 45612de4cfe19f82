"""The Redis session store's own figures (issue 13): ``python -m bench.cluster_store [--quick]``.

Against a real redis-server started here (standalone and a 3-node Redis Cluster, on free ports), two
stores in this process stand for two hubs: the sender's and the receiver's. It measures and prints:

- one-way: the sender's ``signal()`` called -> the receiver's store got the notification (p50/p99),
  one signal at a time, the receiver's connection kept on another node of the cluster than the
  session's shard where the client library allows (it is the subscriber's own connection);
- call: the round trip of ``signal()`` alone (the sender's wait for its ack);
- throughput: signals/s from one client (one store, 16 senders awaiting each signal in turn), every
  notification counted (lost = sent - notified);
- replay: a resume that reads back 1,000 buffered signals.
Nothing here is a pass/fail: a benchmark measures and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import Stats
from bridge.cluster import Member, Note, RedisSessionStore, ResumeResult, SignalBody, SignalNote, StoreConfig
from tests.helpers.redis import running_redis

S = "bench-1"


def _member(i: int) -> Member:
    return Member(f"c{i}", f"user{i}", "publisher", 1, f"tok{i}")


async def _measure(urls: tuple[str, ...], n: int) -> dict[str, str]:
    arrived: dict[str, float] = {}
    got = asyncio.Event()
    count = 0

    def on_note(note: Note) -> None:
        nonlocal count
        if isinstance(note, SignalNote):
            arrived[note.body.data] = time.perf_counter()
            count += 1
            got.set()

    sender = RedisSessionStore(StoreConfig(urls=urls, hub_id="bench-a", resume_buffer=1000))
    receiver = RedisSessionStore(StoreConfig(urls=urls, hub_id="bench-b", resume_buffer=1000), on_note)
    await sender.start()
    await receiver.start()
    try:
        await receiver.subscribe(S)
        robot = _member(0)
        await receiver.join(S, robot, "sec")
        ops = [_member(i) for i in range(1, 17)]
        for m in ops:
            await sender.join(S, m, "sec")
        one_way, call = [], []
        for k in range(n):
            got.clear()
            t0 = time.perf_counter()
            await sender.signal(S, ops[0].id, robot.id, SignalBody("t", f"o{k}", ops[0].id, 1), True, k)
            call.append((time.perf_counter() - t0) * 1000)
            while f"o{k}" not in arrived:
                await asyncio.wait_for(got.wait(), 10)
                got.clear()
            one_way.append((arrived[f"o{k}"] - t0) * 1000)
        count = 0
        per = n // len(ops)

        async def flood(m: Member) -> None:
            for k in range(per):
                await sender.signal(S, m.id, robot.id, SignalBody("t", f"f{m.id}:{k}", m.id, 1), k % 2 == 0)

        t0 = time.perf_counter()
        await asyncio.gather(*(flood(m) for m in ops))
        elapsed = time.perf_counter() - t0
        deadline = time.monotonic() + 10
        while count < per * len(ops) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        lost = per * len(ops) - count
        # replay: 1,000 retry signals buffered for a member, read back by a resume
        other = _member(99)
        await receiver.join(S, other, "sec")
        for _ in range(1000):
            await sender.signal(S, ops[0].id, other.id, SignalBody("t", "x" * 64, ops[0].id, 1), True)
        t0 = time.perf_counter()
        r = await sender.resume(S, other.id, "sec", "sec2", other.token_id, 0)
        replay_ms = (time.perf_counter() - t0) * 1000
        assert isinstance(r, ResumeResult) and len(r.replay) == 1000
        ow, cl = Stats.of(one_way), Stats.of(call)
        return {"one-way p50/p99 ms": f"{ow.p50:.3f} / {ow.p99:.3f}",
                "signal() call p50/p99 ms": f"{cl.p50:.3f} / {cl.p99:.3f}",
                "throughput /s (16 senders, 1 client)": f"{per * len(ops) / elapsed:,.0f}",
                "lost": str(lost), "replay 1,000 ms": f"{replay_ms:.1f}"}
    finally:
        await sender.close()
        await receiver.close()


async def main(quick: bool) -> None:
    n = 500 if quick else 3000
    rows = []
    for cluster in (False, True):
        with running_redis(cluster=cluster) as setup:
            rows.append(("3-node cluster" if cluster else "standalone", await _measure(setup.urls, n)))
    keys = list(rows[0][1])
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  " + "  ".join(f"{name:>18}" for name, _ in rows))
    for k in keys:
        print(f"{k:{width}}  " + "  ".join(f"{r[k]:>18}" for _, r in rows))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    asyncio.run(main(p.parse_args().quick))
