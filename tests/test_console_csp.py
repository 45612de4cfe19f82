"""The console's Content-Security-Policy in a real headless Chromium against a real hub process: the
console joins and drives with no violation, while an inline script, an inline style attribute and a
framing page are all blocked."""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import expect

from tests.conftest import scaled
from tests.helpers.browser import WirePeer, running_browser
from tests.helpers.hub import hub_process

# Recorded by the page itself from the first script that runs (an init script is not subject to the CSP).
_WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


async def test_console_runs_under_the_csp_and_the_csp_blocks_injection() -> None:
    with hub_process() as h:
        async with running_browser() as browser:
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(scaled(15) * 1000)
            await page.add_init_script(_WATCH)
            errors: list[Any] = []
            page.on("pageerror", lambda e: errors.append(e))
            async with WirePeer(h.url, "csp", h.token("csp", data="robot")) as robot:
                response = await page.goto(f"{h.http_url}/#session=csp&token={h.token('csp', data='op')}")
                assert response is not None and "frame-ancestors 'none'" in response.headers[
                    "content-security-policy"]
                await expect(page.locator("#link-state")).to_have_text("connected")
                await expect(page.locator("#members-list li")).to_have_count(2)
                await page.get_by_role("button", name="E-STOP").click()
                await robot.wait_signal("robot.estop", scaled(10))
                assert await page.evaluate("() => window.__violations") == []

                # What an injection would try: all three are refused by the policy.
                await page.evaluate("""() => {
                  const s = document.createElement('script'); s.textContent = 'window.__pwned = 1';
                  document.body.appendChild(s);
                  const d = document.createElement('div'); d.setAttribute('style', 'color: red');
                  d.id = 'styled'; document.body.appendChild(d);
                }""")
                assert await page.evaluate("() => window.__pwned") is None
                assert await page.evaluate(
                    "() => getComputedStyle(document.getElementById('styled')).color") != "rgb(255, 0, 0)"
                violated = json.dumps(await page.evaluate("() => window.__violations"))
                assert "script-src" in violated and "style-src" in violated, violated

                # Framed by another page: Chromium refuses to render the console inside it.
                framer = await context.new_page()
                await framer.set_content(f'<iframe id="f" src="{h.http_url}/"></iframe>')
                frame = framer.frame_locator("#f")
                await expect(frame.locator("#join-form")).to_have_count(0, timeout=scaled(5) * 1000)
            await context.close()
            assert errors == []
