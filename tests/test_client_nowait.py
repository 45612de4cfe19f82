"""SessionClient.send_nowait against a real in-process hub: written at once, in order with signal(),
acks ignored, nacks counted, refusals raised, nothing sent (and counted as dropped) when not connected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.core.signal import MAX_DATA_BYTES
from bridge.session import Reconnecting, SessionClient, Signal, SignalError
from tests.conftest import scaled
from tests.helpers.client import signals_until
from tests.helpers.hub import HubHandle, running_hub

SID = "lab-1"


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub() as h:
        yield h


def client(h: HubHandle, role: str = "publisher") -> SessionClient:
    return SessionClient(h.url, SID, h.token(SID, role, ""))


async def test_nowait_keeps_order_with_signal_and_leaves_nothing_pending(hub: HubHandle) -> None:
    async with client(hub) as a, client(hub) as b:
        assert b.connection is not None
        n = 200
        for i in range(n):
            if i % 10 == 0:
                await a.signal(type="seq", data=str(i), to=b.connection.id)
            else:
                assert a.send_nowait("seq", str(i), to=b.connection.id) is True
        assert a.send_nowait("seq", "END", to=b.connection.id)
        got = await signals_until(b, "END")
        assert [s.data for s in got] == [str(i) for i in range(n)]
        assert a.stats["sent"] == n + 1 and a.stats["dropped"] == 0
        await a.ping()      # the acks of the nowait signals are in by now: ignored, nothing pending
        assert a.stats["nowait_nacked"] == 0 and a.stats["acked"] == n // 10
        assert not a._core.outbox._inflight and not a._core.requests


async def test_nowait_nack_is_counted_not_raised(hub: HubHandle) -> None:
    async with client(hub, role="subscriber") as sub:
        assert sub.send_nowait("t", "x") is True       # written; the hub refuses it (403)
        await sub.ping()                                # answered after the nack
        assert sub.stats["nowait_nacked"] == 1 and sub.connected


@pytest.mark.parametrize("type_, data, to, code", [
    ("t" * 129, "", None, 413),
    ("robot move", "", None, 400),
    ("t", "x" * (MAX_DATA_BYTES + 1), None, 413),
    ("t", "", "", 400),
])
async def test_nowait_refuses_bad_input_before_the_wire(hub: HubHandle, type_: str, data: str,
                                                        to: str | None, code: int) -> None:
    async with client(hub) as a:
        with pytest.raises(SignalError) as e:
            a.send_nowait(type_, data, to)
        assert e.value.code == code and e.value.message
        assert a.stats["sent"] == 0


async def test_nowait_when_not_connected_is_dropped_and_counted(hub: HubHandle) -> None:
    a = client(hub)
    assert a.send_nowait("t", "before connect") is False
    await a.connect()
    await a.disconnect()
    assert a.send_nowait("t", "after disconnect") is False
    assert a.stats["dropped"] == 2 and a.stats["sent"] == 0


async def test_nowait_during_reconnect_is_dropped() -> None:
    async with running_hub() as h:
        a = SessionClient(h.url, SID, h.token(SID, "publisher", ""), reconnect_min_s=0.05,
                          reconnect_max_s=0.1)
        await a.connect()
        try:
            ws = a._ws
            assert ws is not None
            ws.transport.abort()                        # the link drops under the client
            async with asyncio.timeout(scaled(10)):
                async for ev in a.events():
                    if isinstance(ev, Reconnecting):
                        break
            assert a.send_nowait("t", "x") is False and a.stats["dropped"] == 1
        finally:
            await a.disconnect()


async def test_event_handler_gets_queued_then_live_events_in_order_and_survives_its_errors(
        hub: HubHandle) -> None:
    async with client(hub) as a, client(hub) as b:
        assert a.connection is not None and b.connection is not None
        for i in range(3):                              # queued in b before the handler exists
            await a.signal(type="n", data=str(i), to=b.connection.id)
        await b.ping()                                  # the hub sent them before the pong
        got: list[str] = []
        done = asyncio.Event()

        def handler(ev: object) -> None:
            if isinstance(ev, Signal):
                if ev.data == "boom":
                    raise RuntimeError("a bug in the handler")
                got.append(ev.data)
                if ev.data == "END":
                    done.set()

        b.set_event_handler(handler)
        for data in ("3", "boom", "4", "END"):
            await a.signal(type="n", data=data, to=b.connection.id)
        await asyncio.wait_for(done.wait(), scaled(10))
        assert got == ["0", "1", "2", "3", "4", "END"] and b.connected
        assert b.stats["events_dropped"] == 0
        b.set_event_handler(None)                       # back to the queue
        await a.signal(type="n", data="queued", to=b.connection.id)
        assert [s.data for s in await signals_until(b, "queued")] == []
