"""The hub's side of one WebSocket: how frames leave (see :class:`WsLink`).

Kept apart from :mod:`bridge.session.hub` (the handlers) because this is the hub's hot path: every
frame a hub sends goes through :meth:`WsLink.send`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque

from aiohttp import web

log = logging.getLogger("bridge.session.hub")

#: A receiver with this many frames not yet written is too slow to keep: its link is closed.
MAX_OUTBOX = 10_000
#: A burst is written to the transport only while it holds at most this many unsent bytes.
BURST_WRITE_LIMIT = 64 * 1024


def _text_frame(payload: bytes) -> bytes:
    """One final, unmasked, uncompressed WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class WsLink:
    """A :class:`bridge.core.hubstate.Link` over one aiohttp WebSocket.

    The first frame of a loop turn is written straight to the socket when nothing is waiting before it
    (one ``send`` syscall, no task switch: a lone signal leaves at once); the frames that follow it in
    the same turn (a burst: one read of many signals) are gathered and written together at the end of
    the turn, one syscall for all. The outbox and its writer task only take over under back-pressure
    (the transport holding unsent bytes), so a slow receiver never holds up the sender's read loop;
    frames keep their order in every case.

    Bursts come from senders that write many frames at once: the Python client hands a loop turn's
    signals to the socket in one write, so the hub reads them together and answers them with one write
    per link (in ``python -m bench throughput`` the hub's CPU per signal fell from ~34 to ~16 us with
    both; with only one side batching there was no gain, see bench/README.md)."""

    __slots__ = ("_burst", "_closing", "_outbox", "_transport", "_wake", "task", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
        self.ws = ws
        self._transport = transport if isinstance(transport, asyncio.WriteTransport) else None
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        #: Frames sent after a direct write in this loop turn (None: no direct write this turn).
        self._burst: list[str] | None = None
        self.task = asyncio.get_running_loop().create_task(self._writer())

    def send(self, text: str) -> None:
        if self._closing:
            return
        burst = self._burst
        if burst is not None:
            burst.append(text)
            return
        outbox = self._outbox
        transport = self._transport
        if not outbox and transport is not None and transport.get_write_buffer_size() == 0:
            self._write_now(text)
            self._burst = []
            asyncio.get_running_loop().call_soon(self._end_burst)
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

    def _end_burst(self) -> None:
        """End of the loop turn: the frames gathered since the direct write leave in one write (as
        text frames built here: unmasked, uncompressed, which is what this server's links speak), or
        go to the outbox when the socket has stopped keeping up."""
        burst, self._burst = self._burst, None
        if not burst or self._closing or self._transport is None or self.ws.closed:
            return      # closing (a close frame may be out already): nothing may follow it
        transport = self._transport
        if transport.get_write_buffer_size() > BURST_WRITE_LIMIT or transport.is_closing():
            self._outbox.extend(burst)
            self._wake.set()
            return
        transport.write(b"".join([_text_frame(t.encode()) for t in burst]))

    def close(self) -> None:
        """Close after the frames already queued are written."""
        if self._burst:
            self._end_burst()
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
