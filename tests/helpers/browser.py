"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) and a small wire-v1 peer.

- :func:`running_browser` starts the system Chromium; it never downloads one (no ``playwright install``).
  ``scripts/bootstrap.sh test`` installs the ``chromium`` package when it is missing.
- :class:`WirePeer` is the Python side of browser tests: a raw ``websockets`` client speaking wire
  protocol v1 (DESIGN.md), independent of bridge.session so that the console is tested against the
  protocol itself. Every frame it receives is kept; tests wait on them with :meth:`WirePeer.wait_signal`.
  A peer whose token data marks a bridge (``bridge`` / ``bridge:NAME``) plays a live one as far as the
  console's robot state needs: it answers ``bridge.ping`` with ``bridge.pong`` and ``bridge.describe``
  with a ``ready`` ``bridge.status`` (capabilities stay the test's to send).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import websockets
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import scaled
from tests.helpers.hub import HubHandle

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


@contextlib.asynccontextmanager
async def running_browser() -> AsyncIterator[Browser]:
    """One headless Chromium for a test module; new contexts/pages per test are cheap."""
    if not CHROMIUM.exists():
        raise RuntimeError("Chromium is not installed: apt-get install -y chromium (scripts/test does it)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


READY_STATUS = {"version": 1, "state": "ready", "estopped": False, "lease": None, "devices": {}}


class WirePeer:
    """A connection of a session over wire protocol v1, for the Python end of a browser test."""

    def __init__(self, url: str, session_id: str, token: str) -> None:
        self.url = f"{url.rstrip('/')}/v1/session/{session_id}"
        self.token = token
        self.connection: dict[str, Any] = {}
        self.frames: list[dict[str, Any]] = []       # everything received after `connected`
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._acks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WirePeer:
        self._ws = await websockets.connect(self.url)
        await self._ws.send(json.dumps({"op": "connect", "token": self.token}))
        hello = json.loads(await asyncio.wait_for(self._ws.recv(), 10))
        if hello.get("op") != "connected":
            raise RuntimeError(f"hub refused the peer: {hello}")
        self.connection = hello["connection"]
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._ws.send(json.dumps({"op": "disconnect"}))
        await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    @property
    def id(self) -> str:
        return str(self.connection["id"])

    @property
    def is_bridge(self) -> bool:
        data = str(self.connection.get("data", ""))
        return data == "bridge" or data.startswith("bridge:")

    async def _answer(self, frame: dict[str, Any]) -> None:
        """A live bridge's answers (see the module docstring); fire and forget."""
        kind, sender = frame.get("type"), frame.get("from")
        if not self.is_bridge or frame.get("op") != "signal" or not sender:
            return
        if kind == "bridge.ping":
            ping = json.loads(frame.get("data") or "{}")
            answer = ("bridge.pong", json.dumps({"id": ping.get("id"), "hub_ms": 0}))
        elif kind == "bridge.describe":
            answer = ("bridge.status", json.dumps(READY_STATUS))
        else:
            return
        await self._ws.send(json.dumps({"op": "signal", "id": next(self._ids), "type": answer[0],
                                        "data": answer[1], "to": sender, "retry": False}))

    async def _read(self) -> None:
        async for text in self._ws:
            frame = json.loads(text)
            if frame.get("op") in ("ack", "nack") and frame.get("id") in self._acks:
                self._acks.pop(frame["id"]).set_result(frame)
                continue
            if frame.get("op") in ("ack", "nack"):
                continue       # the answers of _answer's own signals
            await self._answer(frame)
            async with self._changed:
                self.frames.append(frame)
                self._changed.notify_all()

    async def signal(self, type_: str, data: str = "", to: str | None = None, retry: bool = True) -> None:
        """Send a signal and wait for the hub's answer; raises RuntimeError on a nack."""
        fid = next(self._ids)
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[fid] = done
        frame: dict[str, Any] = {"op": "signal", "id": fid, "type": type_, "data": data, "retry": retry}
        if to is not None:
            frame["to"] = to
        await self._ws.send(json.dumps(frame))
        answer = await asyncio.wait_for(done, 10)
        if answer["op"] != "ack":
            raise RuntimeError(f"signal refused: {answer}")

    def signals(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("op") == "signal" and type_ in (None, f.get("type"))]

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float) -> Any:
        """Wait until ``predicate(frames)`` is truthy and return its value."""
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.frames)), timeout)

    async def wait_signal(self, type_: str, timeout: float, count: int = 1) -> list[dict[str, Any]]:
        """Wait for at least ``count`` signals of ``type_``; returns all of them so far."""
        await self.wait_for(lambda _: len(self.signals(type_)) >= count, timeout)
        return self.signals(type_)


async def new_page(browser: Browser, errors: list[Any], width: int = 1280, height: int = 900,
                   **kw: Any) -> Page:
    """A page in a context of its own; its uncaught errors go to ``errors``."""
    context = await browser.new_context(viewport={"width": width, "height": height}, **kw)
    page = await context.new_page()
    page.set_default_timeout(scaled(15) * 1000)
    page.on("pageerror", lambda e: errors.append(e))
    return page


async def join(page: Page, hub: HubHandle, sid: str, role: str, data: str) -> str:
    """Open the console on ``hub`` in session ``sid``; the page's connection id once connected."""
    await page.goto(f"{hub.http_url}/#session={sid}&token={hub.token(sid, role=role, data=data)}")
    await expect(page.locator("#link-state")).to_have_text("connected")
    return str(await page.evaluate("() => sigbridgeConsole.session.connection.id"))


@contextlib.asynccontextmanager
async def library_page(browser: Browser, hub: HubHandle) -> AsyncIterator[Page]:
    """A page on the hub with the browser client imported as ``window.sb``; fails on any page error."""
    context = await browser.new_context()
    pg = await context.new_page()
    errors: list[Any] = []
    pg.on("pageerror", lambda e: errors.append(e))
    await pg.goto(f"{hub.http_url}/")
    await pg.evaluate("async () => { window.sb = await import('/sigbridge.js'); }")
    yield pg
    await context.close()
    assert errors == []
