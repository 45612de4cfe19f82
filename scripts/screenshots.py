"""Make the console screenshots of docs/ from a real run: `sigbridge demo` (hub, simulated rover on a
pty, bridge with config/demo.yaml) opened in the system Chromium at desktop and phone size, driven for
a moment with the keyboard so that the telemetry moves. Nothing is staged: what the pictures show is
what the demo does.

    scripts/screenshots            # writes docs/console.png and docs/console-phone.png
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def console_link(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while line := (await proc.stdout.readline()).decode():
            if line.strip().startswith("console:"):
                return line.split("console:", 1)[1].strip()
    raise RuntimeError("the demo printed no console link")


async def shoot(browser: object, link: str, out: Path, **context: object) -> None:
    ctx = await browser.new_context(**context)  # type: ignore[attr-defined]
    page = await ctx.new_page()
    await page.goto(link)
    await page.wait_for_selector('html[data-robot-state="ready"]', timeout=30000)
    await page.wait_for_selector('.tele[data-signal="robot.telemetry"]', timeout=30000)
    # The driving view: the drive card just under the (sticky on a phone) robot banner.
    await page.evaluate("""() => {
        const top = document.getElementById('drive').getBoundingClientRect().top;
        const banner = document.getElementById('robot-banner').getBoundingClientRect().height;
        if (top > banner + 8) window.scrollBy(0, top - banner - 8); }""")
    await page.locator("#pad").focus()
    await page.keyboard.down("w")                 # drive forward for a moment: the speed plot rises
    await page.wait_for_timeout(1500)
    await page.keyboard.down("d")
    await page.wait_for_timeout(700)
    await page.screenshot(path=str(out), full_page=False)  # while driving: the knob shows the keys
    await page.keyboard.up("d")
    await page.keyboard.up("w")
    await ctx.close()
    print(f"wrote {out.relative_to(ROOT)}")


async def main() -> int:
    port = free_port()
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "demo", "--listen", f"127.0.0.1:{port}", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        link = await console_link(demo)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            await shoot(browser, link, DOCS / "console.png", viewport={"width": 1280, "height": 860})
            await shoot(browser, link, DOCS / "console-phone.png", viewport={"width": 390, "height": 844},
                        device_scale_factor=2, is_mobile=True, has_touch=True)
            await browser.close()
    finally:
        demo.terminate()
        await demo.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
