"""A bridge can always join, whatever the size of the session (issue 10, item 5).

A real ``sigbridge hub`` process holds a session of 1,500 connections, opened by a lean raw WebSocket
loop (each filler joins and drops its link: the hub keeps it for its grace window, so it stays a
member without a socket to feed). Then the Python client, ``sigbridge run`` and the browser client
join it: every frame of the join stays under the clients' 64 KiB frame limit (the member list comes in
``connections`` pages after ``connected``) and each of them sees all 1,500 members. The pure test checks the
frames of a 3,000-member join.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client import SessionClient
from bridge.core import wire
from bridge.core.events import ConnectionCreated, ConnectionDestroyed, Reconnected
from bridge.core.signal import MAX_FRAME_BYTES, Connection
from bridge.core.wire import ConnectionsPage, parse_hub_frame
from tests.conftest import scaled
from tests.helpers.bridge import Operator, bridge_process
from tests.helpers.browser import running_browser
from tests.helpers.hub import HubHandle, hub_process
from tests.helpers.pty import PtyPair

SESSION = "crowd"
MEMBERS = 3000      # the pure test: frames for a session this size
# The real hub: every joiner is sent the whole member list, so filling costs O(n^2) in the hub; 1,500
# keeps that under a minute on a loaded 2-core machine while the list (150 members with 2 KB of data)
# is still several times the 64 KiB frame limit, so it can only arrive in pages.
E2E_MEMBERS = 1500
LONG_DATA = "é" * 1000  # the longest connection data, 2 bytes a character: some pages hold few members
assert (E2E_MEMBERS // 10) * len(LONG_DATA.encode()) > 4 * MAX_FRAME_BYTES


def _utf8(frame: str) -> int:
    return len(frame.encode("utf-8", "surrogatepass"))


def test_join_frames_stay_under_the_frame_limit_and_hold_everyone() -> None:
    """The pure part: whatever the members, every frame of a join fits, and together they list all."""
    me = Connection("me", "\x01" * 1000, "publisher", 1, "t" * 16)  # escaped: 6 bytes a character
    others = [Connection(f"c{i:05}", LONG_DATA if i % 3 else f"op {i}", "publisher", i, f"{i:016x}")
              for i in range(MEMBERS)]
    nacks = tuple((i, 429, "rate limit exceeded, slow down" * 3) for i in range(256))
    for kwargs in ({}, {"last_id": 300, "nacks": nacks}):
        frames = wire.connected_frames(me, others, "secret", bool(kwargs), 7, **kwargs)  # type: ignore[arg-type]
        assert all(_utf8(f) <= wire.JOIN_FRAME_BUDGET < MAX_FRAME_BYTES for f in frames)
        hello, pages = parse_hub_frame(frames[0]), [parse_hub_frame(f) for f in frames[1:]]
        assert all(isinstance(p, ConnectionsPage) for p in pages) and len(pages) > 40
        assert [p.more for p in pages] == [True] * (len(pages) - 1) + [False]  # type: ignore[union-attr]
        assert hello.more and hello.connection == me  # type: ignore[union-attr]
        listed = [*hello.connections] + [c for p in pages for c in p.connections]  # type: ignore[union-attr]
        assert listed == others
    small = wire.connected_frames(me, others[:3], "s", False, 7)
    assert len(small) == 1 and "more" not in json.loads(small[0])  # a small session: v1 as it was


# ---- a real hub holding 1,500 connections --------------------------------------------------------

def _ws_frame(text: str) -> bytes:
    """One masked client text frame (RFC 6455 5.2) with a zero mask: payload bytes as they are."""
    payload = text.encode()
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + b"\0\0\0\0" + payload


async def _fill(hub: HubHandle, count: int, workers: int = 24) -> None:
    """Open ``count`` connections, each joining with its own token and dropping its link once the hub
    answered: raw sockets, a hand-written upgrade and connect frame, no client library."""
    tokens = [hub.token(SESSION, data=LONG_DATA if i % 10 == 0 else f"filler {i}", ttl=3600)
              for i in range(count)]
    upgrade = (f"GET /v1/session/{SESSION} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n").encode()

    async def one(token: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        try:
            writer.write(upgrade + _ws_frame(json.dumps({"op": "connect", "token": token})))
            status = await reader.readuntil(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 101"), status[:80]
            first = await reader.readexactly(2)  # the answer's frame header: the hub has joined us
            assert first[0] == 0x81, first
        finally:
            writer.transport.abort()  # a dropped link: the connection stays for its grace window

    async def worker(mine: list[str]) -> None:
        for token in mine:
            await one(token)

    await asyncio.gather(*(worker(tokens[w::workers]) for w in range(workers)))


@pytest.fixture(scope="module")
def crowded_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubHandle]:
    config = tmp_path_factory.mktemp("hub") / "hub.yaml"
    config.write_text("reconnect_grace_s: 600\n")   # the fillers stay members for the whole module
    with hub_process("-c", str(config)) as hub:
        started = time.perf_counter()
        asyncio.run(_fill(hub, E2E_MEMBERS))
        print(f"\n{E2E_MEMBERS} connections opened in {time.perf_counter() - started:.1f} s")
        yield hub


@pytest.fixture
def crowd(crowded_hub: HubHandle) -> HubHandle:
    return crowded_hub


async def test_python_client_joins_and_resumes_with_every_member(crowd: HubHandle) -> None:
    """Joined: all 1,500 in ``connections`` and as ConnectionCreated events. Resumed after a drop: the
    member list, paged again, reconciles to the same session (no member reported gone)."""
    async with SessionClient(crowd.url, SESSION, crowd.token(SESSION), reconnect_min_s=0.05,
                             event_queue_size=2 * E2E_MEMBERS) as c:
        assert len(c.connections) == E2E_MEMBERS
        created = 0
        while not c._events.empty():
            created += isinstance(c._events.get_nowait(), ConnectionCreated)
        assert created == E2E_MEMBERS
        assert c._ws is not None
        c._ws.transport.abort()   # the link drops; the client resumes it
        events = []
        async with asyncio.timeout(scaled(20)):
            async for event in c.events():
                events.append(event)
                if isinstance(event, Reconnected):
                    break
        await c.ping()  # the resumed connected and its pages are all in
        assert not [e for e in events if isinstance(e, ConnectionDestroyed)]
        assert len(c.connections) == E2E_MEMBERS and c.stats["reconnects"] == 1


async def test_sigbridge_run_joins_a_session_of_1500(crowd: HubHandle, tmp_path: Path) -> None:
    """The bridge daemon joins, says READY, and answers an operator in the same crowded session."""
    with PtyPair(tmp_path / "rover") as pair:
        config = tmp_path / "bridge.yaml"
        config.write_text(textwrap.dedent(f"""\
            session: {{url: "{crowd.url}", session_id: {SESSION}, token: "{crowd.token(SESSION)}"}}
            devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
            rules:
              - {{signal: go, params: {{n: {{type: int}}}}, send: {{device: base, line: "GO {{n}}"}}}}
            """))
        async with bridge_process(config) as bridge:
            await bridge.wait_for(r"READY", timeout=30)
            async with SessionClient(crowd.url, SESSION, crowd.token(SESSION, role="moderator")) as c:
                Operator(c)
                await c.signal("go", '{"n": 7}')
                assert await pair.read_line(scaled(10)) == "GO 7"


async def test_browser_client_joins_with_every_member(crowd: HubHandle) -> None:
    async with running_browser() as browser:
        page = await browser.new_page()
        await page.goto(f"{crowd.http_url}/")
        size = await page.evaluate(
            """async ([url, session, token]) => {
                 const { connect } = await import('/sigbridge.js');
                 const s = await connect(url, session, token);
                 const n = s.connections.size;
                 s.disconnect();
                 return n;
               }""", [crowd.url, SESSION, crowd.token(SESSION)])
        assert size == E2E_MEMBERS
