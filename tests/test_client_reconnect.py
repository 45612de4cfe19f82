"""Reconnection driven by really breaking the TCP link (tests/helpers/proxy.py) between a client and a
real hub: cut links, silent (blackholed) links, the grace window ending, giving up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets

from bridge.core.signal import NETWORK_DISCONNECTED
from bridge.session import (
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionClient,
    SignalError,
)
from tests.conftest import scaled
from tests.helpers.client import FAST, next_of, signals_until
from tests.helpers.hub import HubHandle, running_hub
from tests.helpers.proxy import TcpProxy

SID = "lab-1"


@dataclass
class Rig:
    hub: HubHandle
    proxy: TcpProxy
    a: SessionClient  # through the proxy
    b: SessionClient  # straight to the hub

    @property
    def a_id(self) -> str:
        assert self.a.connection is not None
        return self.a.connection.id

    @property
    def b_id(self) -> str:
        assert self.b.connection is not None
        return self.b.connection.id


@contextlib.asynccontextmanager
async def rig(hub_opts: dict[str, Any] | None = None, **client_opts: Any) -> AsyncIterator[Rig]:
    """A hub, a proxy in front of it, client a through the proxy and client b straight to the hub."""
    async with running_hub(**(hub_opts or {})) as h, TcpProxy("127.0.0.1", h.port) as p:
        a = SessionClient(f"ws://127.0.0.1:{p.port}", SID, h.token(SID), **dict(FAST, **client_opts))
        b = SessionClient(h.url, SID, h.token(SID))
        async with a, b:
            yield Rig(h, p, a, b)


async def outage(r: Rig) -> None:
    """Cut a's link and keep the hub unreachable for it until ``r.proxy.refuse(False)``."""
    r.proxy.refuse(True)
    await r.proxy.cut()
    await next_of(r.a, Reconnecting)
    assert r.a.state == "reconnecting" and not r.a.connected


def datas(signals: list, sender: str) -> list[str]:  # type: ignore[type-arg]
    return [s.data for s in signals if s.from_id == sender]


async def test_cut_link_retry_signals_arrive_exactly_once_and_no_retry_never() -> None:
    async with rig() as r:
        a_id, b_id = r.a_id, r.b_id
        await outage(r)
        # a, while reconnecting: retry signals queue (and wait for their ack), others fail at once.
        queued = [asyncio.create_task(r.a.signal(type="from.a", data=f"a-retry-{i}")) for i in range(5)]
        for i in range(3):
            with pytest.raises(SignalError) as e:
                await r.a.signal(type="from.a", data=f"a-noretry-{i}", retry_after_reconnect=False)
            assert e.value.code == 500
        assert r.a.stats["dropped"] == 3
        # b, meanwhile: the hub accepts signals to a (still in its grace window) and buffers retry ones.
        for i in range(5):
            await r.b.signal(type="from.b", data=f"b-retry-{i}", to=a_id)
        await r.b.signal(type="from.b", data="b-retry-broadcast")
        for i in range(3):
            await r.b.signal(type="from.b", data=f"b-noretry-{i}", to=a_id, retry_after_reconnect=False)
        assert not any(t.done() for t in queued)

        r.proxy.refuse(False)
        await next_of(r.a, Reconnected)
        await r.a.signal(type="from.a", data="a-after")  # goes out behind the queued ones
        await asyncio.wait_for(asyncio.gather(*queued), scaled(10))
        assert r.a.connection is not None and r.a.connection.id == a_id and r.a.connected
        await r.a.signal(type="end", data="A-END")
        await r.b.signal(type="end", data="B-END", to=a_id)

        at_a = await signals_until(r.a, "B-END")
        assert datas(at_a, b_id) == [f"b-retry-{i}" for i in range(5)] + ["b-retry-broadcast"]
        at_b = await signals_until(r.b, "A-END")
        assert datas(at_b, a_id) == [f"a-retry-{i}" for i in range(5)] + ["a-after"]
        # b never saw a leave: the connection id survived the outage.
        assert a_id in r.b.connections
        assert r.a.stats["reconnects"] == 1 and r.a.stats["duplicates"] == 0


async def test_silent_link_is_detected_within_link_timeout_and_resumed() -> None:
    async with rig() as r:
        a_id, b_id = r.a_id, r.b_id
        await r.a.ping()
        r.proxy.blackhole(True)
        t0 = time.monotonic()
        # Sent into the void: the hub never sees these.
        lost_retry = asyncio.create_task(r.a.signal(type="t", data="inflight-retry"))
        lost_noretry = asyncio.create_task(r.a.signal(type="t", data="inflight-noretry",
                                                      retry_after_reconnect=False))
        # Relayed by the hub to a's (dead) link: the retry one is in a's replay buffer.
        await r.b.signal(type="t", data="to-a-retry", to=a_id)
        await r.b.signal(type="t", data="to-a-noretry", to=a_id, retry_after_reconnect=False)

        await next_of(r.a, Reconnecting)
        elapsed = time.monotonic() - t0
        # At most link_timeout_s after the last frame (<= one ping interval before t0), plus a tick.
        assert 1.0 - 0.2 - 0.05 <= elapsed <= 1.0 + scaled(1.0), elapsed
        with pytest.raises(SignalError) as e:
            await asyncio.wait_for(lost_noretry, scaled(5))
        assert e.value.code == 500
        assert not lost_retry.done()

        r.proxy.blackhole(False)
        await next_of(r.a, Reconnected)
        await asyncio.wait_for(lost_retry, scaled(10))  # re-sent after the resume, acked
        await r.a.signal(type="end", data="A-END")
        await r.b.signal(type="end", data="B-END", to=a_id)
        assert datas(await signals_until(r.b, "A-END"), a_id) == ["inflight-retry"]
        assert datas(await signals_until(r.a, "B-END"), b_id) == ["to-a-retry"]


async def test_grace_window_expiry_ends_in_disconnected() -> None:
    async with rig({"reconnect_grace_s": 0.3}) as r:
        a_id = r.a_id
        await outage(r)
        queued = asyncio.create_task(r.a.signal(type="t", data="queued"))
        gone = await next_of(r.b, ConnectionDestroyed)
        assert gone.connection.id == a_id and gone.reason == NETWORK_DISCONNECTED
        r.proxy.refuse(False)  # a comes back too late: the hub no longer knows its connection
        assert await next_of(r.a, Disconnected) == Disconnected(NETWORK_DISCONNECTED)
        assert r.a.state == "closed"
        with pytest.raises(SignalError) as e:
            await asyncio.wait_for(queued, scaled(5))
        assert e.value.code == 500


async def test_gives_up_after_give_up_s() -> None:
    async with rig(give_up_s=0.5) as r:
        await outage(r)
        t0 = time.monotonic()
        queued = asyncio.create_task(r.a.signal(type="t", data="queued"))
        assert await next_of(r.a, Disconnected) == Disconnected(NETWORK_DISCONNECTED)
        assert time.monotonic() - t0 <= scaled(3.0)
        assert r.proxy.accepted >= 2  # it did retry before giving up
        with pytest.raises(SignalError) as e:
            await asyncio.wait_for(queued, scaled(5))
        assert e.value.code == 500
        assert r.a.state == "closed"


async def test_a_retry_signal_relayed_before_a_cut_that_lost_its_ack_arrives_once() -> None:
    # The worst moment: the hub got a's signal, relayed it and acked it, but the ack died with the link.
    async with rig() as r:
        a_id = r.a_id
        await r.a.ping()
        r.proxy.blackhole(True, "down")  # a -> hub still flows; hub -> a is lost
        sent = asyncio.create_task(r.a.signal(type="t", data="ack-lost"))
        await signals_until(r.b, "ack-lost")  # the hub relayed it (b has it)
        await next_of(r.a, Reconnecting)  # no pong, no ack: a gives the link up
        assert not sent.done()
        r.proxy.blackhole(False, "down")
        await next_of(r.a, Reconnected)
        await asyncio.wait_for(sent, scaled(10))  # settled by the resume's last_id, not re-sent...
        await r.a.signal(type="end", data="A-END")
        assert datas(await signals_until(r.b, "A-END"), a_id) == []  # ...so b does not get it twice
        assert r.hub.hub is not None and r.hub.hub.state.metrics.signals_in == 2  # ack-lost, A-END
        assert r.a.stats["sent"] == 2 and r.a.stats["acked"] == 2
        # a itself got the broadcast once: replayed after the resume, never twice.
        assert [s.data for s in await signals_until(r.a, "A-END")].count("ack-lost") == 1


async def test_a_nack_lost_in_a_cut_still_reaches_the_caller() -> None:
    async with rig() as r:
        await r.a.ping()
        r.proxy.blackhole(True, "down")
        refused = asyncio.create_task(r.a.signal(type="t", data="x", to="nobody"))
        ok = asyncio.create_task(r.a.signal(type="t", data="ok", to=r.b_id))
        await signals_until(r.b, "ok")  # the hub has processed both (in order): only the answers are lost
        await next_of(r.a, Reconnecting)
        r.proxy.blackhole(False, "down")
        await next_of(r.a, Reconnected)
        await asyncio.wait_for(ok, scaled(10))
        with pytest.raises(SignalError) as e:
            await asyncio.wait_for(refused, scaled(10))
        assert e.value.code == 404  # the nack listed in the resumed `connected`
        assert r.hub.hub is not None and r.hub.hub.state.metrics.signals_in == 2  # neither re-sent
        assert r.a.stats["sent"] == 2


async def test_an_older_hub_without_last_id_gets_the_unanswered_signal_again() -> None:
    # A scripted hub from before last_id: it takes the signal, dies before the ack, resumes without it.
    conn = {"id": "c-1", "data": "", "role": "publisher", "creation_time": 1}
    got: list[dict[str, Any]] = []
    links = 0

    async def old_hub(ws: websockets.ServerConnection) -> None:
        nonlocal links
        links += 1
        hello = json.loads(await ws.recv())
        await ws.send(json.dumps({"op": "connected", "connection": conn, "connections": [],
                                  "resume_secret": "s", "resumed": "resume" in hello, "server_time": 1}))
        async for text in ws:
            frame = json.loads(text)
            if frame["op"] == "signal":
                got.append(frame)
                if links == 1:
                    ws.transport.abort()  # the answer is lost with the link
                    return
                await ws.send(json.dumps({"op": "ack", "id": frame["id"]}))

    async with websockets.serve(old_hub, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        opts: dict[str, Any] = dict(FAST)
        async with SessionClient(f"ws://127.0.0.1:{port}", SID, "token", **opts) as a:
            await asyncio.wait_for(a.signal(type="t", data="again"), scaled(10))
            assert [(f["id"], f["data"]) for f in got] == [(got[0]["id"], "again")] * 2
            assert a.stats["reconnects"] == 1
