"""Command latency: operator ``signal("robot.move")`` -> hub -> bridge -> line read at the pty master
(baseline: bare websockets relay -> bare client -> the same pty write). Ping-pong, interleaved rounds."""

from __future__ import annotations

import json

from bench.common import Results
from bench.pingpong import Probe, Waiters, latency_benchmark, seq_of_line
from bench.rig import Rig, Side


def _install(side: Side, waiters: Waiters) -> None:
    side.on_line = lambda line, t: waiters.arrived(seq_of_line(line), t)


async def _fire(side: Side, n: int) -> None:
    await side.send("robot.move", json.dumps({"x": 0.5, "y": -0.25, "n": n}))


COMMAND = Probe("command", _install, _fire)


async def run(rig: Rig, results: Results, *, quick: bool = False) -> None:
    """Targets (issue 6): p50 <= 1.3x baseline, p99 <= 2x baseline."""
    rounds, samples, warmup = (2, 20, 5) if quick else (8, 500, 100)
    await latency_benchmark(rig, results, COMMAND, "command latency", rounds=rounds, samples=samples,
                            warmup=warmup, p50_target=1.3, p99_target=2.0)
