"""sigbridge.js and the console page given several hub URLs, in a real headless Chromium against real
in-process hubs: a dead first URL is skipped, a drop resumes on the next URL, and when every hub is
down the connect fails naming each."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.conftest import scaled
from tests.helpers.browser import WirePeer, library_page, running_browser
from tests.helpers.hub import HubHandle, running_hub
from tests.helpers.mosquitto import free_port
from tests.helpers.proxy import TcpProxy

pytestmark = pytest.mark.asyncio(loop_scope="module")

JOIN = """async ([url, sid, token, opts]) => {
  window.events = [];
  window.s = await window.sb.connect(url, sid, token, opts || {});
  for (const n of ['signal', 'sessionReconnecting', 'sessionReconnected', 'sessionDisconnected']) {
    s.on(n, (e) => events.push({n, data: e.data}));
  }
  return s.connection.connectionId;
}"""

CONNECT_ERROR = """async ([url, sid, token]) => {
  try { await sb.connect(url, sid, token); return null; } catch (err) { return [err.code, err.message]; }
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with running_browser() as b:
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub(reconnect_grace_s=30.0) as h:
        yield h


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, hub: HubHandle) -> AsyncIterator[Page]:
    async with library_page(browser, hub) as pg:
        yield pg


def dead_url() -> str:
    return f"ws://127.0.0.1:{free_port()}"


async def wait_event(page: Page, name: str) -> None:
    await page.wait_for_function("(n) => events.some((e) => e.n === n)", arg=name,
                                 timeout=scaled(10) * 1000)


async def test_dead_first_url_joins_the_next(page: Page, hub: HubHandle) -> None:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    async with WirePeer(hub.url, sid, hub.token(sid, data="robot")) as robot:
        dead = dead_url()
        me = await page.evaluate(JOIN, [[dead, hub.url], sid, hub.token(sid), None])
        assert await page.evaluate("() => s.url") == hub.session_url(sid)
        assert await page.evaluate("() => s.urls.length") == 2
        await robot.signal("hello", "there", to=me)
        await wait_event(page, "signal")
        # The same with one string of comma-separated URLs.
        await page.evaluate("() => s.disconnect()")
        await page.evaluate(JOIN, [f"{dead_url()}, {hub.url}", sid, hub.token(sid), None])
        assert await page.evaluate("() => s.url") == hub.session_url(sid)


async def test_every_url_dead_rejects_naming_each(page: Page, hub: HubHandle) -> None:
    sid = "s-dead"
    urls = [dead_url(), dead_url()]
    code, message = await page.evaluate(CONNECT_ERROR, [urls, sid, hub.token(sid)])
    assert code == 500 and all(u in message for u in urls)


async def test_a_drop_resumes_on_the_next_url(page: Page, hub: HubHandle) -> None:
    """Two URLs of one hub: the proxied link drops while the proxy still accepts (blackholed), so a
    resume there would hang; the client goes to the other URL and resumes the same connection."""
    sid = f"s-{uuid.uuid4().hex[:8]}"
    async with TcpProxy("127.0.0.1", hub.port) as proxy, \
            WirePeer(hub.url, sid, hub.token(sid, data="robot")) as robot:
        proxied = f"ws://127.0.0.1:{proxy.port}"
        me = await page.evaluate(JOIN, [[proxied, hub.url], sid, hub.token(sid),
                                        {"retryMinMs": 100, "retryMaxMs": 400}])
        proxy.blackhole(True)
        await proxy.cut()
        await wait_event(page, "sessionReconnecting")
        await robot.signal("robot.note", "while-away", to=me)
        await wait_event(page, "sessionReconnected")
        assert await page.evaluate("() => s.connection.connectionId") == me
        assert await page.evaluate("() => s.url") == hub.session_url(sid)
        await page.wait_for_function("() => events.some((e) => e.n === 'signal' && e.data === 'while-away')",
                                     timeout=scaled(10) * 1000)
        assert proxy.connections == 0


async def test_console_page_takes_a_comma_list_of_hub_urls(browser: Browser, hub: HubHandle) -> None:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    context = await browser.new_context()
    try:
        pg = await context.new_page()
        token = hub.token(sid, role="moderator", data="op")
        await pg.goto(f"{hub.http_url}/#session={sid}&token={token}&url={dead_url()},{hub.url}")
        await expect(pg.locator("#link-state")).to_have_text("connected", timeout=scaled(15) * 1000)
        assert await pg.evaluate("() => sigbridgeConsole.session.url") == hub.session_url(sid)
    finally:
        await context.close()
