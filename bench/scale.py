"""Scale of the hub: fan-out latency and hub CPU with N receivers in one session (N = 1, 10, 100,
1000, plus the sender's own connection), and with 100 sessions of 2 clients signalling at once.
Baseline: the bare websockets relay with the same clients (a path is a room).

Clients here are bare wire-protocol-v1 clients (websockets, no SessionClient), so that a thousand of
them fit in the bench process; a receiver only stamps the arrival time of the frame carrying the
round's marker. Fan-out latency = marker sent -> marker received, per receiver: "p50" is the median
receiver, "last" the slowest one (the whole broadcast done). Both include the bench's own time to
read N frames, the same for hub and relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import (
    PYTHON,
    Child,
    Results,
    Row,
    cpu_seconds,
    median_ratio,
    peak_rss_mb,
    raise_fd_limit,
    scaled,
)
from bench.rig import API_KEY, start_hub, token_for
from tests.helpers.mosquitto import free_port

CONNECT_CONCURRENCY = 50
#: The hub's WebSocket ping interval for this benchmark: None keeps the hub's default (2 s, pong due
#: within 1 s). Once, under heavy load, the hub dropped the sender's link while a thousand clients in
#: this one process were still reading the N^2 connection_created storm (pongs late); a closed link is
#: counted as an error, not hidden. Raise it (e.g. 30) to measure the hub without that effect.
HEARTBEAT_S: float | None = None


@dataclass
class Marker:
    """What receivers are waiting for in the current round, and when each one saw it."""

    text: str = ""
    expected: int = 0
    arrivals: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def arm(self, text: str, expected: int) -> None:
        self.text, self.expected, self.arrivals = text, expected, []
        self.done.clear()

    def seen(self, t: float) -> None:
        self.arrivals.append(t)
        if len(self.arrivals) >= self.expected:
            self.done.set()


class System:
    """Hub or relay, seen as "open a client in room R" plus a process to read CPU from."""

    def __init__(self, name: str, proc: Child, port: int, hub: bool) -> None:
        self.name, self.proc, self.port, self.hub = name, proc, port, hub
        self.clients: list[ClientConnection] = []
        self.pumps: list[asyncio.Task[None]] = []
        self.errors = 0
        self.closed: list[str] = []
        self._ids = 0

    async def client(self, room: str, marker: Marker | None) -> ClientConnection:
        path = f"/v1/session/{room}" if self.hub else f"/{room}"
        ws = await connect(f"ws://127.0.0.1:{self.port}{path}", compression=None, max_size=1 << 22,
                           max_queue=None, open_timeout=scaled(30), ping_interval=None)
        if self.hub:
            await ws.send(json.dumps({"op": "connect", "token": token_for(room, "publisher", "scale")}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), scaled(30)))
                if msg.get("op") == "connected":
                    break
                if msg.get("op") == "error":
                    raise RuntimeError(f"hub refused a client: {msg}")
        self.clients.append(ws)
        self.pumps.append(asyncio.create_task(_pump(ws, marker)))
        return ws

    async def many(self, room: str, count: int, marker: Marker) -> None:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one() -> None:
            async with sem:
                try:
                    await self.client(room, marker)
                except Exception:
                    self.errors += 1

        await asyncio.gather(*(one() for _ in range(count)))

    async def send(self, ws: ClientConnection, text: str) -> None:
        """Send the round's marker; a closed link is counted as an error (its round then misses)."""
        self._ids += 1
        frame = {"op": "signal", "id": self._ids, "type": "bench.fanout", "data": text, "retry": False}
        try:
            await ws.send(json.dumps(frame))
        except ConnectionClosed as e:
            self.errors += 1
            self.closed.append(f"{self.name} sender closed: code {e.rcvd.code if e.rcvd else 'none'}")

    async def close_all(self) -> None:
        for t in self.pumps:
            t.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(c.close(), scaled(5)) for c in self.clients),
                             return_exceptions=True)
        self.clients, self.pumps = [], []


async def _pump(ws: ClientConnection, marker: Marker | None) -> None:
    with contextlib.suppress(Exception):
        async for frame in ws:
            if marker is not None and marker.text and isinstance(frame, str) and marker.text in frame:
                marker.seen(time.perf_counter())


@dataclass
class RoundStats:
    p50: float
    last: float
    missing: int


async def one_session(system: System, n: int, rounds: int, other: System, tag: str) -> dict[str, Any]:
    """N receivers + 1 sender in one room per system; rounds interleaved between ``system`` and ``other``."""
    systems = [system, other]
    markers = {s.name: Marker() for s in systems}
    senders: dict[str, ClientConnection] = {}
    for s in systems:
        room = _room(s, tag)
        await s.many(room, n, markers[s.name])
        senders[s.name] = await s.client(room, None)
    got: dict[str, list[RoundStats]] = {s.name: [] for s in systems}
    cpu: dict[str, float] = {}
    for r in range(rounds + 1):  # round 0 is a warm-up that also flushes the connection_created storm
        for s in systems if r % 2 == 0 else reversed(systems):
            c0 = cpu_seconds(s.proc.pid)
            m = markers[s.name]
            m.arm(f"mk-{tag}-{r}-", n - s.errors)
            t0 = time.perf_counter()
            await s.send(senders[s.name], m.text)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(m.done.wait(), scaled(30))
            lat = sorted((t - t0) * 1000 for t in m.arrivals)
            if r:
                got[s.name].append(RoundStats(statistics.median(lat) if lat else float("nan"),
                                              lat[-1] if lat else float("nan"), m.expected - len(lat)))
                cpu[s.name] = cpu.get(s.name, 0.0) + cpu_seconds(s.proc.pid) - c0
    out = {"rounds": got, "cpu": cpu, "errors": {s.name: s.errors for s in systems}}
    for s in systems:
        await s.close_all()
        s.errors = 0
    return out


def _room(s: System, tag: str) -> str:
    if not s.hub:
        return tag
    from bridge.core.tokens import new_session_id

    return new_session_id(API_KEY, now=time.time())


async def many_sessions(hub: System, relay: System, sessions: int, rounds: int) -> dict[str, Any]:
    """``sessions`` rooms of 2 clients; each round every sender signals its peer at once."""
    systems = [hub, relay]
    pairs: dict[str, list[tuple[ClientConnection, Marker]]] = {s.name: [] for s in systems}
    for s in systems:
        for i in range(sessions):
            room = _room(s, f"pair-{i}")
            m = Marker()
            await s.client(room, m)
            pairs[s.name].append((await s.client(room, None), m))
    got: dict[str, list[RoundStats]] = {s.name: [] for s in systems}
    cpu: dict[str, float] = {}
    for r in range(rounds + 1):
        for s in systems if r % 2 == 0 else reversed(systems):
            c0 = cpu_seconds(s.proc.pid)
            starts = []
            for i, (_, m) in enumerate(pairs[s.name]):
                m.arm(f"pair-{r}-{i}-", 1)
            for sender, m in pairs[s.name]:
                starts.append(time.perf_counter())
                await s.send(sender, m.text)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(m.done.wait() for _, m in pairs[s.name])), scaled(30))
            lat = sorted((m.arrivals[0] - t0) * 1000 for t0, (_, m) in zip(starts, pairs[s.name], strict=True)
                         if m.arrivals)
            if r:
                got[s.name].append(RoundStats(statistics.median(lat) if lat else float("nan"),
                                              lat[-1] if lat else float("nan"), sessions - len(lat)))
                cpu[s.name] = cpu.get(s.name, 0.0) + cpu_seconds(s.proc.pid) - c0
    for s in systems:
        await s.close_all()
    return {"rounds": got, "cpu": cpu, "errors": {s.name: s.errors for s in systems}}


async def run(results: Results, *, quick: bool = False, workdir: Path) -> None:
    """Target (issue 6): 1,000 clients in one session without errors."""
    raise_fd_limit(8192)
    sizes = [(1, 5), (10, 5)] if quick else [(1, 60), (10, 40), (100, 20), (1000, 8)]
    hub_proc, hub_port = await start_hub(workdir, heartbeat_s=HEARTBEAT_S)
    relay_port = free_port()
    relay_argv = [PYTHON, "-m", "bench.baseline", "relay", "--port", str(relay_port)]
    relay_proc = await Child("relay", relay_argv).start()
    try:
        await relay_proc.wait_line("READY", 20)
        hub, relay = System("hub", hub_proc, hub_port, True), System("relay", relay_proc, relay_port, False)
        for n, rounds in sizes:
            res = await one_session(hub, n, rounds, relay, f"one-{n}")
            _report(results, f"{n} in one session", res, rounds, n, target=n == 1000)
        sessions, rounds = (10, 3) if quick else (100, 20)
        res = await many_sessions(hub, relay, sessions, rounds)
        _report(results, f"{sessions} sessions x 2", res, rounds, sessions, target=False)
        results.add(Row("hub scale", "hub peak RSS", peak_rss_mb(hub_proc.pid), "MB",
                        peak_rss_mb(relay_proc.pid), note="VmHWM after all scale runs"))
    finally:
        await relay_proc.stop()
        await hub_proc.stop()


def _report(results: Results, label: str, res: dict[str, Any], rounds: int, deliveries: int,
            target: bool) -> None:
    h: list[RoundStats] = res["rounds"]["hub"]
    b: list[RoundStats] = res["rounds"]["relay"]
    missing = sum(x.missing for x in h) + res["errors"]["hub"]
    for q in ("p50", "last"):
        v = statistics.median(getattr(x, q) for x in h)
        base = statistics.median(getattr(x, q) for x in b)
        ratio = median_ratio([(getattr(x, q), getattr(y, q)) for x, y in zip(h, b, strict=True)])
        results.add(Row("hub scale", f"{label}: fan-out {q}", v, "ms", base, ratio))
    if "one session" in label:  # the N-receivers curve of the plot
        for name, xs in (("hub", h), ("relay", b)):
            for q in ("p50", "last"):
                results.series.setdefault(f"fanout {q}/{name}", []).append(
                    (deliveries, statistics.median(getattr(x, q) for x in xs)))
    per = rounds * max(1, deliveries)
    results.add(Row("hub scale", f"{label}: CPU per delivery", res["cpu"].get("hub", 0) / per * 1e6, "us",
                    res["cpu"].get("relay", 0) / per * 1e6, None, "", None, f"{rounds} rounds"))
    results.add(Row("hub scale", f"{label}: errors", missing, "", None, None, "0" if target else "",
                    missing == 0 if target else None,
                    f"connect failures + missing deliveries (relay: "
                    f"{sum(x.missing for x in b) + res['errors']['relay']}); hub heartbeat_s "
                    f"{HEARTBEAT_S or 'default'}"))
