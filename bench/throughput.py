"""Throughput: the command path flooded for a few seconds; signals/s written to the pty and how many
were lost, duplicated or reordered (every signal carries its sequence number ``n`` in the line).

The operator keeps a window of signals in flight: ``SessionClient.signal()`` returns on the hub's ack,
so the bridge side needs concurrent senders; the baseline's bare ``ws.send`` never waits for a round
trip, so one sender saturates it. Sequence numbers are taken in call order in both cases. The hub runs
with its per-connection rate limit off (``rate_limit: {per_second: 0}``), or 1,000/s would cap it."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.common import Results, Row, cpu_seconds, median_ratio, scaled
from bench.pingpong import interleaved, next_seq, seq_of_json, seq_of_line
from bench.rig import Rig, Side

#: Signals awaiting the hub's ack at once (bridge side; SessionClient.signal() returns on the ack).
BRIDGE_WINDOW = 64
#: Signals sent and not yet arrived, at most (both sides). Below the bridge's own bounded queues
#: (SessionClient events: 1000; MQTT link queue: 1,000 publishes), so that what is measured is throughput,
#: not how a queue overflows (see README, "overload").
SERIAL_E2E_WINDOW = 500
MQTT_E2E_WINDOW = 200


@dataclass
class Flood:
    sent: int = 0
    refused: int = 0
    #: refused by the bridge itself: received, but its device link was down or its bounded queue full
    #: (bridge.status decisions device_down / overloaded, or writes_refused); never written, so not lost
    device_refused: int = 0
    arrivals: list[int] = field(default_factory=list)
    first_send: float = 0.0
    last_arrival: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    refusal: str = ""
    first_n: int = 0
    last_n: int = 0
    late: int = 0  # arrivals from an earlier flood, not counted
    drain_s: float = 0.0
    wall: float = 0.0

    @property
    def rate(self) -> float:
        span = self.last_arrival - self.first_send
        return len(self.arrivals) / span if span > 0 else 0.0

    def audit(self) -> tuple[int, int, int]:
        """(lost, duplicated, reordered) among the accepted signals."""
        unique = set(self.arrivals)
        lost = max(0, self.sent - self.refused - self.device_refused - len(unique))
        dup = len(self.arrivals) - len(unique)
        reordered, high = 0, -1
        for n in self.arrivals:
            if n < high:
                reordered += 1
            high = max(high, n)
        return lost, dup, reordered


Arrive = Callable[[int | None, float], None]


async def flood(side: Side, kind: str, data: Callable[[int], str], install: Callable[[Side, Arrive], None],
                seconds: float, max_count: int, e2e_window: int) -> Flood:
    """Send as fast as the side takes them for ``seconds`` (at most ``max_count``), never more than
    ``e2e_window`` sent and not yet arrived (end-to-end flow control, the same for both sides: the rate
    measured is sustainable, not a queue filling up), then wait for the stragglers (until all arrived,
    or 2 s without progress, at most 30 s). CPU of the side's processes is read around the whole
    thing. A path that loses signals stalls the window: after 2 s without progress sending stops and
    the missing ones count as lost."""
    f = Flood()
    progress = asyncio.Event()
    # One permit per signal allowed in flight; an arrival gives one back and wakes one sender only
    # (an Event would wake all 64 senders per arrival, and the bench would measure itself).
    permits = asyncio.Semaphore(e2e_window)

    def arrive(n: int | None, t: float) -> None:
        if n is None:
            return
        if n < f.first_n:
            f.late += 1
            return
        f.arrivals.append(n)
        f.last_arrival = t
        permits.release()
        progress.set()

    install(side, arrive)
    refused_before = await side.writes_refused() if side.writes_refused is not None else 0
    pids = {name: c.pid for name, c in side.procs.items()} | {"bench": os.getpid()}
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    f.first_n = next_seq()  # every n of this flood is above it
    f.first_send = time.perf_counter()
    end = f.first_send + seconds

    async def sender() -> None:
        while time.perf_counter() < end and f.sent < max_count:
            if permits.locked():
                try:
                    await asyncio.wait_for(permits.acquire(), scaled(2))
                except TimeoutError:
                    return  # stalled: something was lost
            else:
                await permits.acquire()  # free: returns at once
            n = f.last_n = next_seq()
            f.sent += 1
            try:
                await side.send(kind, data(n))
            except Exception as e:  # a refusal (e.g. 429) is counted, not fatal
                f.refused += 1
                f.refusal = f"{type(e).__name__}: {e}"[:200]
                permits.release()  # it will never arrive

    window = BRIDGE_WINDOW if side.name == "bridge" else 1
    try:
        await asyncio.wait_for(asyncio.gather(*(sender() for _ in range(window))), scaled(seconds + 30))
        if side.writes_refused is not None:
            # Asked after the last signal, on the same path: answered once the bridge has handled them all.
            f.device_refused = await side.writes_refused() - refused_before
        drain_from = time.monotonic()
        deadline = drain_from + scaled(30)
        while len(f.arrivals) < f.sent - f.refused - f.device_refused and time.monotonic() < deadline:
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), scaled(2))
            except TimeoutError:
                break  # nothing more is coming
        f.drain_s = time.monotonic() - drain_from
    finally:
        f.wall = time.perf_counter() - f.first_send
        f.cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()
                 if name == "bench" or side.procs[name].alive()}
        side.reset()
    return f


def _cpu_per_signal_us(f: Flood) -> float:
    """CPU microseconds per delivered signal, summed over every process of the path (the bench's
    own included: it is the operator and the pty/MQTT reader)."""
    return sum(f.cpu.values()) / max(1, len(f.arrivals)) * 1e6


def _split(floods: list[Flood]) -> str:
    """Median CPU microseconds per delivered signal of each process, e.g. "hub 20, bridge 38, bench 40"
    (the bench is the operator and the pty/MQTT reader)."""
    def per_signal(f: Flood, name: str) -> float:
        return f.cpu.get(name, 0.0) / max(1, len(f.arrivals)) * 1e6
    return ", ".join(f"{name} {statistics.median(per_signal(f, name) for f in floods):.0f}"
                     for name in floods[0].cpu)


def install_line(side: Side, arrive: Arrive) -> None:
    side.on_line = lambda line, t: arrive(seq_of_line(line), t)


def install_mqtt(side: Side, arrive: Arrive) -> None:
    side.on_mqtt = lambda payload, t: arrive(seq_of_json(payload), t)


def move_data(n: int) -> str:
    return json.dumps({"x": 0.5, "y": -0.25, "n": n})


async def flood_benchmark(rig: Rig, results: Results, section: str, kind: str, data: Callable[[int], str],
                          install: Callable[[Side, Arrive], None], *, rounds: int, seconds: float,
                          max_count: int, target: float | None, e2e_window: int) -> dict[str, list[Flood]]:
    got = await interleaved(rig, rounds,
                            lambda s: flood(s, kind, data, install, seconds, max_count, e2e_window))
    base = statistics.median(f.rate for f in got["baseline"])
    if rig.bridge is None:
        results.add(Row(section, "signals/s", float("nan"), "/s", base, note="bridge not running"))
        return got
    brs = got["bridge"]
    rate = statistics.median(f.rate for f in brs)
    ratio = median_ratio([(b.rate, a.rate) for b, a in zip(brs, got["baseline"], strict=True)])
    lost, dup, reord = (sum(f.audit()[i] for f in brs) for i in range(3))
    refused = sum(f.refused for f in brs)
    device_refused = sum(f.device_refused for f in brs)
    clean = lost == dup == reord == refused == device_refused == 0
    note = (f"median of {rounds} rounds of {seconds:g} s, {sum(f.sent for f in brs)} sent, at most "
            f"{e2e_window} in flight; hub rate limit off"
            + (f"; refused {refused} ({brs[-1].refusal or 'see log'})" if refused else "")
            + (f"; {device_refused} refused by the bridge (device queue full)" if device_refused else ""))
    verdict = (rate >= target and clean) if target else None
    results.add(Row(section, "signals/s", rate, "/s", base, ratio, f">= {target:,.0f}/s" if target else "",
                    verdict, note))
    cpu_b, cpu_a = (statistics.median(_cpu_per_signal_us(f) for f in got[s]) for s in ("bridge", "baseline"))
    cpu_ratio = median_ratio([(_cpu_per_signal_us(b), _cpu_per_signal_us(a))
                              for b, a in zip(brs, got["baseline"], strict=True)])
    results.add(Row(section, "CPU per signal, whole path", cpu_b, "us", cpu_a, cpu_ratio, "", None,
                    "operator + hub + bridge (baseline: operator + relay + device); steadier than signals/s; "
                    f"by process, us: {_split(brs)} (baseline: {_split(got['baseline'])})"))
    base_audit = [sum(f.audit()[i] for f in got["baseline"]) for i in range(3)]
    results.add(Row(section, "lost/dup/reordered", lost + dup + reord, "", sum(base_audit), None,
                    "0 (retry: true)", clean, f"lost {lost}, duplicated {dup}, reordered {reord}"))
    return got


async def overload(rig: Rig, results: Results, section: str, kind: str, data: Callable[[int], str],
                   install: Callable[[Side, Arrive], None], count: int) -> None:
    """``count`` signals as fast as the operator can send them, with no end-to-end window: only the
    hub's acks pace the bridge side. Shows what the bounded queues on the way do with the excess."""
    got = await interleaved(rig, 1, lambda s: flood(s, kind, data, install, 30, count, 10**9))
    if rig.bridge is None:
        return
    b, a = got["bridge"][0], got["baseline"][0]
    lost, dup, reord = b.audit()
    refused = (f"; refused by the bridge, its device queue full (bridge.status overloaded and "
               f"writes_refused, never written): {b.device_refused:,}" if b.device_refused else "")
    results.add(Row(section, "overload: lost/dup/reordered", lost + dup + reord, "", sum(a.audit()), None,
                    "0 (retry: true)", lost + dup + reord == 0,
                    f"{count:,} sent with no end-to-end window; lost {lost}, duplicated {dup}, "
                    f"reordered {reord}{refused}"))


async def run(rig: Rig, results: Results, *, quick: bool = False) -> None:
    """Target (issue 6): >= 15,000 signals/s through hub and bridge, zero loss."""
    rounds, seconds, max_count = (1, 0.3, 300) if quick else (4, 3.0, 200_000)
    await flood_benchmark(rig, results, "throughput", "robot.move", move_data, install_line, rounds=rounds,
                          seconds=seconds, max_count=max_count, target=15_000, e2e_window=SERIAL_E2E_WINDOW)
    await overload(rig, results, "throughput", "robot.move", move_data, install_line,
                   500 if quick else 30_000)
