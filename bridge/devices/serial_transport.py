"""The serial port's asyncio transport: pyserial-asyncio-fast's, with two back-pressure bugs fixed and a
record of the lines it holds (size, deadline, partly written or not), so that a purge or an expired
deadline drops whole lines only and never half a command.

``open_transport`` opens a port with it (socket:// URLs keep the library's own transport).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import select
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import serial
import serial_asyncio_fast

__all__ = ["SerialTransport", "open_transport"]


class SerialTransport(serial_asyncio_fast.SerialTransport):
    """pyserial-asyncio-fast's transport with its two back-pressure bugs fixed as in the open upstream PR
    https://github.com/home-assistant-libs/pyserial-asyncio-fast/pull/36 ("fix defered writes"); still
    needed with 0.16, the latest release. Drop this class (and ``open_transport``) once a release has it.

    1. After a partial write drained, the writer callback stayed registered: ``_write_ready`` then ran on
       every loop turn with an empty buffer and raised ``AssertionError: Write buffer should not be
       empty`` (thousands a second, the loop spinning at full CPU) until the next partial write.
    2. ``write`` on an empty buffer writes at once, and pyserial's non-blocking ``Serial.write`` retries
       EAGAIN in a busy loop: on a port whose kernel buffer is exactly full it never returns, so the whole
       event loop hangs until the device reads again (forever, if it stopped).

    Any back-pressure (a device that reads slower than we write) triggers both.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol,
                 serial_instance: Any) -> None:
        super().__init__(loop, protocol, serial_instance)
        self.lines: collections.deque[list[Any]] = collections.deque()
        self._soonest = math.inf                     # the earliest deadline in ``lines``
        self._writable: Any = None
        # Ports without a file descriptor cannot be polled; the library cannot drive them either.
        with contextlib.suppress(AttributeError, OSError, ValueError, serial.SerialException):
            poll = select.poll()
            poll.register(serial_instance.fileno(), select.POLLOUT)
            self._writable = poll

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._write_buffer and not self._closing and self._writable is not None \
                and not self._writable.poll(0):
            # Bug 2: the kernel buffer is full. Queue the data and let the writer callback send it when
            # the port can take some, exactly as the library does with the rest of a partial write.
            # (POLLHUP/POLLERR also make poll() non-empty: the direct write then reports the error.)
            self._write_buffer.append(data)
            self._maybe_pause_protocol()
            self._ensure_writer()
            return
        super().write(data)

    # Not part of the upstream fix: what ``SerialLink.purge`` and the write deadlines need. The link
    # hands the transport whole lines only and says which (``track``: the size and deadline of each), so
    # ``lines`` describes the buffer exactly, in order: [bytes not yet written, deadline, started] per
    # line, the first one possibly started (partly written already). Any newline works, binary too.
    #: Called with the lines ``_write_ready`` dropped because their deadline had passed.
    on_expired: Callable[[list[bytes]], None] | None = None

    def track(self, lines: list[tuple[int, float | None]]) -> None:
        """Describe the lines about to be passed to ``write``: (size in bytes, deadline), in order."""
        self.lines.extend([size, deadline, False] for size, deadline in lines)
        self._soonest = min(self._soonest, min((d for _, d in lines if d is not None), default=math.inf))

    @property
    def mid_line(self) -> bool:
        """True when the kernel has taken part of the first waiting line (its rest is never dropped)."""
        return bool(self.lines) and bool(self.lines[0][2])

    def _write_data(self, data: bytes | bytearray | memoryview) -> None:
        buf = self._write_buffer
        before = len(buf)
        super()._write_data(data)
        n = len(data) - len(buf[-1]) if len(buf) > before else len(data)   # what the kernel took
        lines = self.lines
        while n > 0 and lines:
            front = lines[0]
            if n < front[0]:
                front[0] -= n
                front[2] = True                     # partly on the wire: never dropped now
                break
            n -= front[0]
            lines.popleft()

    def expire(self, now: float) -> None:
        """Drop the lines whose deadline is past (see ``drop``) and report them to ``on_expired``."""
        if self._soonest <= now and self._write_buffer:
            dropped = self.drop(now)
            if dropped and self.on_expired is not None:
                self.on_expired(dropped)

    def _write_ready(self) -> None:
        self.expire(time.monotonic())   # the device reads again: not what has turned too late
        if not self._write_buffer:
            self._remove_writer()   # bug 1: drained by the previous call; stop watching the port
            return
        super()._write_ready()

    def purge(self) -> int:
        """Drop the whole lines waiting in the buffer (never the rest of a line already partly on the
        wire: the device must not see half a command glued to the next one). Returns the bytes dropped."""
        return sum(map(len, self.drop(None)))

    def drop(self, now: float | None) -> list[bytes]:
        """Drop whole lines waiting in the buffer: all of them (``now`` None: ``purge``), or those whose
        deadline is at or before ``now``; never the rest of a line already partly on the wire. Returns
        the dropped lines, newline included."""
        buf = self._write_buffer
        if not buf:
            return []
        data = b"".join(buf)
        # Bytes no line describes (none, unless a write bypassed track) stay first, as they are.
        pos = max(0, len(data) - sum(line[0] for line in self.lines))
        kept, dropped = [data[:pos]], []
        kept_lines: collections.deque[list[Any]] = collections.deque()
        for line in self.lines:
            chunk = data[pos:pos + line[0]]
            pos += line[0]
            deadline = line[1]
            if line[2] or (now is not None and (deadline is None or deadline > now)):
                kept.append(chunk)
                kept_lines.append(line)
            else:
                dropped.append(chunk)
        buf.clear()
        rest = b"".join(kept)
        if rest:
            buf.append(rest)
        self.lines = kept_lines
        self._soonest = min((line[1] for line in kept_lines if line[1] is not None), default=math.inf)
        self._maybe_resume_protocol()
        return dropped


async def open_transport(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol],
                          url: str, **kwargs: Any) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """``serial_asyncio_fast.create_serial_connection`` with ``SerialTransport`` for real ports.

    socket:// URLs keep the library's path (an asyncio socket transport, not affected by the bugs)."""
    if urllib.parse.urlparse(url).scheme == "socket":
        transport, protocol = await serial_asyncio_fast.create_serial_connection(loop, factory, url, **kwargs)
        return transport, protocol
    # What the library does: open in a thread (opening can block), then wrap.
    port = await loop.run_in_executor(None, functools.partial(serial.serial_for_url, url, **kwargs))
    protocol = factory()
    return SerialTransport(loop, protocol, port), protocol
