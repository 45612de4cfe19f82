"""Tools for the hostile-client tests (tests/test_hub_hostile*.py): a hub process's memory and metrics,
hub.yaml files, and a flooder run as a separate process (so that the test's own event loop, which
measures latency, is not the one the flood saturates)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers.hub import HubHandle, RawClient, raw_connect


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in kB (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def metrics(h: HubHandle) -> dict[str, float]:
    """The hub's /metrics page as {name{labels}: value}."""
    with urllib.request.urlopen(f"{h.http_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def hub_yaml(tmp: Path, text: str) -> str:
    path = tmp / "hub.yaml"
    path.write_text(text)
    return str(path)


def percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def latency_ms(a: RawClient, b: RawClient, n: int, interval_s: float = 0.002) -> list[float]:
    """``n`` signals a -> b one at a time, one every ``interval_s`` at most (well under the default rate
    limit of 1,000/s): ms from a's send to b's receipt. a's acks are read as they
    come (never left to pile up) by a task that ends after the n-th (never cancelled: a cancelled
    ``wait_for`` whose frame has just arrived swallows the cancellation on Python 3.11)."""
    samples: list[float] = []

    async def read_acks() -> None:
        acked = 0
        while acked < n:
            f = await a.recv(timeout=60)
            assert f["op"] in ("ack", "connection_created", "connection_destroyed"), f
            acked += f["op"] == "ack"

    acks = asyncio.create_task(read_acks())
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i * interval_s - loop.time()))  # pacing, not waiting on events
        t0 = time.perf_counter()
        await a.signal("lat", "x", to=b.id, retry=False)
        while (f := await b.recv(timeout=30))["op"] != "signal":
            assert f["op"] in ("connection_created", "connection_destroyed"), f
        samples.append((time.perf_counter() - t0) * 1000)
    await acks
    return samples


def summary(samples: list[float]) -> str:
    return (f"p50 {statistics.median(samples):.2f} ms, p99 {percentile(samples, 0.99):.2f} ms "
            f"({len(samples)} samples)")


async def connect_many(h: HubHandle, sid: str, n: int, role: str = "publisher") -> list[RawClient]:
    """``n`` connections, each with a token of its own, 20 at a time."""
    out: list[RawClient] = []
    for i in range(0, n, 20):
        out += await asyncio.gather(*(raw_connect(h, sid, role) for _ in range(min(20, n - i))))
    assert all(c.connected["op"] == "connected" for c in out)
    return out


# A flooder: connects with the tokens given on stdin (one JSON line: url, tokens, kind), then writes
# frames as fast as the socket takes them, reconnecting whenever the hub cuts it. Prints one JSON line
# per connection that ended: frames written and the close code seen.
_FLOODER = r'''
import json, os, socket, struct, sys, threading
from websockets.sync.client import connect
cfg = json.loads(sys.stdin.readline())
def frame(op, payload):
    return bytes((0x80 | op, 0x80 | len(payload))) + b"\0\0\0\0" + payload   # masked with a zero key
FRAMES = {"ping": frame(1, b'{"op":"ping","id":1}'), "junk": frame(1, b'{"op":"nope"}'),
          "wsping": frame(9, b"x"), "binary": frame(2, b"\x00\x01")}
blob = FRAMES[cfg["kind"]] * 2000
def drain(sock):
    try:
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass
def run(token):
    while True:
        try:
            ws = connect(cfg["url"], max_size=None, ping_interval=None, compression=None)
            ws.send(json.dumps({"op": "connect", "token": token}))
            if json.loads(ws.recv(timeout=10))["op"] != "connected":
                raise OSError("refused")
            sock = ws.socket
            threading.Thread(target=drain, args=(sock,), daemon=True).start()
            sent = 0
            while True:
                sock.sendall(blob)
                sent += 2000
        except Exception as e:
            print(json.dumps({"sent": locals().get("sent", 0), "error": type(e).__name__}), flush=True)
threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in cfg["tokens"]]
for t in threads: t.start()
print("started", flush=True)
threading.Event().wait()
'''


@contextlib.contextmanager
def flooder(url: str, tokens: list[str], kind: str) -> Iterator[subprocess.Popen[str]]:
    """A flooder process (see _FLOODER) writing ``kind`` frames on one connection per token."""
    proc = subprocess.Popen([sys.executable, "-c", _FLOODER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"url": url, "tokens": tokens, "kind": kind}) + "\n")
    proc.stdin.flush()
    try:
        assert proc.stdout.readline().strip() == "started"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def flooder_report(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """The lines a killed flooder printed (one per connection the hub ended)."""
    assert proc.stdout is not None
    return [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
