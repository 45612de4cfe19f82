"""sd_notify, with the test playing systemd: a real AF_UNIX datagram socket (a path, and an abstract
one), a real child process using bridge.adapters.systemd, and the kernel's receive timestamps to measure the
watchdog interval - so a slow test process cannot distort the figures."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.adapters.systemd import Notifier, watchdog_loop
from tests.conftest import scaled
from tests.helpers.systemd import FakeSystemd

ROOT = Path(__file__).resolve().parent.parent
#: Linux's SO_TIMESTAMP (asm-generic value; Python's socket module does not export it).
SO_TIMESTAMP = 29
WATCHDOG_USEC = 200_000            # systemd WatchdogSec=0.2s -> a ping every 0.1 s
BLOCK_S = 1.0

# The "daemon": ready + status, the watchdog task, and stdin commands handled *in* the event loop:
# "block S" blocks the loop for S seconds (a stuck handler), "stop" says STOPPING=1 and exits.
CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from bridge.adapters.systemd import Notifier, watchdog_loop

    async def main() -> None:
        n = Notifier.from_env()
        assert n.enabled and n.watchdog_interval_s == 0.1, n.watchdog_interval_s
        n.ready("starting")
        n.status("serving 2 devices\\nall up")
        wd = asyncio.create_task(watchdog_loop(n))
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def command() -> None:
            line = sys.stdin.readline().split()
            if line and line[0] == "block":
                print("blocked", flush=True)
                time.sleep(float(line[1]))
            elif not line or line[0] == "stop":
                n.stopping()
                if not done.done():
                    done.set_result(None)

        loop.add_reader(sys.stdin.fileno(), command)
        await done
        wd.cancel()
        n.close()

    asyncio.run(main())
""")


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_status_watchdog_and_a_blocked_loop_stops_the_pings(kind: str, short_dir: str) -> None:
    if kind == "path":
        env_value = os.path.join(short_dir, "notify")
        bind: str | bytes = env_value
    else:
        name = f"sigbridge-test-{secrets.token_hex(6)}"
        env_value, bind = "@" + name, b"\0" + name.encode()
    systemd = FakeSystemd(bind)
    env = {**os.environ, "NOTIFY_SOCKET": env_value, "WATCHDOG_USEC": str(WATCHDOG_USEC),
           "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_PID", None)
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdin is not None and child.stdout is not None
        assert systemd.recv(scaled(20))[0] == "READY=1\nSTATUS=starting"
        assert systemd.recv(scaled(5))[0] == "STATUS=serving 2 devices all up"

        def pings(n: int) -> list[float]:
            out = []
            for _ in range(n):
                msg, stamp = systemd.recv(scaled(5))
                assert msg == "WATCHDOG=1"
                out.append(stamp)
            return out

        healthy = pings(8)
        gaps = [b - a for a, b in itertools.pairwise(healthy)]
        gaps.sort()
        # asyncio.sleep never wakes early (beyond clock granularity); a busy machine may wake late.
        assert gaps[0] >= 0.09, gaps
        assert gaps[len(gaps) // 2] <= scaled(0.3), gaps

        child.stdin.write(f"block {BLOCK_S}\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "blocked"
        after = pings(4)
        # Pings sent before the block may still be queued; the gap that spans the block is the largest.
        stamps = healthy + after
        worst = max(b - a for a, b in itertools.pairwise(stamps))
        assert worst >= BLOCK_S - 0.01, f"pings kept coming while the loop was blocked: {stamps}"
        # ...and once the loop runs again, the pings resume at their interval.
        tail = [b - a for a, b in itertools.pairwise(after[1:])]
        assert all(0.09 <= g <= scaled(1.0) for g in tail), tail

        child.stdin.write("stop\n")
        child.stdin.flush()
        while (msg := systemd.recv(scaled(5))[0]) == "WATCHDOG=1":
            pass
        assert msg == "STOPPING=1"
        assert child.wait(scaled(20)) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        systemd.close()


def test_noop_without_notify_socket() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert n.ready() is False and n.status("x") is False and n.watchdog() is False
    assert n.stopping() is False and n.reloading() is False
    n.close()


async def test_watchdog_loop_returns_at_once_when_watchdog_is_off() -> None:
    await asyncio.wait_for(watchdog_loop(Notifier.from_env({"NOTIFY_SOCKET": "@x"})), scaled(5))
    await asyncio.wait_for(watchdog_loop(Notifier.from_env({})), scaled(5))


@pytest.mark.parametrize(("env", "address", "usec"), [
    ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify", None),
    ({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "30000000"}, b"\0abc", 30_000_000),
    ({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())},
     b"\0abc", 30_000_000),
    ({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, b"\0abc", None),
    ({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "soon"}, b"\0abc", None),
    ({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "0"}, b"\0abc", None),
    ({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "-5"}, b"\0abc", None),
    ({"NOTIFY_SOCKET": "vsock:2:1234"}, None, None),
])
def test_from_env(env: dict[str, str], address: str | bytes | None, usec: int | None) -> None:
    n = Notifier.from_env(env)
    try:
        assert n.address == address
        assert n.watchdog_usec == usec
        assert n.watchdog_interval_s == (None if usec is None else usec / 2e6)
    finally:
        n.close()


def test_a_vanished_socket_is_not_an_error(short_dir: str) -> None:
    path = os.path.join(short_dir, "gone")
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    try:
        assert n.enabled
        assert n.ready() is False        # nobody listens: reported, never raised
    finally:
        n.close()
