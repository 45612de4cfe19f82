"""Hostile clients against a real ``sigbridge hub`` process over real sockets (issue 10): frames that
cannot be written out, clients that never read, dropped links piling up retry signals, connection
caps. Each test tries to break one promise of docs/security.md and prints the figures it measured.
Deadlines and sockets: tests/test_hub_sockets.py; resume and metering: tests/test_hub_metering.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import websockets

from tests.helpers.attack import connect_many, hub_yaml, metrics, proc_status_kb
from tests.helpers.hub import HubHandle, RawClient, hub_process, raw_connect

MB = 1024 * 1024
BIG = "x" * 8000  # an 8 KB signal, as in the attacks


async def _read_signals(c: RawClient, n: int, timeout: float = 60.0) -> list[dict[str, object]]:
    """The next ``n`` signal frames ``c`` receives (other frames skipped)."""
    out: list[dict[str, object]] = []
    while len(out) < n:
        f = await c.recv(timeout)
        if f["op"] == "signal":
            out.append(f)
    return out


async def test_lone_surrogates_are_refused_before_numbering_and_poison_nothing() -> None:
    with hub_process() as h:
        a, b, away = [await raw_connect(h, "s") for _ in range(3)]
        for _ in range(2):
            assert (await a.recv())["op"] == "connection_created"
        assert (await b.recv())["op"] == "connection_created"
        away.ws.transport.abort()  # a dropped link: its retry signals go to its resume buffer
        await asyncio.sleep(0.2)
        # Raw JSON: json.dumps would escape the surrogate itself; an attacker writes the escape.
        bad = [r'{"op":"signal","id":1,"type":"t","data":"\ud800","retry":true}',
               r'{"op":"signal","id":2,"type":"a\udfff","data":"d","retry":true}',
               r'{"op":"signal","id":3,"type":"t","data":"ok\ud83d","retry":true}',
               r'{"op":"signal","id":4,"type":"t","data":"d","to":"\udc00","retry":true}']
        for i, text in enumerate(bad, 1):
            await a.ws.send(text)
            answer = await a.recv()
            assert answer["op"] == "nack" and answer["id"] == i and answer["code"] == 400, answer
        # A valid astral character (a proper surrogate pair in JSON) is fine, and nothing was numbered.
        await a.ws.send(json.dumps({"op": "signal", "id": 9, "type": "estop", "data": "\U0001f6d1",
                                    "retry": True}))
        assert (await a.recv())["seq"] == 1
        assert await a.recv() == {"op": "ack", "id": 9}
        got = (await _read_signals(b, 1))[0]
        assert (got["seq"], got["data"]) == (1, "\U0001f6d1")
        back = await raw_connect(h, "s", resume={"connection_id": away.id, "last_seq": 0,
                                                 "secret": away.connected["resume_secret"]})
        assert back.connected["resumed"] is True
        replay = await _read_signals(back, 1)
        assert [(f["seq"], f["data"]) for f in replay] == [(1, "\U0001f6d1")]
        assert metrics(h)['sigbridge_malformed_frames_total{kind="invalid"}'] == 4
        for c in (a, b, back):
            await c.close()


async def _broadcaster(c: RawClient, n: int, window: int = 50) -> None:
    """Send ``n`` 8 KB retry broadcasts, at most ``window`` unacked; every ack must come (no 429)."""
    acked = sent = 0
    while acked < n:
        while sent < n and sent - acked < window:
            await c.signal("bulk", BIG, retry=True)
            sent += 1
        f = await c.recv(60)
        if f["op"] == "ack":
            acked += 1
        else:
            assert f["op"] in ("signal", "connection_created", "connection_destroyed"), f


async def test_receivers_that_never_read_are_cut_and_the_hub_stays_small(tmp_path: Path) -> None:
    """Issue 10, attack 1: 16 connections never read (but ping every second, so no heartbeat fires)
    while others broadcast 8 KB signals. Default settings."""
    with hub_process() as h:
        assert h.pid is not None
        readers = await connect_many(h, "s", 3)  # two broadcasters and one plain reader
        sleepers = await connect_many(h, "s", 16)
        for s in sleepers:
            s.ws.transport.pause_reading()
        stop = asyncio.Event()

        async def keep_pinging(c: RawClient) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                with contextlib.suppress(websockets.ConnectionClosed):
                    await c.send(op="ping", id=i)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

        pingers = [asyncio.create_task(keep_pinging(s)) for s in sleepers]
        base = proc_status_kb(h.pid, "VmRSS")
        t0 = time.monotonic()
        n = 2000
        got, *_ = await asyncio.gather(_read_signals(readers[2], 2 * n), _broadcaster(readers[0], n),
                                       _broadcaster(readers[1], n))
        took = time.monotonic() - t0
        stop.set()
        await asyncio.gather(*pingers)
        peak = proc_status_kb(h.pid, "VmHWM")
        m = metrics(h)
        growth = (peak - base) / 1024
        print(f"\nattack 1: hub RSS {base / 1024:.1f} MB before, peak {peak / 1024:.1f} MB "
              f"(+{growth:.1f} MB); {2 * n} x 8 KB broadcasts in {took:.1f} s; "
              f"slow receivers cut: {m.get('sigbridge_slow_receivers_total')}; "
              f"buffered now {m.get('sigbridge_buffered_bytes', 0) / MB:.1f} MB")
        # The legitimate reader got everything, in order per sender.
        assert len(got) == 2 * n
        for sender in (readers[0].id, readers[1].id):
            seqs = [f["seq"] for f in got if f["from"] == sender]
            assert len(seqs) == n and seqs == sorted(seqs)
        assert m["sigbridge_slow_receivers_total"] >= 16
        assert growth < 200, f"hub RSS grew by {growth:.0f} MB"
        # A cut sleeper is gone within the close linger (the hub aborts a socket that does not drain).
        s = sleepers[0]
        s.ws.transport.resume_reading()
        try:
            while True:
                await s.ws.recv()
        except websockets.ConnectionClosed as e:
            print(f"a sleeper saw close code {e.rcvd.code if e.rcvd else None} (None: aborted)")
        # And the legitimate clients still work.
        await readers[0].signal("after", "ok", to=readers[2].id)
        assert (await _read_signals(readers[2], 1))[0]["data"] == "ok"
        for c in readers:
            await c.close()


async def test_dropped_links_piling_up_retry_signals_stay_within_the_budget() -> None:
    """Issue 10, attack 2: 200 dropped links, then 1,100 8 KB retry broadcasts during the grace window.
    Default settings (resume buffers: 1 MiB each, half the 64 MiB hub budget in all)."""
    with hub_process() as h:
        assert h.pid is not None
        sender, reader = await connect_many(h, "s", 2)
        dropped = await connect_many(h, "s", 200)
        base = proc_status_kb(h.pid, "VmRSS")
        for c in dropped:
            c.ws.transport.abort()
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        n = 1100
        got, _ = await asyncio.gather(_read_signals(reader, n), _broadcaster(sender, n))
        took = time.monotonic() - t0
        peak = proc_status_kb(h.pid, "VmHWM")
        m = metrics(h)
        growth = (peak - base) / 1024
        print(f"\nattack 2: hub RSS {base / 1024:.1f} MB before, peak {peak / 1024:.1f} MB "
              f"(+{growth:.1f} MB); {n} x 8 KB retry broadcasts to 200 dropped links in {took:.1f} s; "
              f"buffered {m.get('sigbridge_buffered_bytes', 0) / MB:.1f} MB, "
              f"dropped {m['sigbridge_signals_dropped_total']:g}")
        assert [f["seq"] for f in got] == sorted(f["seq"] for f in got) and len(got) == n
        assert m["sigbridge_buffered_bytes"] <= 32 * MB
        assert m["sigbridge_signals_dropped_total"] > 0
        assert growth < 200, f"hub RSS grew by {growth:.0f} MB"
        # A dropped link that comes back gets what was kept for it, in order, within its bound.
        back = await raw_connect(h, "s", resume={"connection_id": dropped[0].id, "last_seq": 0,
                                                 "secret": dropped[0].connected["resume_secret"]})
        assert back.connected["resumed"] is True
        await sender.signal("sentinel", "end", to=back.id, retry=True)
        replay: list[dict[str, object]] = []
        while not replay or replay[-1]["type"] != "sentinel":
            replay += await _read_signals(back, 1)
        seqs = [f["seq"] for f in replay]
        assert seqs == sorted(seqs) and len(replay) - 1 <= MB // 8000
        for c in (sender, reader, back):
            await c.close()


async def test_connection_caps_per_token_address_and_session(tmp_path: Path) -> None:
    conf = hub_yaml(tmp_path, "max_connections_per_token: 2\nmax_connections_per_session: 4\n"
                              "max_connections_per_address: 6\n")
    with hub_process("-c", conf) as h:
        token = h.token("s")
        same = [await raw_connect(h, "s", token=token) for _ in range(3)]
        assert [c.connected["op"] for c in same] == ["connected", "connected", "error"]
        assert same[2].connected["code"] == 429 and "token" in same[2].connected["message"]
        more = [await raw_connect(h, "s") for _ in range(3)]
        assert [c.connected["op"] for c in more] == ["connected", "connected", "error"]
        assert "session" in more[2].connected["message"]
        # A dropped link still counts (its grace window holds the connection) ...
        same[0].ws.transport.abort()
        again = await raw_connect(h, "t", token=h.token("t"))
        assert again.connected["op"] == "connected"
        # ... and the address cap is checked before the upgrade: HTTP 429.
        for c in (same[0], same[2], more[2]):
            await c.close()  # their sockets are closed by now: 4 open
        open_now = [same[1], *more[:2], again]
        open_now += [await raw_connect(h, "t"), await raw_connect(h, "t")]
        try:
            await websockets.connect(h.session_url("t"))
            raise AssertionError("a 7th connection from one address was accepted")
        except websockets.InvalidStatus as e:
            assert e.response.status_code == 429
        m = metrics(h)
        assert {k: v for k, v in m.items() if k.startswith("sigbridge_connections_refused_total")} == {
            'sigbridge_connections_refused_total{cap="address"}': 1,
            'sigbridge_connections_refused_total{cap="session"}': 1,
            'sigbridge_connections_refused_total{cap="token"}': 1}
        assert m['sigbridge_limit{key="max_connections_per_token"}'] == 2
        for c in open_now:
            await c.close()


def test_metrics_show_every_bound_with_its_default() -> None:
    with hub_process() as h:
        m = metrics(h)
    limits = {k.split('"')[1]: v for k, v in m.items() if k.startswith("sigbridge_limit{")}
    assert limits["outbox_bytes"] == 4 * MB and limits["resume_buffer_bytes"] == MB
    assert limits["buffer_budget_bytes"] == 64 * MB and limits["max_connections_per_token"] == 32
    assert {"max_connections", "max_connections_per_address", "max_connections_per_session",
            "connect_timeout_s", "request_head_timeout_s", "rate_limit", "rate_burst"} <= set(limits)


__all__ = ["HubHandle"]
