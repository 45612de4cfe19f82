"""Ping-pong latency over a :class:`bench.rig.Side`, interleaved between the two sides, and how it is
reported. One message in flight at a time; each carries a sequence number ``n`` unique for the whole
run, so a late or stray message can never be taken for the one awaited."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bench.common import Results, Row, Stats, check, median_ratio, scaled
from bench.rig import Rig, Side

T = TypeVar("T")
_seq = itertools.count(1)


def next_seq() -> int:
    return next(_seq)


def seq_of_line(line: bytes) -> int | None:
    """The trailing integer of a line such as ``M 0.50 -0.25 17``."""
    try:
        return int(line.rsplit(b" ", 1)[-1])
    except ValueError:
        return None


def seq_of_json(data: str | bytes) -> int | None:
    try:
        n = json.loads(data).get("n")
    except (ValueError, AttributeError):
        return None
    return n if isinstance(n, int) else None


class Waiters:
    """Futures keyed by sequence number, resolved with the arrival time by a side's handler."""

    def __init__(self) -> None:
        self._futs: dict[int, asyncio.Future[float]] = {}

    def expect(self, n: int) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._futs[n] = fut
        return fut

    def pending(self) -> list[asyncio.Future[float]]:
        futs, self._futs = list(self._futs.values()), {}
        return futs

    def arrived(self, n: int | None, t: float) -> None:
        fut = self._futs.pop(n, None) if n is not None else None
        if fut is not None and not fut.done():
            fut.set_result(t)


@dataclass(frozen=True)
class Probe:
    """How to ping one path: ``install`` routes the side's arrivals to the waiters, ``fire`` sends
    number ``n`` into the path."""

    name: str
    install: Callable[[Side, Waiters], None]
    fire: Callable[[Side, int], Awaitable[None]]


#: Consecutive timeouts after which a round gives up (the rest count as lost): a broken path must not
#: keep the run waiting for count x timeout seconds.
MAX_CONSECUTIVE_TIMEOUTS = 3


async def ping_pong(side: Side, probe: Probe, count: int, timeout: float = 5.0) -> tuple[list[float], int]:
    """``count`` round trips, one at a time; returns (latencies in ms, number lost)."""
    waiters = Waiters()
    probe.install(side, waiters)
    try:
        return await ping_pong_fn(lambda n: probe.fire(side, n), waiters, count, timeout)
    finally:
        side.reset()


async def ping_pong_fn(fire: Callable[[int], Awaitable[None]], waiters: Waiters, count: int,
                       timeout: float = 5.0) -> tuple[list[float], int]:
    """The loop of :func:`ping_pong` for any path: ``fire(n)`` sends, ``waiters`` hears the arrival."""
    samples: list[float] = []
    lost = 0
    in_a_row = 0
    try:
        for i in range(count):
            if in_a_row >= MAX_CONSECUTIVE_TIMEOUTS:
                lost += count - i
                break
            n = next_seq()
            fut = waiters.expect(n)
            t0 = time.perf_counter()
            await fire(n)
            try:
                t1 = await asyncio.wait_for(fut, scaled(timeout))
            except TimeoutError:
                lost += 1
                in_a_row += 1
                continue
            in_a_row = 0
            samples.append((t1 - t0) * 1000)
    finally:
        for fut in waiters.pending():
            fut.cancel()
    return samples, lost


async def interleaved(rig: Rig, rounds: int, run: Callable[[Side], Awaitable[T]]) -> dict[str, list[T]]:
    """Run ``run(side)`` for each side, ``rounds`` times, alternating which side goes first
    (A B, B A, ...), so slow drifts of the machine's load hit both equally."""
    out: dict[str, list[T]] = {s.name: [] for s in rig.sides}
    for r in range(rounds):
        order = rig.sides if r % 2 == 0 else list(reversed(rig.sides))
        for side in order:
            out[side.name].append(await run(side))
    return out


async def latency_benchmark(rig: Rig, results: Results, probe: Probe, section: str, *, rounds: int,
                            samples: int, warmup: int, p50_target: float, p99_target: float | None) -> None:
    """Measure ``probe`` on both sides, interleaved, and add the rows (p50..max, ratios, verdicts)."""
    for side in rig.sides:  # warm caches, JITs of the mind, TCP windows; not recorded
        await ping_pong(side, probe, warmup)

    async def one_round(side: Side) -> tuple[list[float], int]:
        return await ping_pong(side, probe, samples)

    got = await interleaved(rig, rounds, one_round)
    report_latency(results, section, got, rounds=rounds, p50_target=p50_target, p99_target=p99_target)


def report_latency(results: Results, section: str, got: dict[str, list[tuple[list[float], int]]], *,
                   rounds: int, p50_target: float | None, p99_target: float | None) -> None:
    """Rows p50..max for the "bridge" results beside the "baseline" ones, with per-round ratios."""
    all_samples: dict[str, list[float]] = {}
    lost: dict[str, int] = {}
    for name, rs in got.items():
        all_samples[name] = [x for xs, _ in rs for x in xs]
        lost[name] = sum(n for _, n in rs)
        results.samples[f"{section}/{name}"] = all_samples[name]
    base = Stats.of(all_samples.get("baseline", []))
    if "bridge" not in got:
        for q in ("p50", "p90", "p99", "max"):
            results.add(Row(section, q, float("nan"), "ms", getattr(base, q), note="bridge not running"))
        return
    br = Stats.of(all_samples["bridge"])

    def ratio(q: str) -> float:
        pairs = [(getattr(Stats.of(b[0]), q), getattr(Stats.of(a[0]), q))
                 for b, a in zip(got["bridge"], got["baseline"], strict=True)]
        return median_ratio(pairs)

    note = f"{br.n} samples, {rounds} interleaved rounds"
    if lost["bridge"]:
        note += f", {lost['bridge']} timed out"
    r50, r99 = ratio("p50"), ratio("p99")
    results.add(Row(section, "p50", br.p50, "ms", base.p50, r50,
                    f"<= {p50_target}x baseline" if p50_target else "",
                    check(r50, p50_target) and not lost["bridge"] if p50_target else None, note))
    results.add(Row(section, "p90", br.p90, "ms", base.p90, ratio("p90")))
    results.add(Row(section, "p99", br.p99, "ms", base.p99, r99,
                    f"<= {p99_target}x baseline" if p99_target else "",
                    check(r99, p99_target) if p99_target else None))
    results.add(Row(section, "max", br.max, "ms", base.max, ratio("max")))
