"""Telemetry latency: a ``T <n> <speed>`` line written at the pty master -> bridge (telemetry match) ->
hub -> ``robot.telemetry`` signal at the operator (baseline: bare client -> bare relay -> operator)."""

from __future__ import annotations

from bench.common import Results
from bench.pingpong import Probe, Waiters, latency_benchmark, seq_of_json
from bench.rig import Rig, Side


def _install(side: Side, waiters: Waiters) -> None:
    def on_signal(kind: str, data: str, t: float) -> None:
        if kind == "robot.telemetry":
            waiters.arrived(seq_of_json(data), t)

    side.on_signal = on_signal


async def _fire(side: Side, n: int) -> None:
    side.pty.write(f"T {n} 0.50\n".encode())


TELEMETRY = Probe("telemetry", _install, _fire)


async def run(rig: Rig, results: Results, *, quick: bool = False) -> None:
    """Target (issue 6): p50 <= 1.5x baseline."""
    rounds, samples, warmup = (2, 20, 5) if quick else (6, 400, 50)
    await latency_benchmark(rig, results, TELEMETRY, "telemetry latency", rounds=rounds, samples=samples,
                            warmup=warmup, p50_target=1.5, p99_target=None)
