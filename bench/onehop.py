"""One hop: an operator straight to the process that writes the pty, no hub in between.

* ``embedded``: the bridge daemon hosting its session itself (issue 16), the operator a
  :class:`bridge.session.SessionClient` connected to the bridge's own listener.
* ``baseline``: ``python -m bench.baseline onehop``, a bare `websockets` server that turns each
  ``robot.move`` frame into the pty line (how a one-hop tool such as Node-RED's ws-in -> serial is
  shaped); the operator is a bare `websockets` client.

Should the embedded side fail to start (:func:`start_embedded_side` returns None only then), the rows
put the two-hop path (hub + bridge, the rig's bridge side) beside the one-hop baseline instead, marked
as such and without a verdict. The sides are interleaved round by round like every other latency
measurement, and the ratios are medians of per-round ratios.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.common import PYTHON, Child, Pty, Results, Row, Stats, median_ratio
from bench.latency import COMMAND
from bench.pingpong import ping_pong, report_latency
from bench.rig import Operator, Rig, Side, _prefix, bridge_yaml, wait_for_connection
from tests.helpers.mosquitto import free_port

#: Why the embedded row is missing, until :func:`start_embedded_side` can start one.
EMBEDDED_MISSING = "the embedded side did not start"


async def start_embedded_side(workdir: Path, mqtt_port: int) -> Side | None:
    """The bridge daemon hosting its session (``session.embedded``, no hub process), the operator a
    SessionClient connected to the bridge's own listener with a token minted from the credentials the
    bridge made in its state dir. The bridge.yaml is :func:`bench.rig.bridge_yaml`'s with the
    embedded block instead of ``url``/``token_file``."""
    from bridge.core.events import Signal
    from bridge.core.tokens import mint_client_token

    port = free_port()
    pty = Pty()
    sid = "bench-onehop"
    topic = "bench/embedded/grip"
    conf = workdir / "embedded.yaml"
    state = workdir / "embedded-state"
    text = bridge_yaml(0, sid, workdir / "unused.token", pty.path, mqtt_port, topic, "bench-embedded")
    _, _, rest = text.partition("\n")
    conf.write_text(f'session: {{session_id: "{sid}", embedded: {{listen: "127.0.0.1:{port}", '
                    f'state_dir: "{state}"}}}}\n{rest}')
    bridge = await Child("embedded", [*_prefix("BENCH_BRIDGE_PREFIX"), "run", "-c", str(conf)]).start()
    side_box: list[Side] = []
    try:
        await bridge.wait_line("READY", 30)
        creds = json.loads((state / "credentials.json").read_text())
        token = mint_client_token(api_key=creds["api_key"], api_secret=creds["api_secret"], session_id=sid,
                                  role="moderator", data="bench-operator", now=time.time())

        def on_event(event: Any, t: float) -> None:
            if isinstance(event, Signal) and side_box:
                side_box[0].on_signal(event.type, event.data, t)

        op = await Operator.join(f"ws://127.0.0.1:{port}", sid, token, on_event)
        bridge_id = await wait_for_connection(op.client, "bridge", 20)
        client = op.client

        async def send(kind: str, data: str) -> None:
            await client.signal(type=kind, data=data, to=bridge_id, retry_after_reconnect=True)

        side = Side("bridge", pty, topic, send, {"bridge": bridge})
        side.close = [op.close, bridge.stop]
        side.info = {"session_id": sid, "hub_port": port, "bridge_id": bridge_id, "conf": conf,
                     "operator": client}
        side_box.append(side)
        return side
    except BaseException:
        await bridge.stop()
        pty.close()
        raise


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
        if embedded is not None and rig.bridge is not None:
            sides["two-hop"] = rig.bridge   # what the embedded session saves: the hub process and a hop
        for side in sides.values():  # warm-up, not recorded
            await ping_pong(side, COMMAND, warmup)
        got: dict[str, list[tuple[list[float], int]]] = {name: [] for name in sides}
        names = list(sides)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:   # each first in turn
                got[name].append(await ping_pong(sides[name], COMMAND, samples))
        if embedded is not None:
            two_hop = got.pop("two-hop", None)
            report_latency(results, section, got, rounds=rounds, p50_target=0.8, p99_target=None)
            if two_hop is not None:
                for q in ("p50", "p99"):
                    pairs = [(getattr(Stats.of(e), q), getattr(Stats.of(t), q))
                             for (e, _), (t, _) in zip(got["bridge"], two_hop, strict=True)]
                    results.add(Row(section, f"{q} vs 2-hop", getattr(Stats.of(
                        [x for xs, _ in got["bridge"] for x in xs]), q), "ms",
                        getattr(Stats.of([x for xs, _ in two_hop for x in xs]), q), median_ratio(pairs),
                        note="embedded against hub + bridge, same rounds"))
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
