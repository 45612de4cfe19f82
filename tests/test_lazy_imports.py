"""`sigbridge run` imports only what its config uses (issue 16: memory and start-up on a Pi).

A real daemon process (``python -m bridge run``) drives a real pty; once its heartbeat line arrives
(the device link is running), the process is asked (SIGUSR1) to write its ``sys.modules`` to a file,
then stopped with SIGTERM. A serial-only bridge must not have imported the metrics adapter's aiohttp and
prometheus-client nor the MQTT link's aiomqtt and paho; one with an MQTT device imports paho but not
paho's optional dnspython (installed in the test environment by the camera extra's aioice); one with a
``metrics:`` block imports aiohttp (which shows the probe sees what is imported)."""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.mosquitto import free_port
from tests.helpers.pty import PtyPair

# The child: sys.modules dumped on SIGUSR1 (a Python-level handler: it runs at the loop's next wake-up,
# the 20 Hz heartbeat guarantees one), then the daemon as `sigbridge run` runs it.
CHILD = """
import json, signal, sys
def dump(*_):
    with open(sys.argv[1], "w") as f:
        json.dump(sorted(sys.modules), f)
signal.signal(signal.SIGUSR1, dump)
from bridge.cli import main
sys.exit(main(["run", "-c", sys.argv[2]]))
"""

HEAVY = ("aiohttp", "prometheus_client", "aiomqtt", "paho")


def _config(tmp: Path, port: str, *, mqtt: bool = False, metrics: bool = False) -> Path:
    # The hub port is closed: the daemon retries the session for ever and drives its devices meanwhile.
    text = f"""\
session: {{url: "ws://127.0.0.1:{free_port()}", session_id: s, token: x}}
devices:
  base: {{serial: {{port: "{port}"}}, heartbeat: {{hz: 20, line: K}}}}
"""
    if mqtt:
        text += f"  arm: {{mqtt: {{host: 127.0.0.1, port: {free_port()}}}}}\n"
    text += """\
rules:
  - signal: robot.move
    params: {x: {type: float, min: -1, max: 1}}
    send: {device: base, line: "M {x:.2f}"}
"""
    if mqtt:
        text += """\
  - signal: arm.grip
    params: {force: {type: int, min: 0, max: 100}}
    send: {device: arm, topic: arm/grip, payload: "{force}", qos: 1}
"""
    if metrics:
        text += f"metrics: {{listen: \"127.0.0.1:{free_port()}\"}}\n"
    path = tmp / "bridge.yaml"
    path.write_text(text)
    return path


def _modules(tmp: Path, **kinds: bool) -> set[str]:
    pair = PtyPair()
    out = tmp / "modules.json"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(_config(tmp, pair.path, **kinds))],
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        got = b""
        while b"K\n" not in got:      # the heartbeat: the daemon is up and its link running
            assert time.monotonic() < deadline, "no heartbeat line from the bridge"
            if select.select([pair.master], [], [], 0.5)[0]:
                got += os.read(pair.master, 4096)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGUSR1)
        while not out.exists() or not out.read_text().endswith("]"):
            assert time.monotonic() < deadline, "no module list from the bridge"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        return {name.split(".")[0] for name in json.loads(out.read_text())}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        pair.close()


def test_serial_only_bridge_imports_no_metrics_and_no_mqtt(tmp_path: Path) -> None:
    loaded = _modules(tmp_path)
    assert "serial" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_mqtt_bridge_imports_paho_without_dnspython(tmp_path: Path) -> None:
    assert importlib.util.find_spec("dns") is not None, "dnspython (aioice's) is in the test environment"
    loaded = _modules(tmp_path, mqtt=True)
    assert {"aiomqtt", "paho"} <= loaded
    assert "dns" not in loaded
    assert not loaded & {"aiohttp", "prometheus_client"}


def test_metrics_block_imports_the_metrics_adapter(tmp_path: Path) -> None:
    loaded = _modules(tmp_path, metrics=True)
    assert {"aiohttp", "prometheus_client"} <= loaded
    assert not loaded & {"aiomqtt", "paho"}


def test_paho_without_dns_leaves_dns_importable() -> None:
    """The block is for paho's import only: dnspython stays importable by anyone after it."""
    code = ("import bridge.devices.paho_client, sys; assert 'dns' not in sys.modules; "
            "assert not bridge.devices.paho_client.paho.HAVE_DNS; import dns.resolver")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


pytestmark = pytest.mark.timeout(120)
