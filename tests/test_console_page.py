"""The operator console (GET / on the hub) in a real headless Chromium against a real in-process hub.

The robot end of each session is a raw wire-v1 peer (tests/helpers/browser.py) that plays the bridge:
it answers bridge.describe with bridge.capabilities, sends telemetry and checks what the page sends.
Set SIGBRIDGE_UPDATE_SCREENSHOT=1 to refresh docs/console.png from test_screenshot_and_phone_layout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import signal
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.conftest import scaled
from tests.helpers.bridge import bridge_process
from tests.helpers.browser import WirePeer, running_browser
from tests.helpers.hub import HubHandle, running_hub
from tests.helpers.proxy import TcpProxy
from tests.helpers.pty import PtyPair

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCS = Path(__file__).resolve().parent.parent / "docs"
CAPABILITIES = {
    "version": 1,
    "rules": [
        {"signal": "robot.move", "params": {"x": {"type": "float", "min": -1, "max": 1, "default": None},
                                            "y": {"type": "float", "min": -1, "max": 1, "default": None}},
         "ack": False},
        {"signal": "robot.mode", "params": {"mode": {"type": "string", "enum": ["eco", "fast"]},
                                            "lights": {"type": "bool"},
                                            "level": {"type": "int", "min": 0, "max": 10, "default": 3}},
         "ack": True},
        {"signal": "robot.say", "params": {"text": {"type": "string", "pattern": "[a-z ]{1,20}",
                                                    "default": None, "required": True}}},
        {"signal": "arm.*", "params": {}},
    ],
    "estop": {"signal": "base.halt", "reset": "base.halt_reset"},
    "telemetry": ["robot.telemetry"],
    "control": {"lease": False, "acquire": "control.acquire", "release": "control.release"},
}
STOP = {"x": 0, "y": 0}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with running_browser() as b:
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub() as h:
        yield h


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    pg = await context.new_page()
    pg.set_default_timeout(scaled(15) * 1000)
    errors: list[Any] = []
    pg.on("pageerror", lambda e: errors.append(e))
    yield pg
    await context.close()
    assert errors == []


def new_session() -> str:
    return f"page-{uuid.uuid4().hex[:10]}"


def moves(robot: WirePeer) -> list[dict[str, Any]]:
    return [json.loads(f["data"]) for f in robot.signals("robot.move")]


async def fence(page: Page, robot: WirePeer) -> None:
    """Make the page send bridge.describe and wait for it: everything the page sent before has arrived."""
    before = len(robot.signals("bridge.describe"))
    await page.get_by_role("button", name="ask again").click()
    await robot.wait_signal("bridge.describe", scaled(10), count=before + 1)


async def join_by_fragment(page: Page, hub: HubHandle, sid: str, data: str = "operator") -> str:
    await page.goto(f"{hub.http_url}/#session={sid}&token={hub.token(sid, data=data)}")
    await expect(page.locator("#link-state")).to_have_text("connected")
    return str(await page.evaluate("() => sigbridgeConsole.session.connection.id"))


async def test_join_by_form_shows_members_and_drives_by_keyboard(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with WirePeer(hub.url, sid, hub.token(sid, data="bridge:robot-1")) as robot:
        await page.goto(f"{hub.http_url}/")
        await expect(page.get_by_label("Hub URL")).to_have_value(hub.url)
        await page.get_by_label("Session id").fill(sid)
        await page.get_by_label("Token").fill(hub.token(sid, data="alice"))
        await page.get_by_role("button", name="Join").click()
        await expect(page.locator("#link-state")).to_have_text("connected")
        members = page.locator("#members-list li")
        await expect(members).to_have_count(2)
        await expect(members.filter(has_text="robot-1")).to_have_count(1)
        await expect(members.filter(has_text="alice")).to_have_count(1)
        await expect(page.locator("#rtt")).to_have_text(re.compile(r"RTT \d+ ms"))

        # Hold W: moves at a steady rate (max speed 0.5), then exactly one stop on release.
        await page.locator("#pad").focus()
        await page.keyboard.down("w")
        held = await robot.wait_signal("robot.move", scaled(10), count=6)
        await page.keyboard.up("w")
        await robot.wait_for(lambda _: STOP in moves(robot), scaled(10))
        await fence(page, robot)
        sent = moves(robot)
        assert sent[-1] == STOP and sent.count(STOP) == 1
        assert all(m == {"x": 0.5, "y": 0} for m in sent[:-1])
        gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(held)]
        assert 50 <= sum(gaps) / len(gaps) <= 400, gaps          # ~10 Hz, loose for a busy machine

        # A (turn left) then space: one stop at once, none more when the key comes up.
        await page.keyboard.down("a")
        await robot.wait_for(lambda _: {"x": 0, "y": -0.5} in moves(robot), scaled(10))
        await page.keyboard.press("Space")
        await page.keyboard.up("a")
        await fence(page, robot)
        after = moves(robot)[len(sent):]
        assert after[-1] == STOP and after.count(STOP) == 1 and set(map(json.dumps, after[:-1])) == {
            json.dumps({"x": 0, "y": -0.5})}


async def test_fragment_link_joins_and_controls_come_from_capabilities(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    async with WirePeer(hub.url, sid, hub.token(sid, data="bridge:robot-1")) as robot:
        me = await join_by_fragment(page, hub, sid)
        (describe,) = await robot.wait_signal("bridge.describe", scaled(10))
        assert (describe["data"], describe["from"]) == ("{}", me)
        token = page.url.split("token=")[1]
        assert not [u for u in urls if token in u and "#" not in u], "the token left the fragment"

        # A malformed announcement is reported and changes nothing.
        await robot.signal("bridge.capabilities", "{not json", to=me)
        await robot.signal("bridge.capabilities", '{"version":2,"rules":[]}', to=me)
        errors = page.locator("#log-list li.log-err")
        await expect(errors).to_have_count(2)
        await expect(errors.first).to_contain_text("not JSON")
        await expect(errors.last).to_contain_text("unknown version 2")
        await expect(page.locator("form.control")).to_have_count(0)

        await robot.signal("bridge.capabilities", json.dumps(CAPABILITIES), to=me)
        forms = page.locator("form.control")
        await expect(forms).to_have_count(3)                      # arm.* is a glob: no form
        mode = page.locator('form[data-signal="robot.mode"]')
        await mode.get_by_label("mode").select_option("fast")
        await mode.get_by_label("lights").check()
        await mode.get_by_label("level").fill("7")
        await mode.get_by_role("button", name="Send robot.mode").click()
        (sent,) = await robot.wait_signal("robot.mode", scaled(10))
        assert json.loads(sent["data"]) == {"mode": "fast", "lights": True, "level": 7}
        # Commands now go to the robot that described itself, not to everyone.
        await expect(page.get_by_label("Send to")).to_have_value(robot.id)

        move = page.locator('form[data-signal="robot.move"]')
        await move.get_by_label("x").fill("0.3")
        await move.get_by_role("button", name="Send robot.move").click()
        (m,) = await robot.wait_signal("robot.move", scaled(10))
        assert json.loads(m["data"]) == {"x": 0.3, "y": 0}

        # A required string with a pattern: the browser holds back an empty or non-matching value.
        say = page.locator('form[data-signal="robot.say"]')
        await say.get_by_role("button", name="Send robot.say").click()
        await say.get_by_label("text").fill("NOT lower case")
        await say.get_by_role("button", name="Send robot.say").click()
        await say.get_by_label("text").fill("hello robot")
        await say.get_by_role("button", name="Send robot.say").click()
        (said,) = await robot.wait_signal("robot.say", scaled(10))
        assert json.loads(said["data"]) == {"text": "hello robot"}

        # The e-stop sends the type the robot declared.
        await page.get_by_role("button", name="E-STOP", exact=True).click()
        (halt,) = await robot.wait_signal("base.halt", scaled(10))
        assert halt["data"] == "{}"
        # The reset is offered only while latched, to a role that may reset (tests/test_console_robot.py).
        await expect(page.get_by_role("button", name="reset e-stop")).to_be_hidden()


async def test_telemetry_log_and_joystick(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with WirePeer(hub.url, sid, hub.token(sid, data="bridge:robot-1")) as robot:
        me = await join_by_fragment(page, hub, sid)
        for i in range(5):
            data = {"battery": 90 - i, "speed": i / 10, "mode": "eco"}
            await robot.signal("robot.telemetry", json.dumps(data), to=me, retry=False)
        card = page.locator('.tele[data-signal="robot.telemetry"]')
        await expect(card.locator('tr[data-field="battery"] .value')).to_have_text("86")
        await expect(card.locator('tr[data-field="mode"] .value')).to_have_text("eco")
        await page.wait_for_function(
            """() => { const c = document.querySelector('.tele tr[data-field="speed"] canvas');
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       return d.some((v, i) => i % 4 === 3 && v > 0); }""")
        await robot.signal("bridge.status", '{"state":"degraded","devices":{"arm":"down"}}', to=me)
        for i, status in enumerate(["applied", "applied", "applied", "estopped"]):
            reason = "e-stop latched" if status == "estopped" else None
            await robot.signal("bridge.ack", json.dumps({"id": i, "status": status, "reason": reason}), to=me)
        log = page.locator("#log-list")
        await expect(log.locator('li[data-type="bridge.status"]').last).to_contain_text('"state":"degraded"')
        await expect(page.locator("#robot-detail")).to_have_text("device down: arm")
        # A run of acks collapses into one line with a count; a refusal stands on its own line, with why.
        acks = log.locator('li[data-type="bridge.ack"]')
        await expect(acks).to_have_count(2)
        await expect(acks.first).to_contain_text("robot-1] #2 applied (\u00d73)")
        await expect(acks.last).to_contain_text("#3 estopped: e-stop latched")

        # Drag the joystick knob halfway up: forward at half of the 0.5 max speed; release: one stop.
        box = await page.locator("#pad").bounding_box()
        assert box is not None
        cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 2
        await page.mouse.move(cx + r / 4, cy + r / 4)
        await page.mouse.down()
        await page.mouse.move(cx, cy - r / 2, steps=4)
        await robot.wait_for(lambda _: any(m["x"] == 0.25 and m["y"] == 0 for m in moves(robot)), scaled(10))
        await page.mouse.up()
        await robot.wait_for(lambda _: STOP in moves(robot), scaled(10))
        await fence(page, robot)
        sent = moves(robot)
        # Pressed down-right of the centre first: backwards and turning right, a quarter each of 0.5.
        assert abs(sent[0]["x"] + 0.125) <= 0.01 and abs(sent[0]["y"] - 0.125) <= 0.01, sent[0]
        assert sent.count(STOP) == 1 and sent[-1] == STOP


async def test_every_control_is_labelled_and_the_page_fits_a_phone(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with WirePeer(hub.url, sid, hub.token(sid, data="bridge:rover-7 (lab bench)")) as robot:
        me = await join_by_fragment(page, hub, sid, data="alice (operator)")
        await robot.signal("bridge.capabilities", json.dumps(CAPABILITIES), to=me)
        await expect(page.locator("form.control")).to_have_count(3)
        for i in range(40):
            await robot.signal("robot.telemetry", json.dumps(
                {"battery": 96 - i // 8, "speed": round(0.4 + 0.2 * math.sin(i / 4), 2),
                 "temp_c": round(41 + i / 10 + math.cos(i / 3), 1)}), to=me, retry=False)
            await asyncio.sleep(0.01)      # pacing, not synchronisation: a steady stream plots evenly
        await robot.signal("bridge.status", '{"state":"armed","lease":null}', to=me)
        await expect(page.locator('tr[data-field="battery"] .value')).to_have_text("92")
        await expect(page.locator("#rtt")).to_have_text(re.compile(r"RTT \d+ ms"))
        unlabelled = await page.evaluate(
            """() => [...document.querySelectorAll('input, select, button, [role=application]')]
                 .filter((el) => el.offsetParent !== null)
                 .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                                 && !el.textContent.trim())
                 .map((el) => el.outerHTML)""")
        assert unlabelled == []
        shot = await page.screenshot(full_page=True)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("SIGBRIDGE_UPDATE_SCREENSHOT"):
            (DOCS / "console.png").write_bytes(shot)
        await page.set_viewport_size({"width": 390, "height": 844})
        assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
        await expect(page.get_by_role("button", name="E-STOP", exact=True)).to_be_in_viewport()


async def test_console_rides_out_a_cut_link_and_leaves_cleanly(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with TcpProxy("127.0.0.1", hub.port) as proxy, \
            WirePeer(hub.url, sid, hub.token(sid, data="bridge:robot-1")) as robot:
        await page.goto(f"{hub.http_url}/#session={sid}&token={hub.token(sid)}&url=ws://127.0.0.1:{proxy.port}")
        state = page.locator("#link-state")
        await expect(state).to_have_text("connected")
        me = await page.evaluate("() => sigbridgeConsole.session.connection.id")
        proxy.refuse(True)
        await proxy.cut()
        await expect(state).to_have_text("reconnecting")
        # The link down: the robot is offline and driving is disabled (nothing sent, nothing queued).
        await expect(page.locator("html")).to_have_attribute("data-robot-state", "offline")
        await page.locator("#pad").focus()
        await page.keyboard.down("w")
        await page.wait_for_timeout(500)
        await page.keyboard.up("w")
        assert await page.evaluate("() => sigbridgeConsole.moveFailures") == 0
        proxy.refuse(False)
        await expect(state).to_have_text("connected")
        assert await page.evaluate("() => sigbridgeConsole.session.connection.id") == me
        await fence(page, robot)
        assert moves(robot) == []

        await page.get_by_role("button", name="Leave").click()
        await expect(page.get_by_role("button", name="Join")).to_be_visible()
        gone = await robot.wait_for(lambda fs: [f for f in fs if f.get("op") == "connection_destroyed"],
                                    scaled(10))
        assert (gone[0]["connection"]["id"], gone[0]["reason"]) == (me, "clientDisconnected")


async def test_touch_drives_the_joystick_on_a_phone(browser: Browser, hub: HubHandle) -> None:
    sid = new_session()
    context = await browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True,
                                        is_mobile=True, device_scale_factor=2)
    try:
        page = await context.new_page()
        page.set_default_timeout(scaled(15) * 1000)
        async with WirePeer(hub.url, sid, hub.token(sid, data="bridge:robot-1")) as robot:
            await join_by_fragment(page, hub, sid)
            pad = page.locator("#pad")
            await pad.scroll_into_view_if_needed()
            box = await pad.bounding_box()
            assert box is not None
            cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 2
            # Real touch events through the DevTools protocol, as a finger on a phone makes them.
            cdp = await context.new_cdp_session(page)

            async def touch(kind: str, *points: tuple[float, float]) -> None:
                await cdp.send("Input.dispatchTouchEvent",
                               {"type": kind, "touchPoints": [{"x": x, "y": y} for x, y in points]})

            await touch("touchStart", (cx - r / 4, cy))             # left of centre: turning left
            await touch("touchMove", (cx - r / 2, cy))
            await robot.wait_for(lambda _: {"x": 0, "y": -0.25} in moves(robot), scaled(10))
            await touch("touchEnd")
            await robot.wait_for(lambda _: STOP in moves(robot), scaled(10))
            await fence(page, robot)
            sent = moves(robot)
            assert sent[0]["x"] == 0 and -0.15 <= sent[0]["y"] <= -0.1, sent
            assert sent[-1] == STOP and sent.count(STOP) == 1
    finally:
        await context.close()


async def test_only_the_bridge_is_trusted_and_estop_reaches_the_device(page: Page, tmp_path: Path) -> None:
    """A real bridge (token data bridge:rover) with a pty, and a forger (any publisher) that sends
    bridge.capabilities, status, acks and telemetry: the console takes none of them, and E-STOP
    reaches the device, also when pressed before the bridge's own capabilities arrived."""
    async with running_hub(heartbeat_s=30) as hub:   # the bridge is frozen a while below
        sid = new_session()
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            token = hub.token(sid, data="bridge:rover")
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: {sid}, token: "{token}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules:
                  - signal: robot.move
                    params: {{x: {{type: float, min: -1, max: 1}}, y: {{type: float, min: -1, max: 1}}}}
                    send: {{device: base, line: "M {{x:.2f}} {{y:.2f}}"}}
                    ack: true
                safety: {{estop: {{signal: robot.estop, reset: robot.estop_reset,
                                   send: [{{device: base, line: "S"}}]}}}}
                """))
            async with bridge_process(config) as bridge, \
                    WirePeer(hub.url, sid, hub.token(sid, data="bridge-impostor")) as forger:
                await bridge.wait_for(r"READY")
                await bridge.wait_for(r"device base: up")
                forged_caps = dict(CAPABILITIES, estop={"signal": "forged.halt"})
                assert bridge.proc.pid is not None
                bridge.proc.send_signal(signal.SIGSTOP)   # frozen: the console's describe waits
                try:
                    me = await join_by_fragment(page, hub, sid)
                    await forger.signal("bridge.capabilities", json.dumps(forged_caps), to=me)
                    await expect(page.locator("#log-list li.log-sys").filter(
                        has_text="ignored: not from the bridge")).to_have_count(1)
                    assert await page.evaluate("() => sigbridgeConsole.estop") == "robot.estop"
                    await expect(page.locator("#controls-empty")).to_be_visible()
                    await page.get_by_role("button", name="E-STOP", exact=True).click()
                    await forger.wait_signal("robot.estop", scaled(10))   # sent: to everyone
                finally:
                    bridge.proc.send_signal(signal.SIGCONT)
                assert await pair.read_line(scaled(10)) == "S"       # the device got the e-stop

                # The bridge's own announcement is taken: its controls, and commands go to it.
                await expect(page.locator("form.control")).to_have_count(1)
                assert not [line for line in bridge.stderr if "will not trust" in line]
                bridge_id = await page.evaluate("() => document.getElementById('target').value")
                assert bridge_id and bridge_id != forger.id
                await expect(page.locator(f'#members-list li[data-connection-id="{bridge_id}"]')
                             ).to_have_attribute("data-bridge", "true")

                # Forgeries after it change nothing and never show.
                await forger.signal("bridge.capabilities", json.dumps(forged_caps), to=me)
                await forger.signal("bridge.capabilities", json.dumps(forged_caps))
                await forger.signal("bridge.status", '{"estopped":false,"forged":1}', to=me)
                await forger.signal("bridge.ack", '{"id":"x","status":"applied","forged":1}', to=me)
                await forger.signal("robot.telemetry", '{"battery":1}', to=me, retry=False)
                await page.wait_for_function("() => sigbridgeConsole.ignored >= 6")
                await expect(page.locator("form.control")).to_have_count(1)
                assert await page.evaluate("() => sigbridgeConsole.estop") == "robot.estop"
                await expect(page.get_by_label("Send to")).to_have_value(bridge_id)
                await expect(page.locator("#log-list")).not_to_contain_text("forged")
                await expect(page.locator('.tele[data-signal="robot.telemetry"]')).to_have_count(0)

                # Driving goes to the bridge only (e-stopped: refused, nothing written), and E-STOP
                # still reaches the device.
                await page.locator("#pad").focus()
                await page.keyboard.down("w")
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('#log-list li')].some("
                    "(li) => li.textContent.includes('estopped'))")
                await page.keyboard.up("w")
                await page.get_by_role("button", name="E-STOP", exact=True).click()
                assert await pair.read_line(scaled(10)) == "S"
                assert forger.signals("robot.move") == []
                assert forger.signals("forged.halt") == []


async def test_estop_type_from_the_link_before_capabilities(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with WirePeer(hub.url, sid, hub.token(sid, data="bridge:robot-1")) as robot:
        await page.goto(f"{hub.http_url}/#session={sid}&token={hub.token(sid)}&estop=base.halt")
        await expect(page.locator("#link-state")).to_have_text("connected")
        await expect(page.locator("#estop-type")).to_have_text("base.halt")
        await page.get_by_role("button", name="E-STOP", exact=True).click()
        (halt,) = await robot.wait_signal("base.halt", scaled(10))
        assert halt["data"] == "{}"
