"""Command latency: operator ``signal("robot.move")`` -> hub -> bridge -> line read at the pty master
(baseline: bare websockets relay -> bare client -> the same pty write). Ping-pong, interleaved rounds."""

from __future__ import annotations

import asyncio
import json
import time

from websockets.asyncio.client import connect

from bench.common import Results
from bench.pingpong import (
    Probe,
    Waiters,
    latency_benchmark,
    ping_pong_fn,
    report_latency,
    seq_of_json,
    seq_of_line,
)
from bench.rig import Operator, Rig, Side, token_for, wait_for_connection
from bridge.core.events import Signal


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
    await hub_only(rig, results, quick=quick)


async def hub_only(rig: Rig, results: Results, *, quick: bool = False) -> None:
    """The hub's share of the command path: operator SessionClient -> hub -> a second SessionClient in
    the bench (baseline: bare websockets client -> bare relay -> bare websockets client). Subtracting
    it from the command latency leaves the bridge daemon's share."""
    if rig.bridge is None or rig.baseline is None:
        return
    info = rig.bridge.info
    rounds, samples, warmup = (2, 20, 5) if quick else (8, 400, 50)
    hub_waiters, relay_waiters = Waiters(), Waiters()

    def on_event(event: object, t: float) -> None:
        if isinstance(event, Signal) and event.type == "bench.echo":
            hub_waiters.arrived(seq_of_json(event.data), t)

    url = f"ws://127.0.0.1:{info['hub_port']}"
    rx = await Operator.join(url, info["session_id"], token_for(info["session_id"], "publisher", "bench-rx"),
                             on_event)
    relay_url = rig.baseline.info["relay_url"] + "/hub-only"
    tx_ws = await connect(relay_url, compression=None, max_queue=None)
    rx_ws = await connect(relay_url, compression=None, max_queue=None)

    async def relay_pump() -> None:
        async for frame in rx_ws:
            t = time.perf_counter()
            relay_waiters.arrived(seq_of_json(json.loads(frame)["data"]), t)

    pump = asyncio.create_task(relay_pump())
    try:
        op = info["operator"]
        rx_id = await wait_for_connection(op, "bench-rx", 10)

        async def via_hub(n: int) -> None:
            await op.signal(type="bench.echo", data=json.dumps({"n": n}), to=rx_id)

        async def via_relay(n: int) -> None:
            await tx_ws.send(json.dumps({"op": "signal", "type": "bench.echo", "data": json.dumps({"n": n})}))

        paths = {"bridge": (via_hub, hub_waiters), "baseline": (via_relay, relay_waiters)}
        for fire, waiters in paths.values():
            await ping_pong_fn(fire, waiters, warmup)
        got: dict[str, list[tuple[list[float], int]]] = {name: [] for name in paths}
        for r in range(rounds):
            for name in (list(paths) if r % 2 == 0 else list(reversed(paths))):
                fire, waiters = paths[name]
                got[name].append(await ping_pong_fn(fire, waiters, samples))
        report_latency(results, "hub-only latency", got, rounds=rounds, p50_target=None, p99_target=None)
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await tx_ws.close()
        await rx_ws.close()
        await rx.close()
