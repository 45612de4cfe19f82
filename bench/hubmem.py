"""Hub memory per idle connection: the hub's resident set (VmRSS) with 0, 1,000 and 10,000 joined,
idle connections, beside the bare relay with the same number of idle clients.

Clients are deliberately tiny (a hand-written RFC 6455 client on an asyncio Protocol, a few KB each, no
task per connection), so that 10,000 fit in the bench process; each joins a hub session of
:data:`PER_SESSION` (a real ``connect`` with its own token; the relay gets the same rooms by path) and
answers the hub's pings, then stays idle. Per connection = (VmRSS at N - VmRSS at 0) / N, with 0
measured after one client has come and gone (lazy imports and first-use caches already paid).

Open files: each connection is one descriptor in the bench and one in the hub. The bench raises its
soft RLIMIT_NOFILE to the hard limit (the children inherit it); when the hard limit cannot hold N plus
a margin, N is lowered to what fits and the row says so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import resource
import struct
import time
from pathlib import Path

from bench.common import PYTHON, Child, Results, Row, raise_fd_limit, scaled
from bench.rig import API_KEY, start_hub, token_for
from tests.helpers.mosquitto import free_port

PER_SESSION = 10
CONNECT_CONCURRENCY = 100
#: File descriptors kept free beside the connections (interpreter, pipes, listeners).
FD_MARGIN = 200
#: The hub's ping interval here: its default (2 s, pong due within 1 s) would measure how fast one
#: process answers 5,000 pings a second under this machine's load, not memory. The pings still run.
HEARTBEAT_S = 20.0


class _IdleClient(asyncio.Protocol):
    """A minimal WebSocket client: upgrade, optionally one ``connect`` frame, then answer pings."""

    def __init__(self, host: str, path: str, connect_frame: str | None) -> None:
        self.host, self.path, self.connect_frame = host, path, connect_frame
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._upgraded:
            head, sep, rest = self._buf.partition(b"\r\n\r\n")
            if not sep:
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self._fail(f"no upgrade: {head[:80]!r}")
                return
            self._upgraded, self._buf = True, rest
            if self.connect_frame is None:
                self._done()
            else:
                self._send(1, self.connect_frame.encode())
        self._frames()

    def _frames(self) -> None:
        while len(self._buf) >= 2:
            op, n, at = self._buf[0] & 0x0F, self._buf[1] & 0x7F, 2
            if n == 126:
                if len(self._buf) < 4:
                    return
                n, at = struct.unpack("!H", self._buf[2:4])[0], 4
            elif n == 127:
                if len(self._buf) < 10:
                    return
                n, at = struct.unpack("!Q", self._buf[2:10])[0], 10
            if len(self._buf) < at + n:
                return
            payload, self._buf = self._buf[at:at + n], self._buf[at + n:]
            if op == 9:  # ping -> pong with the same payload
                self._send(10, payload)
            elif op == 8:
                self._fail("closed by the server")
            elif op == 1 and not self.joined.done():
                if b'"op":"connected"' in payload:
                    self._done()
                elif b'"op":"error"' in payload:
                    self._fail(payload[:200].decode(errors="replace"))

    def _send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        mask = os.urandom(4)
        n = len(payload)  # < 64 KiB: a connect frame or a ping's payload
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) +
                                         struct.pack("!H", n))
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
                  ).to_bytes(n, "big")
        self.transport.write(head + mask + masked)

    def _done(self) -> None:
        if not self.joined.done():
            self.joined.set_result(None)

    def _fail(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}")


class Crowd:
    """Idle clients of one server (hub or relay), opened in batches."""

    def __init__(self, port: int, hub: bool) -> None:
        self.port, self.hub = port, hub
        self.clients: list[_IdleClient] = []
        self.errors = 0
        self.first_error = ""
        self._rooms: list[str] = []

    def _room(self, i: int) -> str:
        while len(self._rooms) <= i // PER_SESSION:
            if self.hub:
                from bridge.core.tokens import new_session_id

                self._rooms.append(new_session_id(API_KEY, now=time.time()))
            else:
                self._rooms.append(f"room-{len(self._rooms)}")
        return self._rooms[i // PER_SESSION]

    async def grow(self, total: int) -> None:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        loop = asyncio.get_running_loop()

        async def one(i: int) -> None:
            room = self._room(i)
            path = f"/v1/session/{room}" if self.hub else f"/{room}"
            frame = json.dumps({"op": "connect", "token": token_for(room, "publisher", "idle")}) \
                if self.hub else None
            async with sem:
                try:
                    _, proto = await asyncio.wait_for(loop.create_connection(
                        lambda: _IdleClient("127.0.0.1", path, frame), "127.0.0.1", self.port), scaled(30))
                    await asyncio.wait_for(proto.joined, scaled(60))
                    self.clients.append(proto)
                except Exception as e:
                    self.errors += 1
                    self.first_error = self.first_error or f"{type(e).__name__}: {e}"[:200]

        await asyncio.gather(*(one(i) for i in range(len(self.clients) + self.errors, total)))

    def close(self) -> None:
        for c in self.clients:
            if c.transport is not None:
                c.transport.abort()
        self.clients = []


def rss_mb(pid: int) -> float:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


async def _settled_rss(pid: int) -> float:
    """VmRSS once the server has finished the joins' aftermath (connection_created fan-out, buffers)."""
    last = rss_mb(pid)
    for _ in range(20):
        await asyncio.sleep(0.25)  # sampling a process from outside: there is no event to wait on
        now = rss_mb(pid)
        if abs(now - last) < 0.1:
            return now
        last = now
    return last


async def run(results: Results, *, quick: bool = False, workdir: Path) -> None:
    """No target: the figure is reported (issue 16)."""
    wanted = [100, 300] if quick else [1_000, 10_000]
    soft = raise_fd_limit(max(wanted) + FD_MARGIN + 8192)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    sizes = [n for n in wanted if n + FD_MARGIN <= soft] or [soft - FD_MARGIN]
    capped = "" if sizes[-1] == max(wanted) else (
        f"; {max(wanted):,} not reachable: RLIMIT_NOFILE hard limit {hard} (each connection is one "
        "descriptor in the bench and one in the server)")
    bounds = {"max_connections": 0, "max_connections_per_address": 0, "max_connections_per_session": 0,
              "max_connections_per_token": 0}
    hub_proc, hub_port = await start_hub(workdir, heartbeat_s=HEARTBEAT_S, extra=bounds)
    relay_port = free_port()
    relay_proc = await Child("relay", [PYTHON, "-m", "bench.baseline", "relay", "--port",
                                       str(relay_port)]).start()
    crowds: list[Crowd] = []
    try:
        await relay_proc.wait_line("READY", 20)
        figures: dict[str, dict[int, float]] = {}
        errors: dict[str, Crowd] = {}
        for name, proc, port, is_hub in (("hub", hub_proc, hub_port, True),
                                         ("relay", relay_proc, relay_port, False)):
            warm = Crowd(port, is_hub)
            await warm.grow(PER_SESSION)
            warm.close()
            crowd = Crowd(port, is_hub)
            crowds.append(crowd)
            errors[name] = crowd
            figures[name] = {0: await _settled_rss(proc.pid)}
            for n in sizes:
                t0 = time.perf_counter()
                await crowd.grow(n)
                figures[name][n] = await _settled_rss(proc.pid)
                print(f"  {name}: {len(crowd.clients):,} idle connections in "
                      f"{time.perf_counter() - t0:.1f} s, VmRSS {figures[name][n]:.1f} MB", flush=True)
            crowd.close()
        for n in sizes:
            per = {k: (v[n] - v[0]) / n * 1024 for k, v in figures.items()}
            why = errors["hub"].first_error or errors["relay"].first_error
            results.add(Row("hub memory", f"{n:,} idle connections: RSS", figures["hub"][n], "MB",
                            figures["relay"][n], None, "", None,
                            f"at 0: hub {figures['hub'][0]:.1f} MB, relay {figures['relay'][0]:.1f} MB; "
                            f"{PER_SESSION} per session{capped if n == sizes[-1] else ''}"))
            results.add(Row("hub memory", f"{n:,} idle connections: per connection", per["hub"], "KB",
                            per["relay"], per["hub"] / per["relay"] if per["relay"] > 0 else None, "", None,
                            f"(VmRSS at N - at 0) / N; errors: hub {errors['hub'].errors}, relay "
                            f"{errors['relay'].errors} {why}".rstrip()))
    finally:
        for c in crowds:
            c.close()
        with contextlib.suppress(Exception):
            await relay_proc.stop()
        await hub_proc.stop()
