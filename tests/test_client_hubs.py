"""A session client given several hub URLs (a fleet sharing sessions, docs/cluster.md).

The decisions (which URL next, when to wait) are pure and tested here without sockets
(``bridge.core.client.hubs``, ``ClientSession``); then the asyncio adapter against real hubs on
127.0.0.1 (memory engine): a dead first hub, a drop that must resume on the next URL, and what the
client does when the next hub does not know the connection (``resumed: false``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config
from bridge.core import wire
from bridge.core.client import ClientSession, LinkState
from bridge.core.client.hubs import HubList, hub_urls
from bridge.core.model import BridgeConfig
from bridge.core.signal import NETWORK_DISCONNECTED, Connection
from bridge.session import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionClient,
    Signal,
    SignalError,
)
from tests.helpers.cli import sigbridge
from tests.helpers.client import FAST, next_of
from tests.helpers.hub import running_hub
from tests.helpers.mosquitto import free_port
from tests.helpers.proxy import TcpProxy

SID = "lab-1"
A, B, C = "ws://a:1", "ws://b:2", "ws://c:3"
ME = Connection("me", "", "publisher", 1)


def join(core: ClientSession) -> None:
    """The hub's answer to a first connect, as the adapter hands it over."""
    reader = wire.JoinReader()
    answer = None
    for text in wire.connected_frames(ME, [], "secret-1", False, 5000, None, ()):
        answer = reader.feed(text)
    assert answer is not None
    core.joined(answer, 1.0, 1.01)


# ---- pure: which URL next ------------------------------------------------------------------------

def test_urls_from_a_string_a_comma_list_or_a_list() -> None:
    assert hub_urls(A) == (A,)
    assert hub_urls(f" {A} ,{B},{A}") == (A, B)       # spaces dropped, repeats dropped
    assert hub_urls([A, B, C]) == (A, B, C)
    for bad in ("", " ", f"{A},,{B}", [], [A, ""]):
        with pytest.raises(ValueError):
            hub_urls(bad)
    with pytest.raises(ValueError, match="string"):
        hub_urls([A, 3])  # type: ignore[list-item]


def test_first_connect_tries_each_url_once_in_order() -> None:
    hubs = HubList([A, B, C])
    assert hubs.url == A
    assert hubs.first_failed() and hubs.url == B
    assert hubs.first_failed() and hubs.url == C
    assert not hubs.first_failed()                     # all tried: the connect fails


def test_a_drop_moves_to_the_next_url_and_the_backoff_waits_once_per_round() -> None:
    hubs = HubList([A, B, C])
    hubs.link_lost()                                   # on A: the resume goes to B first
    assert hubs.url == B and hubs.round_done           # first attempt of a round: the backoff wait
    hubs.attempt_failed()
    assert hubs.url == C and not hubs.round_done       # the next hub at once
    hubs.attempt_failed()
    assert hubs.url == A and not hubs.round_done
    hubs.attempt_failed()
    assert hubs.url == B and hubs.round_done           # a whole round failed: wait again


def test_one_url_behaves_as_before() -> None:
    hubs = HubList(A)
    assert not hubs.first_failed()
    hubs.link_lost()
    assert hubs.url == A and hubs.round_done
    hubs.attempt_failed()
    assert hubs.url == A and hubs.round_done


def test_client_session_rotates_on_drop_and_waits_only_between_rounds() -> None:
    core = ClientSession(urls=[A, B], reconnect_min_s=0.5, reconnect_max_s=5.0)
    assert core.first_failed() and core.hubs.url == B  # A unreachable at the first connect
    join(core)
    assert core.connected and core.hubs.url == B
    core.link_lost(2.0)
    assert core.hubs.url == A                          # resume on the other hub
    assert core.reconnect_delay(2.0, 1.0) == 0.5       # first of the round: the backoff
    core.attempt_failed()
    assert core.state is LinkState.RECONNECTING and core.hubs.url == B
    assert core.reconnect_delay(2.5, 1.0) == 0.0       # B at once
    core.attempt_failed()
    assert core.reconnect_delay(2.5, 1.0) == 1.0       # round over: the backoff has grown
    assert core.hubs.url == A


def test_client_session_first_connect_ends_when_every_url_failed() -> None:
    core = ClientSession(urls=[A, B])
    assert core.first_failed()
    assert not core.first_failed()
    assert core.state is LinkState.CLOSED


# ---- the adapter against real hubs ---------------------------------------------------------------

async def test_first_hub_down_joins_the_second() -> None:
    async with running_hub() as dead:
        down = dead.url
        token = dead.token(SID)
    async with (running_hub(api_key=dead.api_key, api_secret=dead.api_secret) as live,
                SessionClient([down, live.url], SID, token, **FAST) as s,
                SessionClient(live.url, SID, live.token(SID)) as peer):
        assert s.uri == live.session_url(SID) and s.urls == (down, live.url)
        assert s.connection is not None and s.connection.id in peer.connections
        await peer.signal(type="t", data="hello", to=s.connection.id)
        got = await next_of(s, Signal)
        assert got.data == "hello"


async def test_every_hub_down_fails_the_connect_naming_each() -> None:
    ports = [free_port(), free_port()]
    s = SessionClient(",".join(f"ws://127.0.0.1:{p}" for p in ports), SID, "T1==x", **FAST)
    with pytest.raises(SignalError) as e:
        await s.connect()
    assert e.value.code == 500 and all(str(p) in str(e.value) for p in ports)
    assert s.state == "closed"


async def test_a_drop_resumes_on_the_next_url_not_the_same_one() -> None:
    """Two URLs of one hub (a proxy, and the hub itself): the link through the proxy drops while the
    proxy still accepts, and the resume goes to the other URL: resumed, same id, buffered signal."""
    async with running_hub(reconnect_grace_s=10.0) as h, TcpProxy("127.0.0.1", h.port) as p:
        proxied = f"ws://127.0.0.1:{p.port}"
        async with SessionClient([proxied, h.url], SID, h.token(SID), **FAST) as s, \
                SessionClient(h.url, SID, h.token(SID)) as peer:
            assert s.connection is not None and s.uri.startswith(proxied)
            mine = s.connection.id
            p.blackhole(True)                           # the old path now leads nowhere
            await p.cut()
            await next_of(s, Reconnecting)
            await peer.signal(type="t", data="while-away", to=mine)
            await next_of(s, Reconnected)
            assert s.uri == h.session_url(SID) and s.connection.id == mine
            got = await next_of(s, Signal)
            assert got.data == "while-away"
            assert p.connections == 0                    # never dialled the proxy again


async def test_next_hub_without_the_session_gives_a_fresh_connection_back_and_ends() -> None:
    """Memory engine: hub B does not know the connection, so it answers ``resumed: false`` with a new
    one. The client gives that back (``disconnect``: B's members see it come and go) and ends with
    Disconnected(networkDisconnected), as documented; the caller joins afresh."""
    async with (running_hub() as a, running_hub(api_key=a.api_key, api_secret=a.api_secret) as b,
                TcpProxy("127.0.0.1", a.port) as p,
                SessionClient([f"ws://127.0.0.1:{p.port}", b.url], SID, a.token(SID), **FAST) as s,
                SessionClient(b.url, SID, b.token(SID)) as on_b):
        assert s.connection is not None
        mine = s.connection.id
        p.refuse(True)
        await p.cut()
        await next_of(s, Reconnecting)
        ended = await next_of(s, Disconnected)
        assert ended.reason == NETWORK_DISCONNECTED and s.state == "closed"
        fresh = await next_of(on_b, ConnectionCreated)
        assert fresh.connection.id != mine
        gone = await next_of(on_b, ConnectionDestroyed)
        assert gone.connection.id == fresh.connection.id and gone.reason == "clientDisconnected"


# ---- the list in bridge.yaml and on the command line ---------------------------------------------

BRIDGE_YAML = """\
session:
  url: {url}
  session_id: lab-1
  token: T1
devices:
  base: {{serial: {{port: /dev/null}}}}
"""


def load(tmp_path: Path, url: str) -> BridgeConfig:
    path = tmp_path / "bridge.yaml"
    path.write_text(BRIDGE_YAML.format(url=url), encoding="utf-8")
    return load_config(path, {})


def test_session_url_may_be_a_list(tmp_path: Path) -> None:
    config = load(tmp_path, f"[{A}, {B}]")
    assert config.session.hub_urls == (A, B) and config.session.url == A
    assert load(tmp_path, A).session.hub_urls == (A,)


@pytest.mark.parametrize(("url", "where", "what"), [
    (f"[{A}, http://b:2]", "session.url[1]", "ws:// or wss://"),
    (f"[{A}, {A}]", "session.url[1]", "listed twice"),
    ("[]", "session.url", ""),
    (f"'{A},{B}'", "session.url", "ws:// or wss://"),      # a list is a YAML list, not commas
])
def test_a_bad_url_in_the_list_is_a_clear_error(tmp_path: Path, url: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, url)
    assert where in str(e.value) and what in str(e.value)


async def test_send_takes_url_repeated_or_comma_separated() -> None:
    async with running_hub() as h, SessionClient(h.url, SID, h.token(SID)) as watcher:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_") or k.endswith("_SCALE")}
        dead = f"ws://127.0.0.1:{free_port()}"
        for urls in (["--url", dead, "--url", h.url], ["--url", f"{dead},{h.url}"]):
            code, _, err = await sigbridge("send", "t", "via-list", *urls, "--session", SID,
                                           "--token", h.token(SID), env=env)
            assert (code, err) == (0, "")
            assert (await next_of(watcher, Signal)).data == "via-list"
        code, _, err = await sigbridge("send", "t", "--url", f"{h.url},http://x", "--session", SID,
                                       "--token", h.token(SID), env=env)
        assert code == 2 and "http://x" in err
