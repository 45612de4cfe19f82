"""The camera end to end: a real `sigbridge camera` process (synthetic source), a real hub, real
headless Chromium viewers on the console page, and a Python viewer that can be frozen.

What each test proves is in its name; the frame counter and capture time that the page reads back
from a canvas are the synthetic source's frame code (bridge/core/camera/framecode.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import statistics
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.bridge import Operator, bridge_process
from tests.helpers.browser import join, new_page, running_browser
from tests.helpers.camera import camera_config, camera_process, freeze, viewer_process
from tests.helpers.hub import HubHandle, running_hub
from tests.helpers.pty import PtyPair

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with running_browser() as b:
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub() as h:
        yield h


def new_session() -> str:
    return f"cam-{uuid.uuid4().hex[:10]}"


async def console(browser: Browser, hub: HubHandle, sid: str, role: str = "moderator",
                  errors: list[Any] | None = None) -> Page:
    page = await new_page(browser, [] if errors is None else errors)
    page.set_default_timeout(scaled(20) * 1000)
    await join(page, hub, sid, role, f"op-{role}")
    return page


async def stats(page: Page) -> dict[str, Any]:
    return dict(await page.evaluate("() => sigbridgeConsole.video.viewer.stats"))


async def wait_frames(page: Page, more_than: int, timeout: float = 20.0) -> dict[str, Any]:
    await page.wait_for_function(f"() => sigbridgeConsole.video.viewer.stats.codeFrames > {more_than}",
                                 timeout=scaled(timeout) * 1000)
    return await stats(page)


async def camera_status(op: Operator, camera_id: str) -> dict[str, Any]:
    await op.client.signal("camera.describe", "{}", to=camera_id, retry_after_reconnect=False)
    return dict(json.loads((await op.next("camera.status")).data))


async def test_stream_decoded_pattern_read_back_second_viewer_and_the_limit(
        browser: Browser, hub: HubHandle, tmp_path: Path) -> None:
    sid = new_session()
    errors: list[Any] = []
    config = camera_config(tmp_path / "camera.yaml", hub, sid, max_viewers=2)
    async with camera_process(config) as cam:
        first = await console(browser, hub, sid, errors=errors)
        await expect(first.locator("#video-camera")).to_contain_text("front · 320x240@15 vp8")
        await first.get_by_role("button", name="Watch").click()
        await expect(first.locator("#video-state")).to_have_text("live")
        a = await wait_frames(first, 5)
        b = await wait_frames(first, a["codeFrames"] + 15)
        # Frames decoded and increasing; the code read back from the canvas is the camera's counter.
        assert b["counter"] > a["counter"] >= 0 and b["framesDecoded"] > a["framesDecoded"]
        assert b["badCodes"] <= b["codeFrames"] // 10, b
        assert 0 <= b["latencyMs"] < 1000, b
        await expect(first.locator("#video-fps")).to_have_text(re.compile(r"([5-9]|1\d|20) fps"))
        await expect(first.locator("#video-latency")).to_have_text(re.compile(r"latency \d+ ms$"))
        # The picture is the moving pattern: colour bars beside the code, shifting frame to frame.
        bars = await first.evaluate("""async () => {
            const v = document.getElementById('video-el'); const c = document.createElement('canvas');
            c.width = v.videoWidth; c.height = v.videoHeight; const g = c.getContext('2d');
            const grab = () => {
              g.drawImage(v, 0, 0); return Array.from(g.getImageData(0, 200, 320, 1).data); };
            const one = grab(); await new Promise((r) => setTimeout(r, 300)); return [one, grab()];
        }""")
        assert bars[0] != bars[1]                                   # it moves
        assert max(bars[0][0::4]) - min(bars[0][0::4]) > 100         # and has bars of many colours

        # A second viewer gets its own stream; a third is over the limit (max 2) and told so.
        second = await console(browser, hub, sid, errors=errors)
        await second.get_by_role("button", name="Watch").click()
        await expect(second.locator("#video-state")).to_have_text("live")
        await wait_frames(second, 10)
        third = await console(browser, hub, sid, errors=errors)
        await third.get_by_role("button", name="Watch").click()
        await expect(third.locator("#video-state")).to_have_text(re.compile(r"refused: 429 .*at most 2"))
        async with SessionClient(hub.url, sid, hub.token(sid, role="moderator")) as c:
            op = Operator(c)
            status = await camera_status(op, cam.connection_id)
            assert (status["viewers"], status["counters"]["live"]) == (2, 2), status
            # A viewer that leaves costs nothing: its stream ends when its connection goes.
            await second.get_by_role("button", name="Leave").click()
            for _ in range(int(scaled(50))):
                status = await camera_status(op, cam.connection_id)
                if status["viewers"] == 1:
                    break
                await asyncio.sleep(0.1)
            assert status["viewers"] == 1 and status["ended"].get("the viewer left") == 1, status
        # The first viewer is still receiving, and stops cleanly.
        c1 = (await stats(first))["codeFrames"]
        await wait_frames(first, c1 + 5)
        await first.get_by_role("button", name="Stop video").click()
        await expect(first.locator("#video-state")).to_have_text("idle: stopped")
        await cam.wait_for(r"closed: stopped by the viewer")
        for page in (first, second, third):
            await page.context.close()
    assert errors == []


async def test_a_viewer_without_the_role_is_refused(browser: Browser, hub: HubHandle, tmp_path: Path) -> None:
    sid = new_session()
    config = camera_config(tmp_path / "camera.yaml", hub, sid, roles=("moderator",))
    async with camera_process(config) as cam:
        page = await console(browser, hub, sid, role="publisher")
        await page.get_by_role("button", name="Watch").click()
        await expect(page.locator("#video-state")).to_have_text(
            re.compile(r"refused: 403 camera 'front' shows its picture to the roles moderator; "
                       r"this connection's role is 'publisher'"))
        assert await page.evaluate("() => document.getElementById('video-el').srcObject") is None
        await page.context.close()
        assert not any("stream" in line and "for viewer" in line for line in cam.lines)


async def test_a_stalled_viewer_is_dropped_after_the_stall_timeout(hub: HubHandle, tmp_path: Path) -> None:
    sid = new_session()
    config = camera_config(tmp_path / "camera.yaml", hub, sid, stall_ms=3000)
    async with camera_process(config) as cam, viewer_process(hub, sid) as viewer:
        fds_idle = len(os.listdir(f"/proc/{cam.proc.pid}/fd"))
        await viewer.wait_for(r"FRAMES 20")
        assert len(os.listdir(f"/proc/{cam.proc.pid}/fd")) > fds_idle      # the call's sockets
        await cam.wait_for(r"stream \S+ to \S+ is live")
        await viewer.wait_for(r"FRAMES 60")          # 2-4 s live: receiver reports keep it
        assert not any("closed" in line for line in cam.lines)
        frozen = time.monotonic()
        freeze(viewer)              # no RTCP, no goodbye: only the stall timeout can notice
        match = await cam.wait_for(r"closed: stalled: nothing heard for 3000 ms", timeout=15)
        waited = time.monotonic() - frozen
        # Never long before the timeout: the last report may be up to 1.5 s old, plus a 0.5 s tick.
        assert match and waited >= 3.0 - 2.0, waited
        # ... and costs nothing afterwards: the source stopped, every socket of the call closed.
        await cam.wait_for(r"source stopped \(no viewer\)")
        for _ in range(int(scaled(50))):
            fds = len(os.listdir(f"/proc/{cam.proc.pid}/fd"))
            if fds <= fds_idle:
                break
            await asyncio.sleep(0.1)
        assert fds <= fds_idle, (fds, fds_idle)
        print(f"camera e2e: a frozen viewer was dropped {waited * 1000:.0f} ms after it froze")


async def test_camera_killed_and_restarted_while_the_bridge_keeps_driving(
        browser: Browser, hub: HubHandle, tmp_path: Path) -> None:
    sid = new_session()
    with PtyPair(tmp_path / "rover") as pair:
        bridge_yaml = tmp_path / "bridge.yaml"
        bridge_yaml.write_text(textwrap.dedent(f"""\
            session: {{url: "{hub.url}", session_id: {sid}, token: "{hub.token(sid, data='rover')}"}}
            devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
            rules:
              - {{signal: robot.move, params: {{n: {{type: int}}}}, send: {{device: base, line: "M {{n}}"}}}}
            """))
        config = camera_config(tmp_path / "camera.yaml", hub, sid)
        async with bridge_process(bridge_yaml) as bridge, \
                SessionClient(hub.url, sid, hub.token(sid, role="moderator")) as driver:
            await bridge.wait_for(r"READY")
            page = await console(browser, hub, sid)
            n = 0

            async def drive(count: int) -> list[float]:
                """Moves at 20 Hz; each one's latency from send to the line on the serial port."""
                nonlocal n
                out = []
                for _ in range(count):
                    n += 1
                    sent = time.perf_counter()
                    await driver.signal("robot.move", json.dumps({"n": n}), retry_after_reconnect=False)
                    assert await pair.read_line(scaled(5)) == f"M {n}"
                    out.append((time.perf_counter() - sent) * 1000)
                    await asyncio.sleep(0.05)
                return out

            before = await drive(40)
            async with camera_process(config) as cam:
                await page.get_by_role("button", name="Watch").click()
                await expect(page.locator("#video-state")).to_have_text("live")
                await wait_frames(page, 10)
                during = await drive(40)
                cam.proc.kill()                         # SIGKILL: no goodbye to anyone
                killed = await drive(40)
            await expect(page.locator("#video-state")).to_have_text(re.compile("ended"),
                                                                    timeout=scaled(20) * 1000)
            async with camera_process(config):
                # The console asked to watch and saw a camera come back: it watches again by itself.
                await expect(page.locator("#video-state")).to_have_text("live", timeout=scaled(20) * 1000)
                c = (await stats(page))["codeFrames"]
                await wait_frames(page, c + 10)
                # One frame loop per stream (the first stream's must not count the second's frames).
                await expect(page.locator("#video-fps")).to_have_text(re.compile(r"^([5-9]|1\d|20) fps$"))
                restarted = await drive(40)
            assert pair.pending() == b""
            await page.context.close()
    figures = {name: (statistics.median(v), max(v)) for name, v in
               (("no camera", before), ("streaming", during), ("camera killed", killed),
                ("restarted", restarted))}
    print("camera e2e: command latency p50/max ms: "
          + ", ".join(f"{k} {p50:.1f}/{mx:.1f}" for k, (p50, mx) in figures.items()))
    # Every move reached the serial port, in order, whatever the camera did (asserted above).


async def test_the_demo_shows_a_synthetic_camera() -> None:
    from tests.helpers.mosquitto import free_port

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "demo", "--listen", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        printed: list[str] = []
        async with asyncio.timeout(scaled(40)):
            while not printed or not printed[-1].startswith("camera:"):
                line = await proc.stdout.readline()
                assert line, f"demo ended early: {''.join(printed)}"
                printed.append(line.decode())
        assert "synthetic 640x480@30" in printed[-1]
        [export] = [ln for ln in printed if ln.strip().startswith("export ")]
        env = dict(item.split("=", 1) for item in shlex.split(export)[1:])
        async with SessionClient(env["SIGBRIDGE_URL"], env["SIGBRIDGE_SESSION"], env["SIGBRIDGE_TOKEN"]) as c:
            op = Operator(c)
            async with asyncio.timeout(scaled(30)):
                while True:         # the camera may still be joining: ask until it answers
                    await c.signal("camera.describe", "{}", retry_after_reconnect=False)
                    with contextlib.suppress(TimeoutError):
                        status = json.loads((await op.next("camera.status", timeout=1)).data)
                        break
        assert (status["camera"], status["width"], status["source"]) == ("demo", 640, "synthetic")
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), scaled(20)) == 0


async def test_a_missing_v4l2_device_ends_the_stream_with_the_reason(hub: HubHandle, tmp_path: Path) -> None:
    sid = new_session()
    config = camera_config(tmp_path / "camera.yaml", hub, sid)
    config.write_text(config.read_text().replace(
        "source: synthetic", f"source: v4l2, device: {tmp_path / 'video9'}"))
    async with camera_process(config) as cam, \
            SessionClient(hub.url, sid, hub.token(sid, role="moderator")) as c:
        op = Operator(c)
        await c.signal("camera.watch", "{}", to=cam.connection_id, retry_after_reconnect=False)
        ended = json.loads((await op.next("camera.ended")).data)
        assert ended["reason"].startswith("cannot open the camera:") and "video9" in ended["reason"], ended
        status = await camera_status(op, cam.connection_id)
        assert status["viewers"] == 0 and status["source"] == "v4l2"
        assert cam.proc.returncode is None                   # the daemon carries on


async def test_h264_and_the_panel_beside_the_drive_controls_above_them_on_a_phone(
        browser: Browser, hub: HubHandle, tmp_path: Path) -> None:
    sid = new_session()
    config = camera_config(tmp_path / "camera.yaml", hub, sid)
    config.write_text(config.read_text().replace("bitrate_kbps: 800", "bitrate_kbps: 800, codec: h264"))
    async with camera_process(config) as cam:
        page = await console(browser, hub, sid)
        await page.get_by_role("button", name="Watch").click()
        await expect(page.locator("#video-state")).to_have_text("live")
        a = await wait_frames(page, 5)
        b = await wait_frames(page, a["codeFrames"] + 10)
        assert b["counter"] > a["counter"]
        codecs = await page.evaluate("""async () => { const out = [];
            (await sigbridgeConsole.video.viewer._pc.getStats()).forEach((s) => {
              if (s.type === 'codec') out.push(s.mimeType); }); return out; }""")
        assert codecs == ["video/H264"], codecs
        video, drive = page.locator("#video"), page.locator("#drive")
        vb, db = await video.bounding_box(), await drive.bounding_box()
        assert vb and db and vb["x"] >= db["x"] + db["width"] and abs(vb["y"] - db["y"]) < 2   # beside
        await page.set_viewport_size({"width": 390, "height": 844})
        vb, db = await video.bounding_box(), await drive.bounding_box()
        assert vb and db and vb["y"] + vb["height"] <= db["y"]                                  # above
        assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
        # SIGTERM: the viewers are told, the peer connections closed, exit 0.
        cam.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(cam.proc.wait(), scaled(10)) == 0
        await expect(page.locator("#video-state")).to_have_text("ended: the camera is shutting down")
        await page.context.close()


class _Stun(asyncio.DatagramProtocol):
    """A STUN server that answers every Binding request with the sender's address (RFC 5389)."""

    def __init__(self) -> None:
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from aioice import stun

        request = stun.parse_message(data)
        self.requests += 1
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = ("203.0.113.7", addr[1])  # a "public" address
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


async def test_stun_servers_are_used_and_only_their_urls_reach_the_viewer(
        hub: HubHandle, tmp_path: Path) -> None:
    from tests.helpers.browser import WirePeer

    transport, stun_server = await asyncio.get_running_loop().create_datagram_endpoint(
        _Stun, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sid = new_session()
    config = camera_config(tmp_path / "camera.yaml", hub, sid, extra=textwrap.dedent(f"""\
        ice:
          servers:
            - urls: stun:127.0.0.1:{port}
            - {{urls: "turn:127.0.0.1:9?transport=tcp", username: robot, credential: s3cret-turn}}
        """))
    try:
        async with camera_process(config) as cam, \
                WirePeer(hub.url, sid, hub.token(sid, role="moderator")) as v:
            await v.signal("camera.watch", "{}", to=cam.connection_id, retry=False)
            (offer,) = await v.wait_signal("camera.offer", scaled(20))
            msg = json.loads(offer["data"])
            assert msg["info"]["ice_servers"] == [f"stun:127.0.0.1:{port}"]
            assert "typ srflx" in msg["sdp"] and "203.0.113.7" in msg["sdp"]   # learnt through STUN
            assert stun_server.requests >= 1
            assert all("s3cret-turn" not in f.get("data", "") for f in v.frames)
    finally:
        transport.close()
