"""The console shows what the robot is doing, in a real headless Chromium against a real hub and a
real `sigbridge run` bridge on a pty: the robot-state banner (and data-robot-state on the page root)
through e-stop, a reset offered only to a role that may reset, a device down, the bridge frozen and
gone and back; no move sent while offline; latency to the robot; telemetry with units, a battery
warning, its age and a stale marker; the bridge's answers in the log; the keyboard moves the knob;
the phone layout keeps the banner, the pad and the key telemetry on screen."""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.conftest import scaled
from tests.helpers.bridge import Bridge, bridge_process
from tests.helpers.browser import WirePeer, join, new_page, running_browser
from tests.helpers.hub import HubHandle, running_hub
from tests.helpers.pty import PtyPair

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONFIG = """\
session: {{url: "{url}", session_id: {sid}, token: "{token}"}}
devices: {{base: {{serial: {{port: "{port}", reopen_min_s: 0.05, reopen_max_s: 0.2}}}}}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -0.3, max: 0.3, on_range: clamp}}, y: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}} {{y:.2f}}"}}
    ack: true
telemetry:
  - device: base
    match: '^T (?P<battery>\\d+) (?P<speed>-?[\\d.]+)$'
    signal: robot.telemetry
    max_rate_hz: 10
    fields:
      battery: {{unit: "%", min: 0, max: 100, warn_below: 20}}
      speed: {{unit: m/s, min: -1, max: 1}}
safety:
  estop: {{signal: robot.estop, reset: robot.estop_reset, send: [{{device: base, line: "S"}}]}}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with running_browser() as b:
        yield b


async def robot_state(page: Page, state: str) -> None:
    await expect(page.locator("html")).to_have_attribute("data-robot-state", state, timeout=scaled(20) * 1000)


class Rig:
    def __init__(self, hub: HubHandle, sid: str, pair: PtyPair, config: Path) -> None:
        self.hub, self.sid, self.pair, self.config = hub, sid, pair, config

    def start(self) -> Any:
        return bridge_process(self.config)


@pytest_asyncio.fixture(loop_scope="module")
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_hub(heartbeat_s=30) as hub:     # the bridge is frozen a while below
        sid = f"robot-{uuid.uuid4().hex[:8]}"
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, sid=sid, port=pair.path,
                                            token=hub.token(sid, role="publisher", data="bridge:rover")))
            yield Rig(hub, sid, pair, config)


async def ready_bridge(rig: Rig, bridge: Bridge) -> None:
    await bridge.wait_for(r"device base: up")
    await bridge.wait_for(r"session: connected as")


async def test_banner_through_estop_reset_device_down_and_the_bridge_gone(browser: Browser, rig: Rig) -> None:
    errors: list[Any] = []
    op = await new_page(browser, errors)
    mod = await new_page(browser, errors)
    async with WirePeer(rig.hub.url, rig.sid, rig.hub.token(rig.sid, data="watcher")) as watcher:
        # Before any bridge: OFFLINE, driving disabled.
        await join(op, rig.hub, rig.sid, "publisher", "alice")
        await robot_state(op, "offline")
        await expect(op.locator("#robot-detail")).to_contain_text("no robot in the session")
        async with rig.start() as bridge:
            await ready_bridge(rig, bridge)
            await robot_state(op, "ready")
            await expect(op.locator("#robot-text")).to_have_text("READY")
            await expect(op.locator("#robot-rtt")).to_have_text(re.compile(r"robot \d+ ms"))
            await join(mod, rig.hub, rig.sid, "moderator", "mo")
            await robot_state(mod, "ready")

            # A clamped command (max speed 0.5, the rule allows 0.3): the log says to which value.
            await op.locator("#pad").focus()
            await op.keyboard.down("w")
            assert await rig.pair.read_line(scaled(10)) == "M 0.30 0.00"
            await op.keyboard.up("w")
            await expect(op.locator('#log-list li[data-type="bridge.ack"]').first).to_contain_text(
                "clamped to x=0.3")

            # E-STOP: unmistakable on every page; the reset only for the moderator.
            await op.get_by_role("button", name="E-STOP", exact=True).click()
            await robot_state(op, "estopped")
            await robot_state(mod, "estopped")
            await expect(op.locator("#robot-text")).to_have_text("E-STOPPED")
            await expect(op.get_by_role("button", name="reset e-stop")).to_be_hidden()
            await expect(mod.get_by_role("button", name="reset e-stop")).to_be_visible()
            await mod.get_by_role("button", name="reset e-stop").click()
            await robot_state(op, "ready")
            await expect(mod.get_by_role("button", name="reset e-stop")).to_be_hidden()

            # A device down: DEGRADED, naming it; back: READY.
            rig.pair.vanish()
            await robot_state(op, "degraded")
            await expect(op.locator("#robot-detail")).to_have_text("device down: base")
            rig.pair.recreate()
            await robot_state(op, "ready")

            # The bridge frozen (its connection stays for the hub's grace): OFFLINE from its silence;
            # driving disabled, nothing sent in its place.
            bridge.proc.send_signal(signal.SIGSTOP)
            try:
                await robot_state(op, "offline")
                await expect(op.locator("#robot-detail")).to_contain_text("no answer from the robot")
                await expect(op.locator("#robot-rtt")).to_have_text("robot \u2013")
                await op.locator("#pad").focus()
                await op.keyboard.down("w")
                await op.wait_for_timeout(800)
                await op.keyboard.up("w")
            finally:
                bridge.proc.send_signal(signal.SIGCONT)
            await robot_state(op, "ready")
            # Nothing from the frozen time reaches the device (the sentinel is its first line since
            # the port came back), and nothing was broadcast in the robot's place.
            await watcher.signal("robot.move", '{"x": 0.1, "y": 0}')
            assert await rig.pair.read_line(scaled(10)) == "M 0.10 0.00"
            assert [m for m in watcher.signals("robot.move") if m["from"] != watcher.id] == []
        # The bridge gone (clean exit): OFFLINE at once, and back with a new connection.
        await robot_state(op, "offline")
        await expect(op.locator("#robot-detail")).to_contain_text("no robot in the session")
        async with rig.start() as again:
            await ready_bridge(rig, again)
            await robot_state(op, "ready")
    assert errors == []


async def test_telemetry_units_warning_age_and_stale(browser: Browser, rig: Rig) -> None:
    errors: list[Any] = []
    page = await new_page(browser, errors)
    async with rig.start() as bridge:
        await ready_bridge(rig, bridge)
        await join(page, rig.hub, rig.sid, "publisher", "alice")
        await robot_state(page, "ready")
        card = page.locator('.tele[data-signal="robot.telemetry"]')
        for _ in range(5):
            rig.pair.write_line("T 87 0.50")
            await page.wait_for_timeout(100)
        await expect(card.locator('tr[data-field="battery"] .value')).to_have_text("87 %")
        await expect(card.locator('tr[data-field="speed"] .value')).to_have_text("0.5 m/s")
        await expect(card.locator('tr[data-field="speed"] canvas')).to_have_attribute("data-scale", "-1..1")
        await expect(card).to_have_attribute("data-stale", "false")
        await expect(card.locator(".age")).to_have_text(re.compile(r"^\d\.\d s ago$"))
        # Silence: stale after a few intervals (at least a second).
        await expect(card).to_have_attribute("data-stale", "true")
        await expect(card.locator(".age")).to_contain_text("STALE")
        # Battery low: a warning in the card and beside the joystick.
        rig.pair.write_line("T 15 0.00")
        await expect(card).to_have_attribute("data-stale", "false")
        await expect(card.locator('tr[data-field="battery"]')).to_have_attribute("data-warn", "low")
        await expect(page.locator('#drive-tele .chip[data-field="battery"]')).to_have_text(
            "battery 15 % \u00b7 battery low")
    assert errors == []


async def test_keyboard_moves_the_knob_and_the_phone_layout(browser: Browser, rig: Rig) -> None:
    errors: list[Any] = []
    phone = await new_page(browser, errors, width=390, height=844, is_mobile=True, has_touch=True,
                           device_scale_factor=2)
    async with rig.start() as bridge:
        await ready_bridge(rig, bridge)
        await join(phone, rig.hub, rig.sid, "publisher", "alice")
        await robot_state(phone, "ready")
        rig.pair.write_line("T 64 0.25")
        chip = phone.locator('#drive-tele .chip[data-field="battery"]')
        await expect(chip).to_have_text("battery 64 %")
        # While driving, the banner (sticky), the E-STOP, the pad and the key telemetry are all on
        # screen together (the camera panel, when there is one, may come first: scrolled to the pad).
        await phone.evaluate("""() => {
            const top = document.getElementById('drive').getBoundingClientRect().top;
            const banner = document.getElementById('robot-banner').getBoundingClientRect().height;
            window.scrollBy(0, top - banner - 8); }""")
        banner = await phone.locator("#robot-banner").bounding_box()
        assert banner is not None and banner["y"] >= 0
        for sel in ("#estop", "#pad", "#drive-tele"):
            box = await phone.locator(sel).bounding_box()
            assert box is not None and box["y"] >= banner["y"] + banner["height"], (sel, box, banner)
            assert box["y"] + box["height"] <= 844, (sel, box)
        # The keyboard moves the knob (up for forward), and it comes back on release.
        await phone.locator("#pad").focus()
        await phone.keyboard.down("w")
        await expect(phone.locator("#knob")).to_have_attribute("style", re.compile(r"translate\(0px, -\d"))
        assert await rig.pair.read_line(scaled(10)) == "M 0.30 0.00"
        await phone.keyboard.up("w")
        await expect(phone.locator("#knob")).not_to_have_attribute("style", re.compile("translate"))
        await expect(phone.locator("#log-list")).to_be_attached()
    assert errors == []


async def test_the_lease_holder_you_another_operator_or_free(browser: Browser, rig: Rig) -> None:
    """...and the lease requests go to the bridge only: a third connection never sees them."""
    rig.config.write_text(rig.config.read_text() + "control: {lease: true}\n")
    errors: list[Any] = []
    alice = await new_page(browser, errors)
    bob = await new_page(browser, errors)
    eve_token = rig.hub.token(rig.sid, role="subscriber", data="eve")
    async with rig.start() as bridge, WirePeer(rig.hub.url, rig.sid, eve_token) as eve:
        await ready_bridge(rig, bridge)
        await join(alice, rig.hub, rig.sid, "publisher", "alice")
        await join(bob, rig.hub, rig.sid, "publisher", "bob")
        for page in (alice, bob):
            await robot_state(page, "ready")
            await expect(page.locator("#robot-lease")).to_have_text("control: free")
        await alice.get_by_role("button", name="Take control").click()
        await expect(alice.locator("#robot-lease")).to_have_text("control: you drive")
        other = re.compile("^control: another operator drives")
        await expect(bob.locator("#robot-lease")).to_have_text(other)
        await alice.get_by_role("button", name="Release control").click()
        await expect(bob.locator("#robot-lease")).to_have_text("control: free")
        seen = {f.get("type") for f in eve.signals()}
        assert not seen & {"control.acquire", "control.release"}, seen
    assert errors == []
