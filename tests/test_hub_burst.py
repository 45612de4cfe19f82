"""The hub's write path under bursts: many signals handled in one loop turn, written directly or through
the outbox when the socket pushes back, must arrive whole, in order, of every size class (WebSocket 7-bit
and 16-bit lengths), with acks matching."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.core.signal import MAX_DATA_BYTES
from bridge.session import SessionClient, Signal
from tests.conftest import scaled
from tests.helpers.hub import HubHandle, running_hub

SID = "burst"


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub(rate_limit=0) as h:
        yield h


async def test_a_burst_arrives_whole_and_in_order_with_every_frame_size(hub: HubHandle) -> None:
    a = SessionClient(hub.url, SID, hub.token(SID, "publisher", ""))
    b = SessionClient(hub.url, SID, hub.token(SID, "publisher", ""))
    async with a, b:
        assert b.connection is not None
        sizes = [0, 1, 10, 20, 40, 60, 90, 120, 200, 4000, MAX_DATA_BYTES - 10]  # frames 7- and 16-bit
        n = 1200
        datas = [f"{i}:" + "x" * sizes[i % len(sizes)] for i in range(n)]
        window = asyncio.Semaphore(64)     # many signals in flight: the hub reads them in batches

        async def one(d: str) -> None:
            async with window:
                await a.signal(type="b", data=d, to=b.connection.id if b.connection else None)

        sends = [asyncio.ensure_future(one(d)) for d in datas]   # scheduled in order: ids in order
        got: list[str] = []

        async def collect() -> None:
            async for ev in b.events():
                if isinstance(ev, Signal):
                    got.append(ev.data)
                    if len(got) == n:
                        return
        await asyncio.wait_for(asyncio.gather(*sends, collect()), scaled(30))
        assert got == datas
        assert a.stats["acked"] == n and b.stats["duplicates"] == 0
        # A bad frame would close the link and the resume would hide it: no reconnect may have happened.
        assert a.stats["reconnects"] == 0 and b.stats["reconnects"] == 0

