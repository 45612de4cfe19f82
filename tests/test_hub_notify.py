"""`sigbridge hub` speaks sd_notify for sigbridge-hub.service (Type=notify, WatchdogSec=): the test
plays systemd's side of $NOTIFY_SOCKET against a real hub process."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import urllib.request

from tests.conftest import scaled
from tests.helpers.cli import ROOT
from tests.helpers.hub import test_credentials
from tests.helpers.mosquitto import free_port
from tests.helpers.systemd import FakeSystemd


def test_hub_ready_watchdog_status_and_stopping(short_dir: str) -> None:
    systemd = FakeSystemd(os.path.join(short_dir, "notify"))
    key, secret = test_credentials()
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": os.path.join(short_dir, "notify"), "WATCHDOG_USEC": "200000",
           "SIGBRIDGE_API_KEY": key, "SIGBRIDGE_API_SECRET": secret, "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_PID", None)
    hub = subprocess.Popen([sys.executable, "-m", "bridge", "hub", "--listen", f"127.0.0.1:{port}"],
                           env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert systemd.recv(scaled(20))[0] == f"READY=1\nSTATUS=listening on ws://127.0.0.1:{port}"
        # READY means serving: the very next request is answered.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=scaled(5)) as r:
            assert r.status == 200
        stamps = []
        for _ in range(6):
            msg, stamp = systemd.recv(scaled(5))
            assert msg == "WATCHDOG=1"
            stamps.append(stamp)
        gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
        assert gaps[0] >= 0.09 and gaps[len(gaps) // 2] <= scaled(0.3), gaps   # WatchdogSec/2 = 0.1 s
        hub.send_signal(signal.SIGTERM)
        while (msg := systemd.recv(scaled(5))[0]) == "WATCHDOG=1":
            pass
        assert msg == "STOPPING=1"
        assert hub.wait(scaled(20)) == 0
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
        systemd.close()
