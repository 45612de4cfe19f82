"""A TCP proxy on 127.0.0.1 that tests use to break links for real.

    async with TcpProxy("127.0.0.1", hub_port) as p:
        url = f"ws://127.0.0.1:{p.port}"
        await p.cut()          # abort every current connection (RST): both ends see the link die
        p.blackhole(True)      # keep connections open but forward nothing: a silent dead link
        p.blackhole(True, "down")  # only target -> client is lost (acks vanish, signals get through)
        p.refuse(True)         # new connections are reset at once (the hub looks unreachable)

Blackholed bytes are discarded, not held back: like a link that went dead, nothing sent meanwhile is
delivered later.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN, the way a broken network path looks to the peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._blackhole: set[str] = set()  # directions dropped: "up" (client -> target), "down"
        self._refuse = False

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def connections(self) -> int:
        """Number of links currently proxied."""
        return len(self._pairs)

    async def cut(self) -> None:
        """Abort (RST) every current connection on both sides."""
        for client, upstream in list(self._pairs):
            _abort(client)
            _abort(upstream)
        self._pairs.clear()
        await asyncio.sleep(0)  # let the pumps see it

    def blackhole(self, on: bool, direction: str = "both") -> None:
        """Drop (``on``) or forward again the bytes of ``direction``: "up" (client -> target), "down"
        (target -> client) or "both"."""
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be up, down or both, not {direction!r}")
        which = {"up", "down"} if direction == "both" else {direction}
        if on:
            self._blackhole |= which
        else:
            self._blackhole -= which

    def refuse(self, on: bool) -> None:
        self._refuse = on

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refuse:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for src, dst, direction in ((reader, up_writer, "up"), (up_reader, writer, "down")):
            task = asyncio.create_task(self._pump(src, dst, pair, direction))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter], direction: str) -> None:
        try:
            while data := await src.read(65536):
                if direction in self._blackhole:
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._side_ended(pair)

    def _side_ended(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        """One side ended: end the other too (a FIN stays a FIN unless cut() already aborted)."""
        if pair in self._pairs:
            self._pairs.discard(pair)
            for w in pair:
                with contextlib.suppress(OSError, RuntimeError):
                    w.close()
