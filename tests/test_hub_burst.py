"""The hub's write path under bursts: many signals handled in one loop turn leave gathered in one write
(frames built by the hub itself); they must arrive whole, in order, of every size class (RFC 6455
7-bit and 16-bit lengths), with acks matching, and the slow-receiver outbox must still take over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.core.signal import MAX_DATA_BYTES
from bridge.hub.run import HUB_KEY
from bridge.session import SessionClient, Signal
from tests.conftest import scaled
from tests.helpers.hub import HubHandle, running_hub

SID = "burst"


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub(rate_limit=0) as h:
        yield h


async def data_of_signals(client: SessionClient, n: int) -> list[str]:
    """The data of the next ``n`` signals ``client`` receives, in order."""
    got: list[str] = []
    async for ev in client.events():
        if isinstance(ev, Signal):
            got.append(ev.data)
            if len(got) == n:
                break
    return got


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
        _, got = await asyncio.wait_for(asyncio.gather(asyncio.gather(*sends), data_of_signals(b, n)),
                                        scaled(30))
        assert got == datas
        assert a.stats["acked"] == n and b.stats["duplicates"] == 0
        # A bad frame would close the link and the resume would hide it: no reconnect may have happened.
        assert a.stats["reconnects"] == 0 and b.stats["reconnects"] == 0


class _WriteCounter:
    """Counts the calls to one transport's ``write`` (the real write still happens)."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.calls = 0
        real = transport.write

        def write(data: bytes | bytearray | memoryview) -> None:
            self.calls += 1
            real(data)
        transport.write = write  # type: ignore[method-assign]


async def test_a_burst_sent_in_one_loop_turn_costs_a_few_writes_end_to_end(hub: HubHandle) -> None:
    """200 signals sent in one loop turn (as acks arriving together wake their senders): the client
    writes the first two at once and gathers the rest into one write; the hub reads them together and
    gathers the deliveries (and the acks) of that turn into a few writes, not one per frame."""
    a = SessionClient(hub.url, SID, hub.token(SID, "publisher", ""))
    b = SessionClient(hub.url, SID, hub.token(SID, "publisher", ""))
    async with a, b:
        assert b.connection is not None and hub.hub is not None
        to_b = b.connection.id
        client_writes = _WriteCounter(a._ws.transport)  # type: ignore[union-attr]
        hub_links = hub.hub.runner.app[HUB_KEY].links
        hub_writes = [_WriteCounter(link._transport) for link in hub_links]
        n = 200
        # Scheduled together: each runs up to its write in the same loop turn.
        sends = [asyncio.ensure_future(a.signal("b", str(i), to=to_b)) for i in range(n)]
        _, got = await asyncio.wait_for(asyncio.gather(asyncio.gather(*sends), data_of_signals(b, n)),
                                        scaled(10))
        assert got == [str(i) for i in range(n)]
        # The first signal is alone in flight (written at once, nothing gathered); the second opens the
        # gathering (written at once too); the other 198 leave together.
        assert client_writes.calls == 3
        # 200 deliveries to b and 200 acks to a; TCP may hand the hub the burst in a few reads, each
        # costing a direct write and one gathered write per link: far below one write per frame.
        assert sum(w.calls for w in hub_writes) <= 20, [w.calls for w in hub_writes]
