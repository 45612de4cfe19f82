"""Deadlines on every socket of a real ``sigbridge hub`` process (issue 10): the connect frame is due
at an absolute deadline (heartbeat pongs do not move it), request heads have a read deadline, the hub
raises its own file-descriptor limit, and accept() failures are counted and logged quietly."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import websockets

from tests.helpers.attack import hub_yaml, metrics
from tests.helpers.hub import hub_process


@contextmanager
def nofile(at_least: int) -> Iterator[None]:
    """Raise this test process's own soft RLIMIT_NOFILE (it holds the idle sockets) for a while."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= at_least, f"the hard file limit {hard} is below {at_least}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, at_least), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def idle_sockets(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        out.append(s)
    return out


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def healthz_ms(port: int, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
        assert r.status == 200
    return (time.monotonic() - t0) * 1000


async def test_connect_frame_deadline_is_absolute_though_the_client_answers_pings(tmp_path: Path) -> None:
    # Heartbeat pings every 0.2 s, each answered by the client library: the deadline must not move.
    conf = hub_yaml(tmp_path, "connect_timeout_s: 1\nheartbeat_s: 0.2\n")
    with hub_process("-c", conf) as h:
        t0 = time.monotonic()
        silent = [await websockets.connect(h.session_url("s"), ping_interval=None) for _ in range(20)]

        async def until_closed(ws: websockets.ClientConnection) -> tuple[float, dict[str, object]]:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await asyncio.wait_for(ws.wait_closed(), 10)
            return time.monotonic() - t0, first

        results = await asyncio.gather(*(until_closed(ws) for ws in silent))
        slowest = max(t for t, _ in results)
        print(f"\n20 silent WebSockets (heartbeat 0.2 s, connect_timeout_s 1): all closed after "
              f"{min(t for t, _ in results):.2f}-{slowest:.2f} s")
        assert all(f["op"] == "error" and f["code"] == 401 for _, f in results)
        assert slowest < 1 + 3.0  # the deadline, plus the close handshake, plus load


def test_request_heads_have_a_read_deadline(tmp_path: Path) -> None:
    conf = hub_yaml(tmp_path, "request_head_timeout_s: 1\n")
    with hub_process("-c", conf) as h:
        idle = idle_sockets(h.port, 10)
        dribble = socket.create_connection(("127.0.0.1", h.port))
        dribble.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        closed_at: dict[int, float] = {}
        while len(closed_at) < 11 and time.monotonic() - t0 < 10:
            try:
                dribble.sendall(b"X-Slow: 1\r\n")  # a slowloris never finishes its head
            except OSError:
                closed_at.setdefault(len(idle), time.monotonic() - t0)
            for i, s in enumerate(idle):
                if i not in closed_at and closed_by_peer(s):
                    closed_at[i] = time.monotonic() - t0
            time.sleep(0.05)
        print(f"\nrequest_head_timeout_s 1: 10 idle sockets and a slowloris closed after "
              f"{min(closed_at.values(), default=-1):.2f}-{max(closed_at.values(), default=-1):.2f} s")
        assert len(closed_at) == 11 and max(closed_at.values()) < 1 + 3.0
        assert healthz_ms(h.port) < 5000
        for s in (*idle, dribble):
            s.close()


def test_healthz_answers_under_1100_idle_sockets() -> None:
    """The hub starts with the 1,024-file soft limit of a default unit (hard limit 8,192): it raises
    its own soft limit, so 1,100 idle sockets (held open well within the head deadline) do not starve
    accept() and /healthz answers at once."""
    def like_a_default_unit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 8192))

    with nofile(1400), hub_process(preexec_fn=like_a_default_unit) as h:
        idle = idle_sockets(h.port, 1100)
        try:
            times = [healthz_ms(h.port, timeout=5) for _ in range(5)]
            print(f"\n/healthz under 1,100 idle sockets: {min(times):.1f}-{max(times):.1f} ms")
            assert max(times) < 2000
            assert sum(closed_by_peer(s) for s in idle) == 0  # all still held: the hub took every one
        finally:
            for s in idle:
                s.close()


def test_accept_errors_are_counted_and_logged_at_most_once_per_interval(tmp_path: Path) -> None:
    """A hub whose hard file limit is 200 gets 400 sockets: accept() fails with EMFILE until the head
    deadline frees descriptors. No traceback per failure; one line per interval; counted."""
    def tight() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    conf = hub_yaml(tmp_path, "request_head_timeout_s: 1\n")
    with nofile(1000), hub_process("-c", conf, preexec_fn=tight) as h:
        assert h.stderr is not None
        idle = idle_sockets(h.port, 400)
        time.sleep(3.0)
        for s in idle:
            s.close()
        t0 = time.monotonic()
        while True:
            try:
                healthz_ms(h.port, timeout=2)
                break
            except OSError:
                assert time.monotonic() - t0 < 15, "/healthz did not come back"
        m = metrics(h)
        log = h.stderr()
        lines = [line for line in log.splitlines() if "cannot accept connections" in line]
        print(f"\nEMFILE: {m['sigbridge_accept_errors_total']:g} accept errors counted, {len(lines)} log "
              f"lines, {len(log)} bytes of log; /healthz back {time.monotonic() - t0:.1f} s after")
        assert m["sigbridge_accept_errors_total"] >= 1
        assert 1 <= len(lines) <= 2 and "Traceback" not in log and len(log) < 4000


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` as it is and read the hub's whole answer (it closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_unparsable_request_heads_get_a_bare_400_and_cost_the_log_one_line(tmp_path: Path) -> None:
    """aiohttp's own answer to a head it cannot parse quoted the offending bytes (here a made-up tag)
    and its log took a traceback per request. Now: the bare status with the security headers, nothing
    of the input, counted on /metrics, one log line per kind and interval."""
    bad = [b"GET /\x01<zzqx> HTTP/1.1\r\nHost: x\r\n\r\n",
           b"FOO<zzqx> / HTTP/1.1\r\n\r\n",
           b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1<zzqx>\r\n\r\n"]
    with hub_process() as h:
        assert h.stderr is not None
        for request in bad * 20:
            answer = raw_exchange(h.port, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], answer[:200]
            assert b"zzqx" not in answer and body == b"400 Bad Request\n", answer[:300]
            assert b"Content-Security-Policy: " in head and b"X-Content-Type-Options: nosniff" in head
        assert metrics(h)["sigbridge_bad_http_requests_total"] == len(bad) * 20
        log = h.stderr()
        assert "Traceback" not in log and "zzqx" not in log, log[-2000:]
        assert 1 <= sum("could not parse" in line for line in log.splitlines()) <= 2
