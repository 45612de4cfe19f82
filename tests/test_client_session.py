"""SessionClient against a real in-process hub: delivery, ordering, errors, connection events, clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TypeVar

import aiohttp
import pytest

from bridge.core.signal import CLIENT_DISCONNECTED, FORCE_DISCONNECTED, MAX_DATA_BYTES
from bridge.session import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    SessionClient,
    SessionEvent,
    Signal,
    SignalError,
)
from tests.conftest import scaled
from tests.helpers.client import next_of, signals_until
from tests.helpers.hub import HubHandle, running_hub
from tests.helpers.mosquitto import free_port

SID = "lab-1"
E = TypeVar("E")


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub() as h:
        yield h


def client(h: HubHandle, role: str = "publisher", data: str = "", **kw: float) -> SessionClient:
    return SessionClient(h.url, SID, h.token(SID, role, data), **kw)  # type: ignore[arg-type]


async def test_connect_sees_the_others_and_a_sane_clock(hub: HubHandle) -> None:
    async with client(hub, data="name=a") as a, client(hub, data="name=b") as b:
        assert a.connected and a.state == "connected" and a.connection is not None
        assert b.connection is not None and a.connection.id in b.connections
        assert b.connections[a.connection.id].data == "name=a"
        created = await next_of(a, ConnectionCreated)
        assert created.connection == b.connection and b.connection.id in a.connections
        # Same machine, same clock: the offset is within the connect exchange's RTT (+ ms rounding).
        assert a.rtt_ms is not None and 0 <= a.rtt_ms < scaled(2000)
        assert abs(a.clock_offset_ms) <= a.rtt_ms / 2 + 2
        rtt = await a.ping()
        assert 0 <= rtt < scaled(2000) and a.rtt_ms == pytest.approx(rtt, abs=1.0)
        assert abs(a.hub_time_ms() - time.time() * 1000) < scaled(1000)


async def test_newcomer_gets_connection_created_for_each_existing_client(hub: HubHandle) -> None:
    async with client(hub) as a, client(hub) as b, client(hub) as c:
        seen = {(await next_of(c, ConnectionCreated)).connection.id for _ in range(2)}
        assert a.connection and b.connection and seen == {a.connection.id, b.connection.id}


async def test_broadcast_comes_back_to_the_sender_and_targeted_goes_to_one(hub: HubHandle) -> None:
    async with client(hub) as a, client(hub) as b, client(hub) as c:
        assert a.connection and b.connection
        await a.signal(type="robot.move", data='{"x":0.5}')
        await a.signal(type="only.b", data="secret", to=b.connection.id)
        await a.signal(type="end", data="END")
        for receiver, expected in ((a, ["robot.move"]), (b, ["robot.move", "only.b"]), (c, ["robot.move"])):
            got = await signals_until(receiver, "END")
            assert [s.type for s in got] == expected
            assert all(s.from_id == a.connection.id for s in got)
        assert a.stats["sent"] == 3 and a.stats["acked"] == 3


async def test_order_is_kept_per_sender(hub: HubHandle) -> None:
    async with client(hub) as a, client(hub) as b:
        n = 300
        await asyncio.gather(*(a.signal(type="seq", data=str(i)) for i in range(n)))
        await a.signal(type="seq", data="END")
        got = await signals_until(b, "END")
        assert [s.data for s in got] == [str(i) for i in range(n)]
        seqs = [s.seq for s in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == n


async def test_data_limit_is_exact(hub: HubHandle) -> None:
    async with client(hub) as a:
        await a.signal(type="big", data="x" * MAX_DATA_BYTES)
        with pytest.raises(SignalError) as e:
            await a.signal(type="big", data="x" * (MAX_DATA_BYTES + 1))
        assert e.value.code == 413 and "8193 bytes" in e.value.message
        with pytest.raises(SignalError) as e:
            await a.signal(type="big", data="é" * (MAX_DATA_BYTES // 2 + 1))  # 2 bytes each
        assert e.value.code == 413


@pytest.mark.parametrize("type_, data, code", [
    ("t" * 129, "", 413),
    ("robot move", "", 400),
    ("robot/move", "", 400),
    (5, "", 400),
    ("t", None, 400),
])
async def test_local_checks_refuse_with_the_hub_codes(hub: HubHandle, type_: object, data: object,
                                                      code: int) -> None:
    async with client(hub) as a:
        with pytest.raises(SignalError) as e:
            await a.signal(type=type_, data=data)  # type: ignore[arg-type]
        assert e.value.code == code and e.value.message
        assert a.stats["sent"] == 0  # refused before the wire


async def test_hub_refusals_404_403_429(hub: HubHandle) -> None:
    async with client(hub) as pub, client(hub, role="subscriber") as sub, \
            client(hub, role="publisheronly") as ponly:
        with pytest.raises(SignalError) as e:
            await pub.signal(type="t", to="no-such-connection")
        assert e.value.code == 404
        for refused in (sub, ponly):
            with pytest.raises(SignalError) as e:
                await refused.signal(type="t", data="x")
            assert e.value.code == 403 and "may not send" in e.value.message
        assert pub.connection is not None
        with pytest.raises(SignalError) as e:
            await pub.force_disconnect(sub.connection.id if sub.connection else "")
        assert e.value.code == 403
        # A subscriber still receives.
        await pub.signal(type="t", data="END")
        assert await signals_until(sub, "END") == []


async def test_rate_limit_answers_429() -> None:
    async with running_hub(rate_limit=5.0, rate_burst=5.0) as h, client(h) as a:
        results = await asyncio.gather(*(a.signal(type="t", data=str(i)) for i in range(20)),
                                       return_exceptions=True)
        codes = [r.code for r in results if isinstance(r, SignalError)]
        assert 10 <= len(codes) <= 15 and set(codes) == {429}


async def test_refused_token_and_unreachable_hub() -> None:
    async with running_hub() as h:
        bad = SessionClient(h.url, SID, h.token("other-session"))
        with pytest.raises(SignalError) as e:
            await bad.connect()
        assert e.value.code in (401, 403) and bad.state == "closed"
        assert [ev async for ev in bad.events()] == []  # nothing to wait for on a closed client
        with pytest.raises(SignalError) as e:
            await SessionClient(h.url, SID, "garbage").connect()
        assert e.value.code in (401, 403)
    gone = SessionClient(f"ws://127.0.0.1:{free_port()}", SID, "t", open_timeout_s=scaled(5))
    with pytest.raises(SignalError) as e:
        await gone.connect()
    assert e.value.code == 500 and "cannot connect" in e.value.message


async def test_leave_and_forced_out_are_seen_by_all(hub: HubHandle) -> None:
    async with client(hub, role="moderator") as mod, client(hub) as watcher:
        leaver, victim = client(hub), client(hub)
        await leaver.connect()
        await victim.connect()
        assert leaver.connection and victim.connection
        await leaver.disconnect()
        assert leaver.state == "closed"
        assert [e async for e in leaver.events()][-1] == Disconnected(CLIENT_DISCONNECTED)
        gone = await next_of(watcher, ConnectionDestroyed)
        assert gone.connection.id == leaver.connection.id and gone.reason == CLIENT_DISCONNECTED

        await mod.force_disconnect(victim.connection.id)
        assert await next_of(victim, Disconnected) == Disconnected(FORCE_DISCONNECTED)
        assert victim.state == "closed" and not victim.connected
        gone = await next_of(watcher, ConnectionDestroyed)
        assert gone.connection.id == victim.connection.id and gone.reason == FORCE_DISCONNECTED
        assert victim.connection.id not in watcher.connections
        with pytest.raises(SignalError) as e:
            await victim.signal(type="t")
        assert e.value.code == 500
        with pytest.raises(SignalError) as e:
            await mod.force_disconnect(victim.connection.id)
        assert e.value.code == 404


async def test_disconnect_fails_pending_signals_and_is_idempotent(hub: HubHandle) -> None:
    a = client(hub)
    await a.connect()
    await a.disconnect()
    await a.disconnect()
    events: list[SessionEvent] = [e async for e in a.events()]
    assert events.count(Disconnected(CLIENT_DISCONNECTED)) == 1
    with pytest.raises(SignalError) as e:
        await a.signal(type="t", data="x", retry_after_reconnect=True)
    assert e.value.code == 500
    with pytest.raises(SignalError):
        await a.ping()


async def test_events_overflow_drops_the_oldest(hub: HubHandle) -> None:
    async with client(hub, event_queue_size=5) as a:
        for i in range(10):
            await a.signal(type="t", data=str(i))
        await a.signal(type="t", data="END")
        # The hub queues the echo of END before it reads our ping: once the pong is in, so is END.
        await a.ping()
        assert a.stats["received"] == 11
        got = await signals_until(a, "END")
        assert [s.data for s in got] == [str(i) for i in range(6, 10)]
        assert a.stats["events_dropped"] == 6


async def test_rest_signal_arrives_with_no_sender(hub: HubHandle) -> None:
    async with client(hub) as a, aiohttp.ClientSession() as http:
        url = f"{hub.http_url}/v2/project/{hub.api_key}/session/{SID}/signal"
        async with http.post(url, json={"type": "robot.stop", "data": "now"},
                             headers={"X-OPENTOK-AUTH": hub.rest_jwt()}) as resp:
            assert resp.status == 204
        got = await next_of(a, Signal)
        assert (got.type, got.data, got.from_id) == ("robot.stop", "now", None)
