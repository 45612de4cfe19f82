"""The camera (``python -m bench camera``): glass-to-glass latency, the camera's CPU and RSS, and what one
video viewer does to command latency.

Setup: the rig's hub and bridge (processes), a ``sigbridge camera`` process with the synthetic source
in the same session, and one headless Chromium on the console page watching it. Glass to glass: the
capture time (hub clock) drawn into each frame's code, read back from a canvas at the frame's expected
display time (bridge/console/video.js). CPU: the camera process's CPU seconds over a window with one
viewer. Command latency: the rig's ping-pong (operator -> hub -> bridge -> pty), in rounds alternating
"no viewer" (the camera idle, its source stopped) and "one viewer" (streaming 640x480@30).

Priorities, as deployed: the camera runs at the ``Nice=`` of its systemd unit
(config/systemd/sigbridge-camera.service), below the bridge; the viewer's browser, which stands in for
the operator's own machine, runs at nice 19 so that its video decoding (a remote machine's work) takes
what the robot's two cores leave over. ``BENCH_CAMERA_SAME_PRIORITY=1`` runs both at the bench's own
priority instead (every process competing alike: the command-latency cost is then mostly the
browser's decoding on the same cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench.common import Child, Results, Row, Stats, cpu_seconds, median_ratio, peak_rss_mb
from bench.latency import COMMAND
from bench.pingpong import ping_pong
from bench.rig import Rig, _prefix, token_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SIZES = ((320, 240), (640, 480))
UNIT = Path(__file__).resolve().parent.parent / "config" / "systemd" / "sigbridge-camera.service"


def _same_priority() -> bool:
    return os.environ.get("BENCH_CAMERA_SAME_PRIORITY") == "1"


def _unit_nice() -> list[str]:
    """``nice -n N`` with the camera unit's ``Nice=`` (nothing when running at the same priority)."""
    m = re.search(r"^Nice=(-?\d+)", UNIT.read_text(), re.M)
    return [] if _same_priority() or m is None else ["nice", "-n", m.group(1)]


def _browser(workdir: Path) -> str:
    """The Chromium to launch: at nice 19 through a wrapper script (its renderers inherit it)."""
    if _same_priority():
        return CHROMIUM
    wrapper = workdir / "chromium-nice19"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n 19 {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _rss_mb(pid: int) -> float:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


async def _camera(rig: Rig, size: tuple[int, int], fps: int = 30) -> Child:
    info = rig.bridge.info if rig.bridge else {}
    sid = info["session_id"]
    conf = rig.workdir / f"camera-{size[0]}.yaml"
    (rig.workdir / "camera.token").write_text(token_for(sid, "publisher", "bench-camera"))
    conf.write_text(
        f'session: {{url: "ws://127.0.0.1:{info["hub_port"]}", session_id: "{sid}", '
        f'token_file: "{rig.workdir / "camera.token"}"}}\n'
        f"camera: {{source: synthetic, width: {size[0]}, height: {size[1]}, fps: {fps}, "
        f"bitrate_kbps: 1500, codec: vp8}}\n"
        f"viewers: {{roles: [moderator], max: 2}}\n")
    cam = await Child("camera", [*_unit_nice(), *_prefix("BENCH_CAMERA_PREFIX"), "camera", "-c",
                                 str(conf)]).start()
    await cam.wait_line("READY", 30)
    return cam


async def _watch(page: Any) -> None:
    await page.evaluate("() => sigbridgeConsole.video.viewer.stats.latencies.length = 0")
    await page.click("#video-watch")
    await page.wait_for_function("() => sigbridgeConsole.video.viewer.state === 'live' && "
                                 "sigbridgeConsole.video.viewer.stats.codeFrames > 30", timeout=30_000)


async def _unwatch(page: Any) -> None:
    await page.click("#video-stop")
    await page.wait_for_function("() => sigbridgeConsole.video.viewer.state === 'idle'", timeout=10_000)


async def run(rig: Rig, results: Results, *, quick: bool = False) -> None:
    if rig.bridge is None or not shutil.which(CHROMIUM):
        results.add(Row("camera", "setup", float("nan"), "", note="needs the bridge side and Chromium"))
        return
    from playwright.async_api import async_playwright

    info = rig.bridge.info
    window_s = 3 if quick else 15
    rounds, samples = (2, 30) if quick else (6, 300)
    op_token = token_for(info["session_id"], "moderator", "bench-viewer")
    bridge_rss = _rss_mb(rig.bridge.procs["bridge"].pid)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=_browser(rig.workdir), args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"http://127.0.0.1:{info['hub_port']}/#session={info['session_id']}&token={op_token}")
        await page.wait_for_function("() => sigbridgeConsole.session !== null", timeout=20_000)
        try:
            for size in SIZES:
                cam = await _camera(rig, size)
                try:
                    idle_rss = _rss_mb(cam.pid)
                    await _watch(page)
                    await asyncio.sleep(2)                           # past the first keyframes
                    await page.evaluate("() => sigbridgeConsole.video.viewer.stats.latencies.length = 0")
                    cpu0, frames0 = cpu_seconds(cam.pid), await _frames(page)
                    await asyncio.sleep(window_s)
                    cpu = (cpu_seconds(cam.pid) - cpu0) / window_s * 100
                    fps = (await _frames(page) - frames0) / window_s
                    lat = list(await page.evaluate("() => sigbridgeConsole.video.viewer.stats.latencies"))
                    name = f"{size[0]}x{size[1]}@30"
                    results.add(Row("camera", f"camera CPU, one viewer, {name}", cpu, "% of a core",
                                    note=f"{fps:.1f} fps decoded in the page"))
                    results.add(Row("camera", f"camera RSS, one viewer, {name}", _rss_mb(cam.pid), "MB",
                                    note=f"idle {idle_rss:.0f} MB, peak {peak_rss_mb(cam.pid):.0f} MB"))
                    if size == (640, 480):
                        s = Stats.of(lat)
                        p95 = sorted(lat)[max(0, int(0.95 * len(lat)) - 1)] if lat else float("nan")
                        results.add(Row("camera", "glass-to-glass p50, 640x480@30 VP8", s.p50, "ms",
                                        target="<= 50", passed=s.p50 <= 50, note=f"{s.n} frames"))
                        results.add(Row("camera", "glass-to-glass p95, 640x480@30 VP8", p95, "ms",
                                        target="<= 80", passed=p95 <= 80, note=f"max {s.max:.0f} ms"))
                        await _command_latency(rig, results, page, rounds, samples, bridge_rss)
                    else:
                        await _unwatch(page)
                finally:
                    await cam.stop()
        finally:
            await browser.close()


async def _frames(page: Any) -> int:
    return int(await page.evaluate("() => sigbridgeConsole.video.viewer.stats.codeFrames"))


async def _command_latency(rig: Rig, results: Results, page: Any, rounds: int, samples: int,
                           rss_before: float) -> None:
    """Rounds alternate one viewer / no viewer (the stream is live on entry)."""
    assert rig.bridge is not None
    got: dict[str, list[list[float]]] = {"one viewer": [], "no viewer": []}
    bridge_pid = rig.bridge.procs["bridge"].pid
    cpu: dict[str, float] = {"one viewer": 0.0, "no viewer": 0.0}
    for r in range(rounds):
        for watching in ((True, False) if r % 2 == 0 else (False, True)):   # ABBA: drift cancels
            state = await page.evaluate("() => sigbridgeConsole.video.viewer.state")
            if watching and state != "live":
                await _watch(page)
            if not watching and state == "live":
                await _unwatch(page)
                await asyncio.sleep(0.5)
            key = "one viewer" if watching else "no viewer"
            cpu0 = cpu_seconds(bridge_pid)
            lat, _lost = await ping_pong(rig.bridge, COMMAND, samples)
            cpu[key] += cpu_seconds(bridge_pid) - cpu0
            got[key].append(lat)
    with contextlib.suppress(Exception):
        await _unwatch(page)
    on = Stats.of([x for r in got["one viewer"] for x in r])
    off = Stats.of([x for r in got["no viewer"] for x in r])
    paired = list(zip(got["one viewer"], got["no viewer"], strict=True))
    pairs50 = [(statistics.median(a), statistics.median(b)) for a, b in paired]
    pairs99 = [(Stats.of(a).p99, Stats.of(b).p99) for a, b in paired]
    r50, r99 = median_ratio(pairs50), median_ratio(pairs99)
    results.add(Row("camera", "command latency p50, one viewer", on.p50, "ms", baseline=off.p50, ratio=r50,
                    target="<= 1.10x", passed=r50 <= 1.10,
                    note=f"{rounds} alternated rounds of {samples}; " + (
                        "camera and browser at the bench's priority" if _same_priority() else
                        "camera at its unit's Nice, browser (the operator's machine) at nice 19")))
    results.add(Row("camera", "command latency p99, one viewer", on.p99, "ms", baseline=off.p99, ratio=r99,
                    note="baseline: same rig, no viewer (camera idle)"))
    per = {k: v / (rounds * samples) * 1e6 for k, v in cpu.items()}
    results.add(Row("camera", "bridge CPU per command, one viewer", per["one viewer"], "us",
                    baseline=per["no viewer"], ratio=per["one viewer"] / per["no viewer"]))
    results.add(Row("camera", "bridge RSS after the streams", _rss_mb(bridge_pid), "MB",
                    baseline=rss_before, note="baseline: before any camera ran"))
