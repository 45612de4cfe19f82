"""The hub's side of one WebSocket: how frames leave (see :class:`WsLink`).

Kept apart from :mod:`bridge.session.hub` (the handlers) because this is the hub's hot path: every
frame a hub sends goes through :meth:`WsLink.send`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from aiohttp import web

log = logging.getLogger("bridge.session.hub")

#: A receiver with this many frames not yet written is too slow to keep: its link is closed.
MAX_OUTBOX = 10_000
class WsLink:
    """A :class:`bridge.core.hubstate.Link` over one aiohttp WebSocket.

    A frame is written straight to the socket when nothing is waiting before it (no task switch: a
    signal leaves at once). The outbox and its writer task only take over under back-pressure (the
    transport holding unsent bytes), so a slow receiver never holds up the sender's read loop; frames
    keep their order in every case. (Gathering a loop turn's frames into one hand-built write was tried:
    it cut syscalls in-process but showed no gain above noise in ``python -m bench``, so aiohttp frames
    every message.)"""

    __slots__ = ("_closing", "_outbox", "_transport", "_wake", "task", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
        self.ws = ws
        self._transport = transport if isinstance(transport, asyncio.WriteTransport) else None
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.task = asyncio.get_running_loop().create_task(self._writer())

    def send(self, text: str) -> None:
        if self._closing:
            return
        outbox = self._outbox
        transport = self._transport
        if not outbox and transport is not None and transport.get_write_buffer_size() == 0:
            self._write_now(text)
            return
        if len(outbox) >= MAX_OUTBOX:
            log.warning("closing a link whose receiver is too slow (%d frames queued)", MAX_OUTBOX)
            outbox.clear()
            self.close()
            return
        outbox.append(text)
        self._wake.set()

    def _write_now(self, text: str) -> None:
        """``ws.send_str`` run to completion synchronously. Uncompressed (``compress=False``), aiohttp
        writes the frame to the transport before its only await, the drain that happens while the
        transport is paused; with an empty write buffer it is not, so the coroutine ends in one step.
        Should it ever suspend, the frame is already written: the coroutine is closed there and the
        frames after it go through the outbox (the buffer is no longer empty), whose writer drains."""
        coro = self.ws.send_str(text)
        try:
            coro.send(None)
        except StopIteration:
            return
        except (ConnectionError, RuntimeError):
            self.close()    # the link died under us; the read loop sees it and starts the grace window
            return
        coro.close()

    def close(self) -> None:
        """Close after the frames already queued are written."""
        self._closing = True
        self._wake.set()

    async def _writer(self) -> None:
        outbox, ws = self._outbox, self.ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while outbox:
                    await ws.send_str(outbox.popleft())
                if self._closing:
                    break
        except (ConnectionError, RuntimeError):
            pass  # the link died under us; the read loop sees it and starts the grace window
        finally:
            self._closing = True
            with contextlib.suppress(Exception):
                await ws.close()
