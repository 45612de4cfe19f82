"""The hub's side of one WebSocket: how frames leave (see :class:`WsLink`).

Kept apart from :mod:`bridge.hub.server` (the handlers) because this is the hub's hot path: every
frame a hub sends goes through :meth:`WsLink.send`.

Memory. Frames a link cannot write at once wait in its outbox; what waits there (and in a burst not yet
written) is counted in bytes (``sys.getsizeof``, i.e. what the strings really hold) against the link's
own bound and the hub-wide :class:`~bridge.core.hub.limits.Budget` shared by every link of a
:class:`LinkPool`. A link past its bound, or the largest outbox when the budget is spent, is *cut*: its
queue is dropped, a close frame with :data:`CLOSE_TOO_SLOW` is written behind what the socket already
holds, and the socket is aborted if it has not drained :data:`CLOSE_LINGER_S` later (a peer that never
reads never holds a file descriptor for long). The member keeps its retry signals in its resume buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
from collections import deque
from collections.abc import Callable

from aiohttp import web

from bridge.core.hub.limits import Budget

log = logging.getLogger("bridge.hub")

_sizeof = sys.getsizeof  # what a queued frame holds in memory (looked up once: the hot path)

#: A burst is written to the transport only while it holds at most this many unsent bytes.
BURST_WRITE_LIMIT = 64 * 1024
#: Close codes (RFC 6455 private range) of links the hub cuts; see docs/protocol.md.
CLOSE_TOO_SLOW = 4008  # its outbox went past outbox_bytes (or was the largest when the budget ran out)
CLOSE_FLOOD = 4029  # it kept sending frames at more than twice its rate limit
#: A closing link's socket is aborted this long after the close began, drained or not.
CLOSE_LINGER_S = 2.0


def _close_frame(code: int, reason: bytes) -> bytes:
    return bytes((0x88, 2 + len(reason))) + struct.pack("!H", code) + reason


def _text_frame(payload: bytes) -> bytes:
    """One final, unmasked, uncompressed WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class WsLink:
    """A :class:`bridge.core.hub.member.Link` over one aiohttp WebSocket.

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

    __slots__ = ("_abort", "_burst", "_burst_bytes", "_closing", "_cut", "_outbox", "_pool", "_transport",
                 "_wake", "pending", "task", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None,
                 pool: LinkPool | None = None) -> None:
        self.ws = ws
        self._transport = transport if isinstance(transport, asyncio.WriteTransport) else None
        self._pool = pool if pool is not None else LinkPool(0, Budget(0))
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._cut = False
        self._abort: asyncio.TimerHandle | None = None
        #: Bytes waiting in the outbox and the burst (what the bounds count).
        self.pending = 0
        #: Frames sent after a direct write in this loop turn (None: no direct write this turn).
        self._burst: list[str] | None = None
        self._burst_bytes = 0
        self._pool.links.add(self)
        self.task = asyncio.get_running_loop().create_task(self._writer())

    def send(self, text: str) -> None:
        if self._closing:
            return
        burst = self._burst
        if burst is not None:
            cost = _sizeof(text)
            pool = self._pool
            budget = pool.budget
            # Inlined _reserve for the common case (within both bounds); the rest goes the long way.
            if ((pool.max_bytes and self.pending + cost > pool.max_bytes)
                    or (budget.limit and budget.used + cost > budget.limit)):
                if not self._reserve(cost):
                    return
            else:
                budget.used += cost
                self.pending += cost
            burst.append(text)
            self._burst_bytes += cost
            return
        outbox = self._outbox
        transport = self._transport
        if not outbox and transport is not None and transport.get_write_buffer_size() == 0:
            self._write_now(text)
            self._burst = []
            asyncio.get_running_loop().call_soon(self._end_burst)
            return
        if self._reserve(_sizeof(text)):
            outbox.append(text)
            self._wake.set()

    def _reserve(self, cost: int) -> bool:
        """Count ``cost`` more bytes waiting; False when this link was cut for it instead."""
        pool = self._pool
        if pool.max_bytes and self.pending + cost > pool.max_bytes:
            self.cut(CLOSE_TOO_SLOW, "receiver too slow")
            return False
        if not pool.budget.take(cost) and not pool.shed(cost, self):
            return False
        self.pending += cost
        return True

    def _release(self, cost: int) -> None:
        self.pending -= cost
        self._pool.budget.give(cost)

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
        cost, self._burst_bytes = self._burst_bytes, 0
        if not burst:
            return
        if self._closing or self._transport is None or self.ws.closed:
            self._release(cost)
            return      # closing (a close frame may be out already): nothing may follow it
        transport = self._transport
        if transport.get_write_buffer_size() > BURST_WRITE_LIMIT or transport.is_closing():
            self._outbox.extend(burst)
            self._wake.set()
            return
        self._release(cost)
        transport.write(b"".join([_text_frame(t.encode()) for t in burst]))

    def close(self) -> None:
        """Close after the frames already queued are written (the socket is aborted if that and the
        close handshake take longer than :data:`CLOSE_LINGER_S`)."""
        if self._burst:
            self._end_burst()
        if not self._closing:
            self._closing = True
            self._abort_later()
        self._wake.set()

    def cut(self, code: int, reason: str) -> None:
        """Close now, for cause: queued frames are dropped, a close frame with ``code`` and a FIN go
        behind what the socket already holds, reading stops, and the socket is aborted
        :data:`CLOSE_LINGER_S` later (not closed at once: a close with unread input sends a reset,
        which would destroy the close frame before a peer that is still sending could read it). The
        read loop then ends as for a dropped link."""
        if self._closing:
            return
        if self._burst:
            self._end_burst()  # what this loop turn answered still goes, unless the socket is backed up
        self._closing = self._cut = True
        if code == CLOSE_TOO_SLOW:
            self._pool.slow_receiver()
        outbox, self._outbox = self._outbox, deque()
        self._release(sum(map(_sizeof, outbox)) + self._burst_bytes)
        self._burst, self._burst_bytes = None, 0
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_close_frame(code, reason.encode()))
            if transport.can_write_eof():
                transport.write_eof()
            if isinstance(transport, asyncio.ReadTransport):
                transport.pause_reading()
        self._abort_later()
        self._wake.set()

    def _abort_later(self) -> None:
        transport = self._transport
        if transport is not None and self._abort is None:
            self._abort = asyncio.get_running_loop().call_later(CLOSE_LINGER_S, transport.abort)

    async def _writer(self) -> None:
        ws = self.ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    text = self._outbox.popleft()
                    self._release(_sizeof(text))
                    await ws.send_str(text)
                if self._closing:
                    break
        except (ConnectionError, RuntimeError):
            pass  # the link died under us; the read loop sees it and starts the grace window
        finally:
            self._closing = True
            self._release(sum(map(_sizeof, self._outbox)))
            self._outbox.clear()
            if self._cut:
                # Nothing more may be written; the abort timer ends the socket (see cut()).
                await asyncio.sleep(CLOSE_LINGER_S)
            with contextlib.suppress(Exception):
                await ws.close()
            self._pool.links.discard(self)


class LinkPool:
    """The links of one hub: ``max_bytes`` (0 = none) bounds what one link may hold queued; ``budget``
    bounds them all together (shared with the resume buffers). ``on_slow`` is called for each link
    cut as too slow (the hub counts and logs it)."""

    __slots__ = ("budget", "links", "max_bytes", "on_slow")

    def __init__(self, max_bytes: int, budget: Budget, on_slow: Callable[[], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.budget = budget
        self.links: set[WsLink] = set()
        self.on_slow = on_slow

    def slow_receiver(self) -> None:
        if self.on_slow is not None:
            self.on_slow()

    def shed(self, cost: int, asking: WsLink) -> bool:
        """The budget cannot take ``cost`` more bytes for ``asking``: cut the links holding the most
        until it can. True when it then took them; False when ``asking`` itself was cut."""
        while True:
            largest = max(self.links, key=lambda link: link.pending, default=None)
            if largest is None or largest.pending == 0 or largest is asking:
                asking.cut(CLOSE_TOO_SLOW, "receiver too slow (hub buffer budget spent)")
                return False
            largest.cut(CLOSE_TOO_SLOW, "receiver too slow (hub buffer budget spent)")
            if self.budget.take(cost):
                return True
