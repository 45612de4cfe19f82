"""A small asyncio TCP load balancer for multi-hub tests: clients connect to one port, each connection
goes to a backend (round-robin or the first alive), bytes are copied both ways.

``drop(i)`` takes backend i out and cuts its open connections (as a dead hub would: the clients see
their socket close); ``restore(i)`` puts it back. A backend that refuses a connection is skipped.

    async with LoadBalancer([("127.0.0.1", p1), ("127.0.0.1", p2)]) as lb:
        ws = await websockets.connect(f"ws://127.0.0.1:{lb.port}/v1/session/s")
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

Backend = tuple[str, int]


class LoadBalancer:
    def __init__(self, backends: list[Backend], *, mode: str = "round-robin",
                 connect_timeout: float = 2.0) -> None:
        if mode not in ("round-robin", "first-alive"):
            raise ValueError(f"unknown mode {mode!r}")
        self.backends = list(backends)
        self.mode = mode
        self.connect_timeout = connect_timeout
        self.down: set[int] = set()
        self.port = 0
        self.chosen: list[int] = []  # backend index of each accepted connection, in order
        self._next = 0
        self._server: asyncio.Server | None = None
        self._open: dict[int, set[asyncio.StreamWriter]] = {i: set() for i in range(len(backends))}

    async def __aenter__(self) -> LoadBalancer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
            for i in self._open:
                self._cut(i)
            await self._server.wait_closed()

    def drop(self, index: int) -> None:
        self.down.add(index)
        self._cut(index)

    def restore(self, index: int) -> None:
        self.down.discard(index)

    def _cut(self, index: int) -> None:
        for w in list(self._open[index]):
            w.transport.abort()
        self._open[index].clear()

    def _order(self) -> list[int]:
        n = len(self.backends)
        if self.mode == "first-alive":
            return list(range(n))
        start, self._next = self._next, (self._next + 1) % n
        return [(start + k) % n for k in range(n)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in self._order():
            if i in self.down:
                continue
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*self.backends[i]),
                                                    self.connect_timeout)
            except (TimeoutError, OSError):
                continue
            self.chosen.append(i)
            self._open[i].update((writer, up_w))
            try:
                await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
            finally:
                self._open[i].difference_update((writer, up_w))
                for w in (writer, up_w):
                    w.transport.abort()
            return
        writer.transport.abort()  # no backend: the client sees the connection reset

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            if dst.can_write_eof():
                dst.write_eof()
