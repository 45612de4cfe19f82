"""sigbridge.js, the browser client library, in a real headless Chromium against a real in-process hub.

The Python end of each session is a raw wire-v1 peer (tests/helpers/browser.py). Link failures are
real: a TCP proxy between the browser and the hub resets, refuses or blackholes connections.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import websockets
from playwright.async_api import Browser, Page

from tests.conftest import scaled
from tests.helpers.browser import WirePeer, library_page, running_browser
from tests.helpers.hub import HubHandle, running_hub
from tests.helpers.proxy import TcpProxy

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Connect in the page and record every session event into window.events.
JOIN = """async ([url, sid, token, opts]) => {
  window.events = [];
  window.s = await window.sb.connect(url, sid, token, opts || {});
  for (const n of ['signal', 'signal:robot.telemetry', 'connectionCreated', 'connectionDestroyed',
                   'sessionReconnecting', 'sessionReconnected', 'sessionDisconnected']) {
    s.on(n, (e) => events.push({n, type: e.type, data: e.data, from: e.from ? e.from.connectionId : e.from,
                                 fromData: e.from ? e.from.data : null, seq: e.seq, ts: e.ts,
                                 conn: e.connection ? e.connection.connectionId : null, reason: e.reason}));
  }
  return s.connection.connectionId;
}"""

# Send a signal; resolves to null or [code, message] (never throws across the bridge to Python).
SIGNAL = """async (opts) => {
  try { await s.signal(opts); return null; } catch (err) { return [err.code, err.message]; }
}"""

# Try to connect; resolves to the error code, or null when connected.
CONNECT_ERROR = """async ([url, sid, token]) => {
  try { await sb.connect(url, sid, token); return null; } catch (err) { return err.code; }
}"""

# Start a signal without waiting: its outcome lands in window.outcomes[name].
SIGNAL_LATER = """([name, opts]) => {
  window.outcomes = window.outcomes || {};
  s.signal(opts, (err) => { outcomes[name] = err ? err.code : 'ok'; });
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with running_browser() as b:
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub(reconnect_grace_s=30.0) as h:
        yield h


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, hub: HubHandle) -> AsyncIterator[Page]:
    async with library_page(browser, hub) as pg:
        yield pg


def new_session() -> str:
    return f"lib-{uuid.uuid4().hex[:10]}"


async def wait_event(page: Page, name: str, count: int = 1) -> None:
    await page.wait_for_function("([n, c]) => events.filter((e) => e.n === n).length >= c", arg=[name, count],
                                 timeout=scaled(15) * 1000)


async def events(page: Page, name: str) -> list[dict[str, Any]]:
    return list(await page.evaluate("(n) => events.filter((e) => e.n === n)", name))


async def test_signals_both_ways_with_sender_and_member_events(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with WirePeer(hub.url, sid, hub.token(sid, data="robot-1")) as robot:
        me = await page.evaluate(JOIN, [hub.url, sid, hub.token(sid, data="operator"), None])
        assert await page.evaluate("() => [...s.connections.values()].map((c) => [c.id, c.data])") == [
            [robot.id, "robot-1"]]

        await robot.signal("robot.telemetry", '{"battery":87}', to=me)
        await wait_event(page, "signal:robot.telemetry")
        (ev,) = await events(page, "signal")
        assert (ev["type"], ev["data"], ev["from"], ev["fromData"]) == (
            "robot.telemetry", '{"battery":87}', robot.id, "robot-1")
        assert ev["seq"] >= 1 and isinstance(ev["ts"], int)

        # The callback form gets null on success; the hub passes the signal on from our connection.
        assert await page.evaluate(
            "(to) => new Promise((ok) => s.signal({type: 'robot.move', data: '{\"x\":1}', to}, ok))", robot.id
        ) is None
        (move,) = await robot.wait_signal("robot.move", scaled(10))
        assert (move["data"], move["from"]) == ('{"x":1}', me)

        async with WirePeer(hub.url, sid, hub.token(sid, data="observer")) as other:
            await wait_event(page, "connectionCreated")
            assert (await events(page, "connectionCreated"))[0]["conn"] == other.id
        await wait_event(page, "connectionDestroyed")
        (gone,) = await events(page, "connectionDestroyed")
        assert (gone["conn"], gone["reason"]) == (other.id, "clientDisconnected")
        assert await page.evaluate("() => s.connections.size") == 1
        await page.wait_for_function("() => s.rttMs !== null && s.clockOffsetMs !== null",
                                     timeout=scaled(10) * 1000)


async def test_refusals_carry_the_api_error_codes(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    await page.evaluate(JOIN, [hub.url, sid, hub.token(sid), None])
    results = {
        name: await page.evaluate(SIGNAL, opts) for name, opts in {
            "space": {"type": "robot move"},
            "long_type": {"type": "t" * 129},
            "long_data": {"type": "x", "data": "é" * 4097},          # 8194 bytes of UTF-8
            "fits": {"type": "x", "data": "é" * 4096},               # exactly 8192 bytes
            "not_a_string": {"type": "x", "data": 5},
            "unknown_to": {"type": "x", "to": str(uuid.uuid4())},
        }.items()
    }
    assert {k: v and v[0] for k, v in results.items()} == {
        "space": 400, "long_type": 413, "long_data": 413, "fits": None, "not_a_string": 400,
        "unknown_to": 404}
    # A subscriber may receive but not send: the hub refuses with 403.
    await page.evaluate("() => s.disconnect()")
    await page.evaluate(JOIN, [hub.url, sid, hub.token(sid, role="subscriber"), None])
    assert (await page.evaluate(SIGNAL, {"type": "robot.move", "data": "{}"}))[0] == 403
    # A token for another session is refused at connect (403); a forged one is unauthorised (401).
    assert await page.evaluate(CONNECT_ERROR, [hub.url, sid, hub.token("some-other-session")]) == 403
    assert await page.evaluate(CONNECT_ERROR, [hub.url, sid, hub.token(sid)[:-4] + "AAAA"]) == 401


async def test_rest_signal_arrives_with_null_from(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    await page.evaluate(JOIN, [hub.url, sid, hub.token(sid), None])
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{hub.http_url}/v2/project/{hub.api_key}/session/{sid}/signal",
                               json={"type": "bridge.status", "data": "hello"},
                               headers={"X-OPENTOK-AUTH": hub.rest_jwt()})
        assert resp.status == 204
    await wait_event(page, "signal")
    (ev,) = await events(page, "signal")
    assert (ev["type"], ev["data"], ev["from"]) == ("bridge.status", "hello", None)


async def test_reconnect_queues_retry_signals_and_fails_the_others(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with TcpProxy("127.0.0.1", hub.port) as proxy, \
            WirePeer(hub.url, sid, hub.token(sid, data="robot")) as robot:
        me = await page.evaluate(JOIN, [f"ws://127.0.0.1:{proxy.port}", sid, hub.token(sid),
                                        {"retryMinMs": 100, "retryMaxMs": 400}])
        proxy.refuse(True)
        await proxy.cut()
        await wait_event(page, "sessionReconnecting")
        assert await page.evaluate("() => s.state") == "reconnecting"

        # While cut: retry=true is queued, retry=false fails at once with 500 (not connected).
        await page.evaluate(SIGNAL_LATER, ["queued", {"type": "robot.note", "data": "kept",
                                                      "retryAfterReconnect": True}])
        refused = await page.evaluate(SIGNAL, {"type": "robot.move", "data": "{}",
                                               "retryAfterReconnect": False})
        assert refused == [500, "not connected (reconnecting)"]
        assert await page.evaluate("() => outcomes.queued") is None
        # Meanwhile the robot signals us; the hub buffers it for our connection.
        await robot.signal("robot.telemetry", "while-away", to=me, retry=True)

        proxy.refuse(False)
        await wait_event(page, "sessionReconnected")
        await page.wait_for_function("() => outcomes.queued === 'ok'", timeout=scaled(10) * 1000)
        assert await page.evaluate("() => s.connection.connectionId") == me
        assert await page.evaluate("() => s.stats.dropped") == 1

        # Exactly once each way: a sentinel sent after proves nothing more is on the way.
        assert await page.evaluate(SIGNAL, {"type": "sentinel", "to": robot.id}) is None
        await robot.wait_signal("sentinel", scaled(10))
        assert [f["data"] for f in robot.signals("robot.note")] == ["kept"]
        assert robot.signals("robot.move") == []
        await robot.signal("sentinel", to=me)
        await page.wait_for_function("() => events.some((e) => e.type === 'sentinel')",
                                     timeout=scaled(10) * 1000)
        assert [e["data"] for e in await events(page, "signal:robot.telemetry")] == ["while-away"]


async def test_a_queued_signal_arrives_with_the_time_it_was_issued(page: Page, hub: HubHandle) -> None:
    """Queued through an outage, a signal says how long it waited (queued_ms): the hub's ts is when it
    was issued, so a stale guard downstream sees its true age."""
    sid = new_session()
    async with TcpProxy("127.0.0.1", hub.port) as proxy, \
            WirePeer(hub.url, sid, hub.token(sid, data="robot")) as robot:
        await page.evaluate(JOIN, [f"ws://127.0.0.1:{proxy.port}", sid, hub.token(sid),
                                   {"retryMinMs": 50, "retryMaxMs": 200}])
        proxy.refuse(True)
        await proxy.cut()
        await wait_event(page, "sessionReconnecting")
        issued = time.time() * 1000
        await page.evaluate(SIGNAL_LATER, ["queued", {"type": "robot.move", "data": "{}", "to": robot.id}])
        await asyncio.sleep(1.2)   # the outage: its length is what is under test
        proxy.refuse(False)
        [move] = await robot.wait_signal("robot.move", scaled(10))
        assert issued - 50 <= move["ts"] <= issued + 600, (move["ts"] - issued)  # not received: > 1.2 s
        assert time.time() * 1000 - move["ts"] >= 1200


async def test_silent_link_is_detected_and_resumed(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with TcpProxy("127.0.0.1", hub.port) as proxy:
        me = await page.evaluate(JOIN, [f"ws://127.0.0.1:{proxy.port}", sid, hub.token(sid),
                                        {"pingIntervalMs": 200, "linkTimeoutMs": 800,
                                         "connectTimeoutMs": 1000, "retryMaxMs": 300}])
        proxy.blackhole(True)
        await wait_event(page, "sessionReconnecting")
        proxy.blackhole(False)
        await wait_event(page, "sessionReconnected")
        assert await page.evaluate("() => s.connection.connectionId") == me
        assert await page.evaluate(SIGNAL, {"type": "after", "data": "resume"}) is None


async def test_each_resume_uses_the_secret_of_the_latest_connected(page: Page, hub: HubHandle) -> None:
    """The hub hands out a new resume secret on every resume and refuses the old one: the library must
    resume twice in a row, each time with the secret it was given last."""
    sid = new_session()
    assert hub.hub is not None
    async with TcpProxy("127.0.0.1", hub.port) as proxy:
        me = await page.evaluate(JOIN, [f"ws://127.0.0.1:{proxy.port}", sid, hub.token(sid),
                                        {"retryMinMs": 50, "retryMaxMs": 200}])
        member = hub.hub.state.find(sid, me)
        assert member is not None
        secrets = [member.secret]
        for n in (1, 2):
            await proxy.cut()
            await wait_event(page, "sessionReconnected", n)
            secrets.append(member.secret)
        assert len(set(secrets)) == 3
        assert await page.evaluate("() => s.connection.connectionId") == me
        assert await page.evaluate(SIGNAL, {"type": "after", "data": "two resumes"}) is None


async def test_answers_lost_in_a_cut_are_settled_by_the_resume_not_sent_twice(page: Page,
                                                                              hub: HubHandle) -> None:
    sid = new_session()
    async with TcpProxy("127.0.0.1", hub.port) as proxy, \
            WirePeer(hub.url, sid, hub.token(sid, data="robot")) as robot:
        await page.evaluate(JOIN, [f"ws://127.0.0.1:{proxy.port}", sid, hub.token(sid),
                                   {"pingIntervalMs": 200, "linkTimeoutMs": 800, "connectTimeoutMs": 1000,
                                    "retryMinMs": 100, "retryMaxMs": 300}])
        proxy.blackhole(True, "down")  # browser -> hub still flows; the hub's answers are lost
        await page.evaluate(SIGNAL_LATER, ["refused", {"type": "robot.note", "to": str(uuid.uuid4())}])
        await page.evaluate(SIGNAL_LATER, ["acked", {"type": "robot.note", "data": "ack-lost",
                                                     "to": robot.id}])
        await robot.wait_signal("robot.note", scaled(10))  # the hub processed both, in order
        await wait_event(page, "sessionReconnecting")
        assert await page.evaluate("() => outcomes") == {}
        proxy.blackhole(False, "down")
        await wait_event(page, "sessionReconnected")
        # Settled from the resumed `connected` (last_id, nacks), not sent again.
        await page.wait_for_function("() => outcomes.acked === 'ok' && outcomes.refused === 404",
                                     timeout=scaled(10) * 1000)
        assert await page.evaluate("() => s.stats.sent") == 2
        assert await page.evaluate(SIGNAL, {"type": "sentinel", "to": robot.id}) is None
        await robot.wait_signal("sentinel", scaled(10))
        assert [f["data"] for f in robot.signals("robot.note")] == ["ack-lost"]


async def test_gives_up_after_the_window_and_fails_what_was_queued(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with TcpProxy("127.0.0.1", hub.port) as proxy:
        await page.evaluate(JOIN, [f"ws://127.0.0.1:{proxy.port}", sid, hub.token(sid),
                                   {"giveUpMs": 1000, "retryMinMs": 100, "retryMaxMs": 200}])
        proxy.refuse(True)
        await proxy.cut()
        await wait_event(page, "sessionReconnecting")
        await page.evaluate(SIGNAL_LATER, ["queued", {"type": "robot.note", "retryAfterReconnect": True}])
        await wait_event(page, "sessionDisconnected")
        assert [e["reason"] for e in await events(page, "sessionDisconnected")] == ["networkDisconnected"]
        await page.wait_for_function("() => outcomes.queued === 500", timeout=scaled(10) * 1000)
        assert await page.evaluate("() => s.state") == "disconnected"


async def test_disconnect_leaves_cleanly(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    async with WirePeer(hub.url, sid, hub.token(sid)) as robot:
        me = await page.evaluate(JOIN, [hub.url, sid, hub.token(sid), None])
        await page.evaluate("() => s.disconnect()")
        await wait_event(page, "sessionDisconnected")
        assert [e["reason"] for e in await events(page, "sessionDisconnected")] == ["clientDisconnected"]
        gone = await robot.wait_for(lambda fs: [f for f in fs if f.get("op") == "connection_destroyed"],
                                    scaled(10))
        assert (gone[0]["connection"]["id"], gone[0]["reason"]) == (me, "clientDisconnected")
        assert (await page.evaluate(SIGNAL, {"type": "late"}))[0] == 500


async def test_duplicates_and_malformed_frames_are_dropped(page: Page) -> None:
    """A misbehaving hub (here a scripted one) resends a seq and sends garbage: delivered once, no crash."""
    async def scripted_hub(ws: websockets.ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        assert hello["op"] == "connect"
        conn = {"id": "c-1", "data": "", "role": "publisher", "creation_time": 1}
        await ws.send(json.dumps({"op": "connected", "connection": conn, "connections": [],
                                  "resume_secret": "s", "resumed": False, "server_time": 1,
                                  "limits": {"max_type": 128, "max_data": 8192}}))
        signal = {"op": "signal", "type": "t", "from": None, "ts": 1}
        for frame in ({**signal, "seq": 1, "data": "a"}, {**signal, "seq": 1, "data": "a"}, "not json",
                      {"op": "signal", "seq": "2"}, {"op": "mystery"}, [1, 2],
                      {**signal, "seq": 2, "data": "b"}):
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        await ws.wait_closed()

    async with websockets.serve(scripted_hub, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        await page.evaluate(JOIN, [f"ws://127.0.0.1:{port}", "any", "token", None])
        await page.wait_for_function("() => events.some((e) => e.data === 'b')", timeout=scaled(10) * 1000)
        assert [e["data"] for e in await events(page, "signal")] == ["a", "b"]
        stats = await page.evaluate("() => s.stats")
        assert (stats["duplicates"], stats["malformed"]) == (1, 4)
        await page.evaluate("() => s.disconnect()")


async def test_force_disconnect_ends_the_session_without_reconnecting(page: Page, hub: HubHandle) -> None:
    sid = new_session()
    me = await page.evaluate(JOIN, [hub.url, sid, hub.token(sid), None])
    async with aiohttp.ClientSession() as http:
        resp = await http.delete(f"{hub.http_url}/v2/project/{hub.api_key}/session/{sid}/connection/{me}",
                                 headers={"X-OPENTOK-AUTH": hub.rest_jwt()})
        assert resp.status == 204
    await wait_event(page, "sessionDisconnected")
    assert [e["reason"] for e in await events(page, "sessionDisconnected")] == ["forceDisconnected"]
    assert await events(page, "sessionReconnecting") == []
    assert await page.evaluate("() => s.state") == "disconnected"


async def test_unreachable_hub_rejects_connect_with_500(page: Page) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))                 # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        code = await page.evaluate(CONNECT_ERROR, [f"ws://127.0.0.1:{port}", "lab", "token"])
    assert code == 500
