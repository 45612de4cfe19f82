"""Footprint: CPU seconds per 10,000 signals and peak RSS (VmHWM) of the bridge and of the hub, beside
the baseline's device client and relay; start-up time of ``sigbridge run`` to ready.

"Ready" is measured two ways: the bridge's connection appearing in the session (the operator sees it;
the issue's definition), and the first command written to its pty (everything open and wired)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time

from bench.common import PYTHON, Child, Pty, Results, Row, peak_rss_mb, scaled
from bench.pingpong import interleaved
from bench.rig import BRIDGE_DATA, Rig, bridge_yaml, token_for, wait_for_connection, wait_for_line
from bench.throughput import SERIAL_E2E_WINDOW, Flood, flood, install_line, move_data

CPU_PAIRS = {"bridge": "device", "hub": "relay"}


async def run(rig: Rig, results: Results, *, quick: bool = False) -> None:
    """Targets (issue 6): bridge peak RSS <= 40 MB; start-up to ready < 1 s."""
    count = 1_000 if quick else 10_000
    got = await interleaved(rig, 1 if quick else 2,
                            lambda s: flood(s, "robot.move", move_data, install_line, 120, count,
                                            SERIAL_E2E_WINDOW))
    section = "footprint"
    if rig.bridge is None:
        results.add(Row(section, "all", float("nan"), "", note="bridge not running"))
        return
    for mine, theirs in CPU_PAIRS.items():
        results.add(Row(section, f"{mine} CPU per 10k signals", _per_10k(got["bridge"], mine), "s",
                        _per_10k(got["baseline"], theirs), None, "", None,
                        f"baseline: bare {theirs}; {count:,} signals flooded"))
    for mine, theirs in CPU_PAIRS.items():
        rss = peak_rss_mb(rig.bridge.procs[mine].pid)
        assert rig.baseline is not None
        base = peak_rss_mb(rig.baseline.procs[theirs].pid)
        is_bridge = mine == "bridge"
        results.add(Row(section, f"{mine} peak RSS", rss, "MB", base, None, "<= 40 MB" if is_bridge else "",
                        rss <= 40 if is_bridge else None, "VmHWM after all runs so far"))
    await startup(rig, results, 1 if quick else 5)


def _per_10k(floods: list[Flood], proc: str) -> float:
    per = [f.cpu.get(proc, float("nan")) / max(1, len(f.arrivals)) * 10_000 for f in floods]
    return statistics.median(per)


async def startup(rig: Rig, results: Results, times: int) -> None:
    assert rig.bridge is not None and rig.baseline is not None
    info = rig.bridge.info
    op = info["operator"]
    joins: list[float] = []
    firsts: list[float] = []
    for i in range(times):
        data = f"{BRIDGE_DATA}-start-{i}"
        token_file = rig.workdir / f"start-{i}.token"
        token_file.write_text(token_for(info["session_id"], "publisher", data))
        pty = Pty()
        conf = rig.workdir / f"start-{i}.yaml"
        conf.write_text(bridge_yaml(info["hub_port"], info["session_id"], token_file, pty.path,
                                    rig.mosquitto.port if rig.mosquitto else 1883, "bench/start/grip",
                                    client_id=f"bench-start-{i}"))
        child = Child(f"bridge-start-{i}", [PYTHON, "-m", "bridge", "run", "-c", str(conf)])
        try:
            await child.start()
            cid = await wait_for_connection(op, data, 20)
            joins.append(time.perf_counter() - child.started_at)
            firsts.append(await _first_command(op, cid, pty) - child.started_at)
        finally:
            await child.stop()
            pty.close()
    base = await _baseline_startup(rig)
    j, f = statistics.median(joins), statistics.median(firsts)
    results.add(Row("start-up", "to connection in session", j * 1000, "ms", base * 1000, None, "< 1000 ms",
                    j < 1.0, f"median of {times}; max {max(joins) * 1000:.0f} ms; "
                    "baseline: bare client to READY"))
    results.add(Row("start-up", "to first command written", f * 1000, "ms", None, None, "", None,
                    f"median of {times}; max {max(firsts) * 1000:.0f} ms"))


async def _first_command(op: object, cid: str, pty: Pty) -> float:
    """Send robot.move to ``cid`` every 10 ms until a line reaches its pty; returns that line's time."""
    line = asyncio.ensure_future(wait_for_line(pty, 60))
    deadline = time.monotonic() + scaled(20)
    try:
        while not line.done() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # refused until the bridge is wired: try again
                await op.signal(type="robot.move", data=json.dumps({"x": 0, "y": 0, "n": 1}), to=cid,  # type: ignore[attr-defined]
                                retry_after_reconnect=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(line), 0.01)
        return await asyncio.wait_for(line, scaled(1))
    finally:
        line.cancel()


async def _baseline_startup(rig: Rig) -> float:
    """Start-up of the bare device client (interpreter, imports, connect to the relay) to READY."""
    assert rig.baseline is not None
    url = next(a for a in rig.baseline.procs["device"].argv if a.startswith("ws://"))
    pty = Pty()
    child = Child("device-start", [PYTHON, "-m", "bench.baseline", "device", "--url", url + "-start",
                                   "--pty", pty.path])
    try:
        await child.start()
        await child.wait_line("READY", 20)
        return time.perf_counter() - child.started_at
    finally:
        await child.stop()
        pty.close()
