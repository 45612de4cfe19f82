"""A fleet of real ``sigbridge hub`` processes sharing a 3-node Redis Cluster: cross-hub routing with
REST on a third hub, a hub killed (SIGKILL) under a stream of signals while its client resumes on
another hub through a load balancer, grace expiry after a hub death, fencing of a frozen hub, and a
standalone Redis going down and coming back under a running hub."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.helpers.redis import RedisSetup, require_redis, running_redis

require_redis(module=True)

from bridge.session import ConnectionDestroyed, Reconnected, SessionClient, Signal  # noqa: E402
from tests.helpers.client import FAST  # noqa: E402
from tests.helpers.clusterhub import engine_hubs, ready  # noqa: E402
from tests.helpers.clusterproc import cluster_hubs  # noqa: E402
from tests.helpers.hub import HubHandle, RawClient, raw_connect  # noqa: E402
from tests.helpers.lb import LoadBalancer  # noqa: E402
from tests.helpers.poll import until  # noqa: E402


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisSetup]:
    with running_redis(cluster=True) as r:
        yield r


def _http(h: HubHandle, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"{h.http_url}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-OPENTOK-AUTH": h.rest_jwt(), "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def _rest(h: HubHandle, method: str, path: str,
                body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(_http, h, method, f"/v2/project/{h.api_key}/session/{path}", body)


async def _next(c: RawClient, op: str) -> dict[str, Any]:
    while True:
        f = await c.recv()
        if f["op"] == op:
            return f
        assert f["op"] in ("ack", "pong"), f


async def test_cross_hub_routing_rest_on_a_third_hub_and_events_everywhere(redis_cluster: RedisSetup) -> None:
    with cluster_hubs(redis_cluster.urls, 3) as (ha, hb, hc):
        op = await raw_connect(ha, "x", "moderator", data="operator")
        robot = await raw_connect(hb, "x", data="robot")
        viewer = await raw_connect(hc, "x", "subscriber", data="viewer")
        assert (await _next(op, "connection_created"))["connection"]["id"] == robot.id
        for c in (op, robot):
            assert (await _next(c, "connection_created"))["connection"]["id"] == viewer.id
        assert {c["id"] for c in viewer.connected["connections"]} == {op.id, robot.id}
        await op.signal("cmd", "go", to=robot.id)
        got = await _next(robot, "signal")
        assert (got["type"], got["from"], got["seq"]) == ("cmd", op.id, 1)
        status, _ = await _rest(hc, "POST", f"x/connection/{robot.id}/signal", {"type": "rest", "data": "r"})
        assert status == 204
        got = await _next(robot, "signal")
        assert (got["type"], got["from"], got["seq"]) == ("rest", None, 2)
        status, _ = await _rest(hc, "POST", "x/signal", {"type": "all", "data": "a"})
        assert status == 204
        for c in (op, robot, viewer):
            assert (await _next(c, "signal"))["type"] == "all"
        status, body = await _rest(hc, "GET", "x/connection")
        assert status == 200 and {i["connectionId"] for i in json.loads(body)["items"]} == {op.id, robot.id,
                                                                                           viewer.id}
        assert (await _rest(ha, "POST", "x/connection/nobody/signal", {"type": "t", "data": ""}))[0] == 404
        status, _ = await _rest(hc, "DELETE", f"x/connection/{robot.id}")
        assert status == 204
        assert (await _next(robot, "disconnected"))["reason"] == "forceDisconnected"
        for c in (op, viewer):
            gone = await _next(c, "connection_destroyed")
            assert (gone["connection"]["id"], gone["reason"]) == (robot.id, "forceDisconnected")
        await op.close()
        await viewer.close()


async def test_sigkill_of_the_robots_hub_resumes_on_another_with_every_retry_signal(
        redis_cluster: RedisSetup) -> None:
    with cluster_hubs(redis_cluster.urls, 2) as (ha, hb):
        async with LoadBalancer([("127.0.0.1", hb.port), ("127.0.0.1", ha.port)], mode="first-alive") as lb:
            opts: dict[str, Any] = dict(FAST, give_up_s=30.0)
            robot = SessionClient(f"ws://127.0.0.1:{lb.port}", "k", hb.token("k", data="robot"), **opts)
            await robot.connect()
            assert robot.connection is not None
            rid = robot.connection.id
            op = await raw_connect(ha, "k", "moderator")
            received: list[Signal] = []
            destroyed: list[Any] = []
            reconnected = asyncio.Event()
            times: list[float] = []

            def on_event(ev: object) -> None:
                if isinstance(ev, Signal):
                    received.append(ev)
                elif isinstance(ev, Reconnected):
                    times.append(time.monotonic())
                    reconnected.set()
                elif isinstance(ev, ConnectionDestroyed):
                    destroyed.append(ev)

            robot.set_event_handler(on_event)
            total, kill_at = 1000, 300
            killed_index = -1
            killed_at = 0.0
            for i in range(total):
                await op.signal("cmd", str(i), to=rid, retry=i % 2 == 0)
                if i == kill_at:
                    _kill(hb.pid or 0)
                    killed_index, killed_at = i, time.monotonic()
                await asyncio.sleep(0.002)   # at most 500/s
            await asyncio.wait_for(reconnected.wait(), 15)
            print(f"resumed on the other hub {1000 * (times[0] - killed_at):.0f} ms after the kill")
            await op.signal("end", "end", to=rid)
            await until(lambda: any(s.type == "end" for s in received), 15)
            assert robot.connection is not None and robot.connection.id == rid
            got = [int(s.data) for s in received if s.type == "cmd"]
            assert got == sorted(set(got)), "out of order or duplicated"
            assert {i for i in range(total) if i % 2 == 0} <= set(got), "a retry signal was lost"
            # retry: false: those the store took while it was away are gone (a gap after the kill, empty
            # when the resume beat the operator's hub to them), every one after arrives (the tail).
            after = [i for i in got if i % 2 == 1 and i > killed_index]
            assert after and after == list(range(after[0], total, 2)), after
            assert not destroyed
            # the operator never saw the robot leave
            await op.send(op="ping", id=10**6)
            while (f := await op.recv())["op"] != "pong":
                assert f["op"] != "connection_destroyed", f
            await robot.disconnect()
            await op.close()


async def test_grace_expiry_after_a_hub_death_destroys_each_member_once(redis_cluster: RedisSetup) -> None:
    with cluster_hubs(redis_cluster.urls, 3, grace_s=1.0) as (ha, hb, hc):
        op = await raw_connect(ha, "g", "moderator")
        r1 = await raw_connect(hb, "g")
        r2 = await raw_connect(hb, "g")
        watcher = await raw_connect(hc, "g")
        for _ in range(3):
            await _next(op, "connection_created")
        _kill(hb.pid or 0)
        for c in (op, watcher):
            gone = [await _next(c, "connection_destroyed") for _ in range(2)]
            assert {g["connection"]["id"] for g in gone} == {r1.id, r2.id}
            assert {g["reason"] for g in gone} == {"networkDisconnected"}
        await asyncio.sleep(1.5)  # more sweeps ran on both live hubs: nothing more comes
        for c in (op, watcher):
            await c.send(op="ping", id=7)
            assert (await _next(c, "pong"))["id"] == 7


async def test_a_frozen_hub_is_fenced_delivers_nothing_more_and_closes_its_links(
        redis_cluster: RedisSetup) -> None:
    with cluster_hubs(redis_cluster.urls, 2, lease_ms=800) as (ha, hb):
        op = await raw_connect(ha, "f", "moderator")
        robot = await raw_connect(hb, "f")
        await _next(op, "connection_created")
        os.kill(hb.pid or 0, signal.SIGSTOP)
        try:
            await asyncio.sleep(2.0)   # well past its lease
            for i in range(5):
                await op.signal("during", str(i), to=robot.id)
        finally:
            os.kill(hb.pid or 0, signal.SIGCONT)
        frames = []
        with pytest.raises(websockets.ConnectionClosed):  # the fenced hub closes the link
            while True:
                frames.append(await robot.recv(timeout=10))
        assert not [f for f in frames if f["op"] == "signal"], frames
        # its client resumes on a live hub and gets what the frozen one never delivered
        again = await raw_connect(ha, "f", resume={"connection_id": robot.id, "last_seq": 0,
                                                   "secret": robot.connected["resume_secret"]})
        assert again.connected["resumed"] is True and again.connected["connection"]["id"] == robot.id
        assert [(await again.recv())["data"] for _ in range(5)] == [str(i) for i in range(5)]
        for _ in range(100):   # it starts again as a new hub, ready again
            if await asyncio.to_thread(_healthz, hb) == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the fenced hub did not come back as a new hub")


def _kill(pid: int) -> None:
    """SIGKILL, and return once the process is dead (a zombie), not merely signalled."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.001)
    raise AssertionError("the hub did not die")


def _healthz(h: HubHandle) -> int:
    try:
        with urllib.request.urlopen(f"{h.http_url}/healthz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


async def test_redis_down_refuses_connects_cleanly_and_the_hub_recovers() -> None:
    with running_redis() as r:
        async with engine_hubs("redis", r.urls, n=1, reconnect_grace_s=5.0) as (h,):
            a = await raw_connect(h, "d")
            assert a.connected["op"] == "connected"
            r.nodes[0].stop()
            await until(lambda: not ready(h), 10)
            assert await asyncio.to_thread(_healthz, h) == 503
            refused = await raw_connect(h, "d")
            assert refused.connected["op"] == "error" and refused.connected["code"] == 503
            assert "Redis" in refused.connected["message"]
            r.nodes[0].start()
            started = time.monotonic()
            await until(lambda: ready(h), 20)
            assert await asyncio.to_thread(_healthz, h) == 200
            b = await raw_connect(h, "d")
            assert b.connected["op"] == "connected", b.connected
            print(f"recovered {time.monotonic() - started:.2f} s after Redis came back")
            await b.close()
