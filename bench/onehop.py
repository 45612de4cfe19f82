"""One hop: an operator straight to the process that writes the pty, no hub in between.

* ``embedded``: the bridge daemon hosting its session itself (issue 16), the operator a
  :class:`bridge.session.SessionClient` connected to the bridge's own listener.
* ``baseline``: ``python -m bench.baseline onehop``, a bare `websockets` server that turns each
  ``robot.move`` frame into the pty line (how a one-hop tool such as Node-RED's ws-in -> serial is
  shaped); the operator is a bare `websockets` client.

Until the bridge can host its session, :func:`start_embedded_side` says so and the rows put the
two-hop path (hub + bridge, the rig's bridge side) beside the one-hop baseline instead, marked as such
and without a verdict: what one hop has to beat. The three are interleaved round by round like every
other latency measurement, and the ratios are medians of per-round ratios.
"""

from __future__ import annotations

import json
from pathlib import Path

from websockets.asyncio.client import connect

from bench.common import PYTHON, Child, Pty, Results, Row, Stats
from bench.latency import COMMAND
from bench.pingpong import ping_pong, report_latency
from bench.rig import Rig, Side
from tests.helpers.mosquitto import free_port

#: Why the embedded row is missing, until :func:`start_embedded_side` can start one.
EMBEDDED_MISSING = "the bridge cannot host its session yet (issue 16, phase 2)"


async def start_embedded_side(workdir: Path, mqtt_port: int) -> Side | None:
    """The bridge daemon with its embedded session, the operator connected to it directly; None while
    the daemon has no such mode (then :data:`EMBEDDED_MISSING` says why). To plug it in: write the
    bridge.yaml of :func:`bench.rig.bridge_yaml` with the embedded session block instead of
    ``session.url``, start ``python -m bridge run -c FILE`` as a :class:`bench.common.Child`, join it
    with :class:`bench.rig.Operator` and return a ``Side("bridge", pty, topic, send, {"bridge": child})``
    as :func:`bench.rig.start_bridge_side` does."""
    return None


async def start_onehop_baseline(workdir: Path) -> Side:
    """The bare one-hop server on its own pty, and a bare websockets operator connected to it."""
    port = free_port()
    pty = Pty()
    server = await Child("onehop", [PYTHON, "-m", "bench.baseline", "onehop", "--port", str(port),
                                    "--pty", pty.path]).start()
    try:
        await server.wait_line("READY", 20)
        ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=1 << 16, max_queue=None)
    except BaseException:
        await server.stop()
        pty.close()
        raise

    async def send(kind: str, data: str) -> None:
        await ws.send(json.dumps({"op": "signal", "type": kind, "data": data}))

    side = Side("baseline", pty, "", send, {"onehop": server})
    side.close = [ws.close, server.stop]
    return side


async def _close(side: Side) -> None:
    for closer in side.close:
        await closer()
    side.pty.close()


async def run(rig: Rig, results: Results, *, quick: bool = False) -> None:
    """Target (issue 16): embedded command p50 <= 0.8x the one-hop bare server."""
    rounds, samples, warmup = (2, 20, 5) if quick else (8, 500, 100)
    section = "one-hop latency"
    base = await start_onehop_baseline(rig.workdir)
    embedded = await start_embedded_side(rig.workdir, rig.mosquitto.port if rig.mosquitto else 1883)
    mine = embedded or rig.bridge
    try:
        if mine is None:
            results.add(Row(section, "all", float("nan"), "", note="bridge not running"))
            return
        base.start()
        if embedded is not None:
            embedded.start()
        sides = {"bridge": mine, "baseline": base}
        for side in sides.values():  # warm-up, not recorded
            await ping_pong(side, COMMAND, warmup)
        got: dict[str, list[tuple[list[float], int]]] = {name: [] for name in sides}
        for r in range(rounds):
            for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                got[name].append(await ping_pong(sides[name], COMMAND, samples))
        if embedded is not None:
            report_latency(results, section, got, rounds=rounds, p50_target=0.8, p99_target=None)
        else:
            report_latency(results, section + " (2-hop bridge)", got, rounds=rounds, p50_target=None,
                           p99_target=None)
            results.add(Row(section, "embedded p50", float("nan"), "ms",
                            _p50(got["baseline"]), None, "<= 0.8x baseline", None,
                            f"{EMBEDDED_MISSING}; the rows above: hub + bridge against the one-hop "
                            "bare server"))
    finally:
        if embedded is not None:
            await _close(embedded)
        await _close(base)


def _p50(rounds: list[tuple[list[float], int]]) -> float:
    return Stats.of([x for xs, _ in rounds for x in xs]).p50
