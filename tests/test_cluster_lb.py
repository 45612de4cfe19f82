"""The test load balancer (tests/helpers/lb.py) in front of real TCP servers: round-robin, first-alive,
a dropped backend cuts its connections and gets no new ones, a refusing backend is skipped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.helpers.lb import LoadBalancer
from tests.helpers.mosquitto import free_port


@asynccontextmanager
async def echo_servers(n: int) -> AsyncIterator[list[tuple[str, int]]]:
    """n servers that answer each line with ``<index>:<line>``."""
    servers = []
    for i in range(n):
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int = i) -> None:
            while line := await r.readline():
                w.write(f"{i}:".encode() + line)
                await w.drain()
            w.close()
        servers.append(await asyncio.start_server(serve, "127.0.0.1", 0))
    try:
        yield [("127.0.0.1", s.sockets[0].getsockname()[1]) for s in servers]
    finally:
        for s in servers:
            s.close()


async def ask(port: int, text: str = "hi") -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(text.encode() + b"\n")
    await w.drain()
    return (await asyncio.wait_for(r.readline(), 10)).decode().strip(), r, w


async def test_round_robin_and_drop() -> None:
    async with echo_servers(3) as backends, LoadBalancer(backends) as lb:
        answers = [(await ask(lb.port))[0] for _ in range(6)]
        assert [a.split(":")[0] for a in answers] == ["0", "1", "2", "0", "1", "2"]
        _, r, w = await ask(lb.port)  # lands on 0
        lb.drop(0)
        assert await asyncio.wait_for(r.read(), 10) == b""  # its connection is cut
        w.close()
        later = {(await ask(lb.port))[0].split(":")[0] for _ in range(4)}
        assert later == {"1", "2"}
        lb.restore(0)
        assert "0" in {(await ask(lb.port))[0].split(":")[0] for _ in range(3)}


async def test_first_alive_skips_refusing_backend() -> None:
    async with echo_servers(1) as alive:
        dead = ("127.0.0.1", free_port())  # nothing listens there
        async with LoadBalancer([dead, *alive], mode="first-alive") as lb:
            assert (await ask(lb.port, "x"))[0] == "0:x"
            assert lb.chosen == [1]
            lb.drop(1)
            r, w = await asyncio.open_connection("127.0.0.1", lb.port)
            assert await asyncio.wait_for(r.read(), 10) == b""  # no backend: reset
            w.close()
