"""``python -m bench cluster``: a fleet of hubs sharing sessions through Redis (issue 13, docs/cluster.md).

Real ``sigbridge hub`` processes on free 127.0.0.1 ports, each with hub.yaml
``cluster: {engine: redis, url: "redis://127.0.0.1:PORT"}`` against one standalone redis-server started
here, and, in the same run, one hub with the memory engine (the default) as the reference. Clients are
:class:`bridge.session.SessionClient` in this process. It measures and prints (nothing is pass/fail):

- **cross-hub command latency**: operator on hub A, receiver on hub B; the receiver answers each command
  at once, and the operator times command -> answer (p50/p99), against the same on one memory hub,
  in alternating rounds; lost, duplicated and reordered commands are counted at the receiver;
- **aggregate throughput** with 1, 2 and 3 Redis hubs: 6 sender/receiver pairs, each sender on one hub
  and its receiver on the next, 32 signals in flight per sender; signals delivered per second;
- **failover**: the receiver's hub is SIGKILLed while the operator (on a third hub) keeps sending retry
  signals every 10 ms; time from the kill to the receiver resumed (same connection id) and holding every
  signal sent before its resume, over 10 runs (default client and hub liveness settings);
- **resume replay**: 1,000 retry signals buffered for a dropped link, then a resume on another hub:
  connect -> the 1,000th replayed frame (memory engine: a resume on the same hub).

Needs a hub with the Redis engine: a hub that refuses the ``cluster`` block ends the Redis part with a
message saying so (the memory reference is still measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import websockets

from bench.common import Child, Results, Row, Stats, scaled, wait_port
from bench.rig import API_KEY, API_SECRET, _prefix, hub_session_and_tokens
from bridge.session import Disconnected, Reconnected, SessionClient, SessionEvent, Signal, SignalError
from tests.helpers.mosquitto import free_port

SECTION = "cluster"
PAIRS = 6
WINDOW = 32


class ClusterRefused(RuntimeError):
    """A hub did not start with the ``cluster`` block (this hub has no Redis engine, or Redis is down)."""


class Hub:
    """One ``sigbridge hub`` process on a fixed port (restartable there), memory or Redis engine."""

    def __init__(self, workdir: Path, name: str, redis_url: str | None) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name, self.redis_url, self.port = name, redis_url, free_port()
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> Hub:
        conf = self.dir / "hub.yaml"
        text = "rate_limit: {per_second: 0, burst: 1}\n"  # 0: no per-connection limit (it would cap figures)
        if self.redis_url is not None:
            text += f'cluster: {{engine: redis, url: "{self.redis_url}"}}\n'
        conf.write_text(text)
        argv = [*_prefix("BENCH_HUB_PREFIX"), "hub", "-c", str(conf), "--listen", f"127.0.0.1:{self.port}"]
        env = {"SIGBRIDGE_API_KEY": API_KEY, "SIGBRIDGE_API_SECRET": API_SECRET}
        self.child = await Child(f"hub-{self.name}", argv, env=env).start()
        try:
            await wait_port(self.port, 20, self.child)
        except (RuntimeError, TimeoutError) as exc:
            await self.child.stop()
            if self.redis_url is None:
                raise
            raise ClusterRefused(f"hub {self.name} did not start with `cluster: {{engine: redis}}` in "
                                 f"hub.yaml (this hub has no Redis engine yet?): {exc}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: the hub dies without a word (its links are reset by the kernel)."""
        assert self.child is not None and self.child.proc is not None
        self.child.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.stop()


async def _client(urls: str | list[str], sid: str, token: str,
                  on: Callable[[SessionEvent], None] | None = None) -> SessionClient:
    c = SessionClient(urls, sid, token)
    if on is not None:
        c.set_event_handler(on)
    await c.connect()
    return c


class EchoPair:
    """An operator and a receiver; the receiver answers each ``cmd`` signal with ``ans`` at once."""

    def __init__(self) -> None:
        self.answers: dict[str, asyncio.Future[float]] = {}
        self.got: list[tuple[int, str]] = []  # (seq, data) of every cmd the receiver got
        self.op: SessionClient | None = None
        self.rx: SessionClient | None = None

    async def open(self, op_url: str, rx_url: str) -> EchoPair:
        sid, (t_op, t_rx) = hub_session_and_tokens(("publisher", "op"), ("publisher", "rx"))

        def on_rx(ev: SessionEvent) -> None:
            if isinstance(ev, Signal) and ev.type == "cmd" and self.rx is not None:
                self.got.append((ev.seq, ev.data))
                self.rx.send_nowait("ans", ev.data, ev.from_id)

        def on_op(ev: SessionEvent) -> None:
            if isinstance(ev, Signal) and ev.type == "ans":
                fut = self.answers.pop(ev.data, None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())

        self.rx = await _client(rx_url, sid, t_rx, on_rx)
        self.op = await _client(op_url, sid, t_op, on_op)
        return self

    async def round(self, tag: str, n: int) -> list[float]:
        assert self.op is not None and self.rx is not None and self.rx.connection is not None
        out = []
        for k in range(n):
            key = f"{tag}-{k}"
            fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self.answers[key] = fut
            t0 = time.perf_counter()
            await self.op.signal("cmd", key, self.rx.connection.id)
            out.append((await asyncio.wait_for(fut, scaled(10)) - t0) * 1000)
        return out

    def faults(self) -> tuple[int, int, int]:
        """(lost, duplicated, reordered) at the receiver, from its seqs and the commands' order."""
        seqs = [s for s, _ in self.got]
        datas = [d for _, d in self.got]
        dup = len(datas) - len(set(datas))
        lost = (max(seqs) - min(seqs) + 1 - len(set(seqs))) if seqs else 0
        reordered = sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
        return lost, dup, reordered

    async def close(self) -> None:
        for c in (self.op, self.rx):
            if c is not None:
                await c.disconnect()


async def latency(results: Results, mem: Hub, a: Hub, b: Hub, n: int) -> None:
    local = await EchoPair().open(mem.url, mem.url)
    cross = await EchoPair().open(a.url, b.url)
    try:
        mem_ms: list[float] = []
        cross_ms: list[float] = []
        for r in range(5):  # alternating rounds: load drifts hit both alike
            mem_ms += await local.round(f"m{r}", n // 5)
            cross_ms += await cross.round(f"c{r}", n // 5)
        m, c = Stats.of(mem_ms), Stats.of(cross_ms)
        results.add(Row(SECTION, "command -> answer p50, cross-hub (Redis) vs one memory hub", c.p50, "ms",
                        baseline=m.p50, ratio=c.p50 / m.p50, target="<= 1.5x", passed=c.p50 <= 1.5 * m.p50,
                        note=f"{c.n} commands; operator on hub A, receiver on hub B"))
        results.add(Row(SECTION, "command -> answer p99, cross-hub vs one memory hub", c.p99, "ms",
                        baseline=m.p99, ratio=c.p99 / m.p99))
        lost, dup, reord = cross.faults()
        results.add(Row(SECTION, "cross-hub lost / duplicated / reordered", lost + dup + reord, "",
                        target="0", passed=lost + dup + reord == 0, note=f"{lost} / {dup} / {reord}"))
    finally:
        await local.close()
        await cross.close()


async def throughput(hubs: list[Hub], per_sender: int) -> tuple[float, int]:
    """Signals delivered per second with PAIRS pairs over ``hubs``; and how many were lost."""
    count = 0
    done = asyncio.Event()
    total = PAIRS * per_sender

    def on_rx(ev: SessionEvent) -> None:
        nonlocal count
        if isinstance(ev, Signal):
            count += 1
            if count >= total:
                done.set()

    pairs = []
    for i in range(PAIRS):
        sid, (t_op, t_rx) = hub_session_and_tokens(("publisher", "op"), ("publisher", "rx"))
        rx = await _client(hubs[(i + 1) % len(hubs)].url, sid, t_rx, on_rx)
        op = await _client(hubs[i % len(hubs)].url, sid, t_op)
        pairs.append((op, rx))

    async def send(op: SessionClient, to: str) -> None:
        for start in range(0, per_sender, WINDOW):
            burst = min(WINDOW, per_sender - start)
            await asyncio.gather(*(op.signal("t", "x" * 32, to) for _ in range(burst)))

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(send(op, rx.connection.id) for op, rx in pairs if rx.connection))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), scaled(10))
        return count / (time.perf_counter() - t0), total - count
    finally:
        for op, rx in pairs:
            await op.disconnect()
            await rx.disconnect()


async def failover(results: Results, a: Hub, b: Hub, c: Hub, runs: int) -> None:
    """The receiver on a or b (urls [a, b]), the operator on c; kill the receiver's hub each run."""
    sid, (t_op, t_rx) = hub_session_and_tokens(("publisher", "op"), ("publisher", "rx"))
    got: dict[str, float] = {}
    resumed = asyncio.Event()
    ended: list[str] = []

    def on_rx(ev: SessionEvent) -> None:
        if isinstance(ev, Signal):
            got.setdefault(ev.data, time.perf_counter())
        elif isinstance(ev, Reconnected):
            resumed.set()
        elif isinstance(ev, Disconnected):
            ended.append(ev.reason)
            resumed.set()

    rx = await _client([a.url, b.url], sid, t_rx, on_rx)
    op = await _client(c.url, sid, t_op)
    assert rx.connection is not None
    me = rx.connection.id
    times: list[float] = []
    refused: list[str] = []
    faults = 0
    try:
        for run in range(runs):
            victim = a if rx.uri.startswith(a.url + "/") else b
            sent: list[tuple[str, float]] = []
            stop = asyncio.Event()

            async def pump(run: int = run, sent: list[tuple[str, float]] = sent,
                           stop: asyncio.Event = stop) -> None:
                k = 0
                while not stop.is_set():
                    key = f"r{run}-{k}"
                    sent.append((key, time.perf_counter()))
                    try:
                        await op.signal("f", key, me)
                    except SignalError as exc:   # the receiver's hub refused it: a fault, counted
                        refused.append(f"{key}: {exc}")
                    k += 1
                    await asyncio.sleep(0.01)

            resumed.clear()
            task = asyncio.create_task(pump())
            try:
                await asyncio.sleep(0.1)
                t_kill = time.perf_counter()
                victim.kill()
                await asyncio.wait_for(resumed.wait(), scaled(30))
                t_resumed = time.perf_counter()
                if ended or rx.connection is None or rx.connection.id != me:
                    results.add(Row(SECTION, "failover", float("nan"), "",
                                    note=f"run {run}: not resumed ({ended})"))
                    faults += 1
                    break
                before = [key for key, t in sent if t < t_resumed]
                deadline = time.perf_counter() + scaled(10)
                while any(key not in got for key in before) and time.perf_counter() < deadline:
                    await asyncio.sleep(0.001)  # polling the receiver's arrivals, bounded
                faults += sum(1 for key in before if key not in got)
                times.append((max([got.get(key, t_resumed) for key in before] + [t_resumed]) - t_kill) * 1000)
            finally:
                stop.set()
                await task
            await victim.stop()
            await victim.start()
    finally:
        await op.disconnect()
        await rx.disconnect()
    s = Stats.of(times)
    results.add(Row(SECTION, f"failover p50 (SIGKILL -> resumed and replayed), {len(times)} runs", s.p50,
                    "ms", note=f"max {s.max:.0f} ms"))
    results.add(Row(SECTION, "failover p99", s.p99, "ms", target="<= 2000 ms", passed=s.p99 <= 2000))
    results.add(Row(SECTION, "failover: signals sent before the resume and missing", faults, "",
                    target="0", passed=faults == 0))
    results.add(Row(SECTION, "failover: signals the hubs refused meanwhile", len(refused), "", target="0",
                    passed=not refused, note=refused[0][:200] if refused else ""))


async def replay(rx_hub: Hub, resume_hub: Hub, n: int = 1000) -> float:
    """ms from a resume's connect to its ``n``-th replayed frame (n retry signals buffered meanwhile)."""
    sid, (t_op, t_rx) = hub_session_and_tokens(("publisher", "op"), ("publisher", "rx"))
    ws = await websockets.connect(f"{rx_hub.url}/v1/session/{sid}")
    await ws.send(json.dumps({"op": "connect", "token": t_rx}))
    hello = json.loads(await ws.recv())
    ws.transport.abort()
    op = await _client(resume_hub.url, sid, t_op)
    try:
        for start in range(0, n, WINDOW):
            await asyncio.gather(*(op.signal("t", f"{k}", hello["connection"]["id"])
                                   for k in range(start, min(n, start + WINDOW))))
        t0 = time.perf_counter()
        async with websockets.connect(f"{resume_hub.url}/v1/session/{sid}", max_size=None) as again:
            resume = {"connection_id": hello["connection"]["id"], "secret": hello["resume_secret"],
                      "last_seq": 0}
            await again.send(json.dumps({"op": "connect", "token": t_rx, "resume": resume}))
            answer = json.loads(await again.recv())
            if not answer.get("resumed"):
                raise RuntimeError(f"resume refused: {answer}")
            seen = 0
            while seen < n:
                frame = json.loads(await asyncio.wait_for(again.recv(), scaled(10)))
                seen += frame.get("op") == "signal"
            return (time.perf_counter() - t0) * 1000
    finally:
        await op.disconnect()


async def run(results: Results, quick: bool, workdir: Path) -> None:
    from tests.helpers.redis import running_redis  # needs redis-server; imported only here

    n = 100 if quick else 1000
    mem = await Hub(workdir, "memory", None).start()
    hubs: list[Hub] = []
    try:
        one = await throughput([mem], 100 if quick else 1000)
        results.add(Row(SECTION, "throughput, 1 memory hub (reference)", one[0], "/s", note=f"lost {one[1]}"))
        results.add(Row(SECTION, "resume replay of 1,000 frames, memory hub (same hub)",
                        await replay(mem, mem), "ms"))
        with running_redis() as redis:
            try:
                for name in ("a", "b", "c"):
                    hubs.append(await Hub(workdir, name, redis.urls[0]).start())
            except ClusterRefused as exc:
                print(f"cluster: {exc}", flush=True)
                results.add(Row(SECTION, "Redis engine", float("nan"), "",
                                note="hub refused the cluster block"))
                return
            await latency(results, mem, hubs[0], hubs[1], n)
            for k in (1, 2, 3):
                rate, lost = await throughput(hubs[:k], 100 if quick else 1000)
                results.add(Row(SECTION, f"throughput, {k} Redis hub(s), {PAIRS} pairs", rate, "/s",
                                baseline=one[0], ratio=rate / one[0], note=f"lost {lost}"))
            results.add(Row(SECTION, "resume replay of 1,000 frames, on another hub (Redis)",
                            await replay(hubs[0], hubs[1]), "ms"))
            await failover(results, hubs[0], hubs[1], hubs[2], 3 if quick else 10)
    finally:
        for h in [mem, *hubs]:
            await h.stop()
