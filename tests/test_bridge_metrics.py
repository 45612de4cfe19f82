"""The bridge's /metrics (metrics: {listen: ...}) from a real `sigbridge run` on a pty, scraped over
HTTP and parsed with prometheus-client's own parser: decisions by kind, writes and refusals per
device, device and link states, the e-stop latch, the command latency histogram."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.client import SessionClient
from bridge.config import ConfigError, load_config
from tests.conftest import scaled
from tests.helpers.bridge import bridge_process
from tests.helpers.hub import running_hub
from tests.helpers.mosquitto import free_port
from tests.helpers.pty import PtyPair

SID = "metrics"
CONFIG = """\
session: {{url: "{url}", session_id: {sid}, token: "{token}"}}
devices: {{base: {{serial: {{port: "{port}", reopen_min_s: 0.05, reopen_max_s: 0.2}}}}}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}}"}}
    ack: true
safety:
  estop: {{signal: robot.estop, reset: robot.estop_reset, send: [{{device: base, line: "S"}}]}}
metrics: {{listen: "127.0.0.1:{metrics}"}}
"""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_of_a_running_bridge(tmp_path: Path) -> None:
    port = free_port()
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, sid=SID, port=pair.path, metrics=port,
                                            token=hub.token(SID, data="bridge:rover")))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, SID, hub.token(SID, role="moderator")) as op:
                await bridge.wait_for("device base: up")
                await bridge.wait_for("session: connected as")
                for x in (0.1, 0.2, 5):
                    await op.signal("robot.move", json.dumps({"x": x}))
                assert [await pair.read_line(scaled(10)) for _ in range(2)] == ["M 0.10", "M 0.20"]
                await op.signal("robot.estop", "{}")
                assert await pair.read_line(scaled(10)) == "S"
                m = await asyncio.to_thread(scrape, port)
                assert m[("sigbridge_decisions_total", (("decision", "applied"),))] == 2
                assert m[("sigbridge_decisions_total", (("decision", "rejected"),))] == 1
                assert m[("sigbridge_device_writes_total", (("device", "base"),))] == 3   # + the e-stop line
                assert m[("sigbridge_device_up", (("device", "base"),))] == 1
                assert m[("sigbridge_session_linked", ())] == 1
                assert m[("sigbridge_estopped", ())] == 1
                assert m[("sigbridge_lease_held", ())] == 0
                assert m[("sigbridge_command_latency_seconds_count", ())] == 3   # the e-stop too
                assert m[("sigbridge_command_latency_seconds_bucket", (("le", "+Inf"),))] == 3

                await op.signal("robot.estop_reset", "{}")
                pair.vanish()
                await bridge.wait_for("device base: down")
                await op.signal("robot.move", json.dumps({"x": 0.3}))
                async with asyncio.timeout(scaled(10)):
                    while (m := await asyncio.to_thread(scrape, port))[
                            ("sigbridge_decisions_total", (("decision", "device_down"),))] < 1:
                        await asyncio.sleep(0.05)
                assert m[("sigbridge_device_up", (("device", "base"),))] == 0
                assert m[("sigbridge_device_refusals_total", (("device", "base"),))] == 1
                assert m[("sigbridge_estopped", ())] == 0


@pytest.mark.parametrize("listen", ["nowhere", "127.0.0.1:99999", ":80"])
def test_a_bad_metrics_listen_is_a_config_error(tmp_path: Path, listen: str) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG.format(url="ws://127.0.0.1:1", sid=SID, port="/dev/null", token="t", metrics=1)
                    .replace('"127.0.0.1:1"}', f'"{listen}"}}'))
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert any("metrics.listen: expected HOST:PORT" in str(i) for i in e.value.errors)
