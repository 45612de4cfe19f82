"""A real pseudo-terminal standing in for a serial device in tests.

The code under test opens ``pair.path`` (the slave side, or a symlink to it) like any serial port; the
test plays the device on the master side: ``write_line`` what the device would send, ``await
read_line()`` what the link wrote. ``vanish()`` closes the pty and removes the symlink (a USB adapter
unplugged); ``recreate()`` makes a new pty and points the same symlink at it (plugged back in), so a link
configured with ``pair.path`` must find it again by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import tty
from pathlib import Path


class PtyPair:
    """A pty pair in raw mode; ``link`` (optional) is a stable symlink path to the slave."""

    def __init__(self, link: str | Path | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self._buf = bytearray()
        self._event: asyncio.Event | None = None
        self._reading = False
        self.master = -1
        self.slave = -1
        self.slave_name = ""
        self._open()

    @property
    def path(self) -> str:
        """What to give the code under test as its serial port."""
        return str(self.link) if self.link is not None else self.slave_name

    def _open(self) -> None:
        self.master, self.slave = pty.openpty()
        # Raw on both ends: no echo, no CR/LF translation, bytes exactly as written.
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.slave_name = os.ttyname(self.slave)
        self._buf.clear()
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_name)
            os.replace(tmp, self.link)   # atomic re-point

    # ------------------------------------------------------------ device -> link

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Write all of ``data`` to the master (a non-blocking pty write can be partial)."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                n = 0
            view = view[n:]
            if view and not select.select([], [self.master], [], timeout)[1]:
                raise TimeoutError("pty master not writable: is anyone reading the slave?")

    def write_line(self, line: str, newline: str = "\n") -> None:
        self.write((line + newline).encode())

    # ------------------------------------------------------------ link -> device

    def _start_reading(self) -> None:
        if self._reading:
            return
        self._event = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.master, self._on_readable)
        self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.master)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:       # EIO: nobody has the slave open any more
            self._stop_reading()
            data = b""
        self._buf += data
        assert self._event is not None
        self._event.set()

    async def read_until(self, terminator: bytes = b"\n", timeout: float = 5.0) -> bytes:
        """The next bytes up to and including ``terminator``, exactly as written by the link."""
        self._start_reading()
        assert self._event is not None
        async with asyncio.timeout(timeout):
            while (i := self._buf.find(terminator)) < 0:
                self._event.clear()
                await self._event.wait()
        out = bytes(self._buf[: i + len(terminator)])
        del self._buf[: i + len(terminator)]
        return out

    async def read_line(self, timeout: float = 5.0, newline: bytes = b"\n") -> str:
        return (await self.read_until(newline, timeout))[: -len(newline)].decode()

    def pending(self) -> bytes:
        """Bytes received but not read yet."""
        return bytes(self._buf)

    # ------------------------------------------------------------ lifecycle

    def vanish(self) -> None:
        """Close the pty (the link sees EIO/hang-up) and remove the symlink: the port is gone."""
        self._stop_reading()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master = self.slave = -1
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def recreate(self) -> None:
        """A new pty behind the same ``path`` (only meaningful with ``link``)."""
        if self.master >= 0:
            self.vanish()
        self._open()

    def close(self) -> None:
        self.vanish()

    def __enter__(self) -> PtyPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
