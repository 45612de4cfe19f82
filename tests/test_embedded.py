"""The embedded session (``session.embedded``): a real ``sigbridge run`` process hosting its session,
real WebSocket operators on 127.0.0.1, a real pty. One hop: no hub process anywhere in these tests.

What each test proves:
- the operator's SessionClient drives the pty, gets telemetry back, the console page is served, the
  token comes from ``sigbridge token --state-dir`` against the bridge's own state dir, REST signals
  (``from`` null) reach the operator and the device, and the operator leaving runs on_disconnect;
- refusals are the separate hub's: no token, a forged token, a subscriber's signal (403), a stale
  signal (``queued_ms`` ages it past ``max_age_ms``: refused, nothing written);
- SIGTERM mid-stream: STOP is the device's last line, exit 0, and the operator sees the bridge leave;
- a moderator forcing the bridge out: on_disconnect on the device, the bridge joins again and drives;
- a config with both ``url`` and ``embedded`` is refused by ``sigbridge run`` (exit 2).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bridge.client import SessionClient, SignalError
from bridge.core.events import ConnectionDestroyed
from bridge.core.tokens import mint_client_token
from tests.conftest import scaled
from tests.helpers.bridge import Bridge, Operator, ack, bridge_process
from tests.helpers.hub import HubHandle, raw_connect
from tests.helpers.mosquitto import free_port
from tests.helpers.poll import until
from tests.helpers.pty import PtyPair

CONFIG = """\
session:
  session_id: lab
  embedded: {{listen: "127.0.0.1:{port}", state_dir: state}}
devices:
  base: {{serial: {{port: "{tty}", reopen_min_s: 0.05, reopen_max_s: 0.2}}}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}}"}}
    max_age_ms: 2000
    ack: true
    allow_rest: true
telemetry:
  - {{device: base, match: '^T (?P<battery>\\d+)$', signal: robot.telemetry}}
safety:
  on_disconnect: [{{device: base, line: OFFLINE}}]
  on_shutdown: [{{device: base, line: STOP}}]
{lease}"""

LEASE = """  on_controller_lost: [{device: base, line: "M 0"}]
control: {lease: true}
"""


def write_config(tmp_path: Path, tty: str, lease: bool = False) -> tuple[Path, int]:
    port = free_port()
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG.format(port=port, tty=tty, lease=LEASE if lease else ""))
    return path, port


def handle(tmp_path: Path, port: int) -> HubHandle:
    """The embedded hub's address and the credentials it made in its state dir."""
    creds = json.loads((tmp_path / "state" / "credentials.json").read_text())
    return HubHandle(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", port, creds["api_key"],
                     creds["api_secret"])


def cli_token(tmp_path: Path, role: str) -> str:
    """``sigbridge token lab --state-dir DIR``: what an operator would run on the robot."""
    out = subprocess.run([sys.executable, "-m", "bridge", "token", "lab", "--role", role, "--state-dir",
                          str(tmp_path / "state")], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


async def started(bridge: Bridge) -> None:
    await bridge.wait_for(r"READY connected to .*\(embedded\)")
    await bridge.wait_for(r"device base: up")


async def test_operator_drives_the_pty_in_one_hop(tmp_path: Path) -> None:
    with PtyPair() as pair:
        config, port = write_config(tmp_path, pair.path)
        async with bridge_process(config) as bridge:
            await started(bridge)
            h = handle(tmp_path, port)
            async with SessionClient(h.url, "lab", cli_token(tmp_path, "moderator")) as client:
                op = Operator(client)
                # The bridge is a member of its own session, marked as a bridge for the console.
                bridges = [c for c in client.connections.values() if c.data == "bridge"]
                assert len(bridges) == 1, client.connections
                await op.send("robot.move", {"x": 0.5})
                assert await pair.read_line(scaled(10)) == "M 0.50"
                assert (await ack(op))["status"] == "applied"

                pair.write_line("T 87")
                telemetry = await op.next("robot.telemetry")
                assert json.loads(telemetry.data)["battery"] == 87 and telemetry.from_id == bridges[0].id

                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{h.http_url}/") as page:
                        assert page.status == 200 and "<html" in (await page.text()).lower()
                    url = f"{h.http_url}/v2/project/{h.api_key}/session/lab/signal"
                    body = {"type": "robot.move", "data": json.dumps({"x": -0.25})}
                    async with http.post(url, json=body, headers={"X-OPENTOK-AUTH": h.rest_jwt()}) as r:
                        assert r.status == 204, await r.text()
                    async with http.post(url, json=body, headers={"X-OPENTOK-AUTH": "forged"}) as r:
                        assert r.status in (401, 403)
                assert await pair.read_line(scaled(10)) == "M -0.25"
                rest = await op.next("robot.move")
                assert rest.from_id is None     # REST: from null, as with the separate hub
            assert "Traceback" not in "".join(bridge.stderr), "".join(bridge.stderr)[-2000:]


async def test_the_operator_leaving_runs_the_safe_action(tmp_path: Path) -> None:
    """The lease holder's connection destroyed (it left) -> safety.on_controller_lost on the device."""
    with PtyPair() as pair:
        config, port = write_config(tmp_path, pair.path, lease=True)
        async with bridge_process(config) as bridge:
            await started(bridge)
            h = handle(tmp_path, port)
            async with SessionClient(h.url, "lab", h.token("lab", role="moderator")) as client:
                op = Operator(client)
                await op.send("control.acquire", {})
                assert (await ack(op))["status"] == "granted"
                await op.send("robot.move", {"x": 0.7})
                assert await pair.read_line(scaled(10)) == "M 0.70"
            assert await pair.read_line(scaled(10)) == "M 0"


async def test_refusals_are_the_hubs(tmp_path: Path) -> None:
    with PtyPair() as pair:
        config, port = write_config(tmp_path, pair.path)
        async with bridge_process(config) as bridge:
            await started(bridge)
            h = handle(tmp_path, port)
            with pytest.raises(SignalError) as no_token:
                await SessionClient(h.url, "lab", "").connect()
            assert no_token.value.code in (400, 401)    # as the separate hub answers it
            forged = mint_client_token(api_key=h.api_key, api_secret="not-the-secret-" * 4, session_id="lab",
                                       role="moderator", now=time.time())
            with pytest.raises(SignalError) as bad:
                await SessionClient(h.url, "lab", forged).connect()
            assert bad.value.code == 401
            with pytest.raises(SignalError) as wrong:
                await SessionClient(h.url, "lab", h.token("other-session")).connect()
            assert wrong.value.code in (401, 403)

            async with SessionClient(h.url, "lab", h.token("lab", role="subscriber")) as sub:
                with pytest.raises(SignalError) as denied:
                    await sub.signal("robot.move", json.dumps({"x": 0.1}))
                assert denied.value.code == 403

            raw = await raw_connect(h, "lab", role="publisher")
            assert raw.connected["op"] == "connected"
            # A signal that waited 5 s in its sender's queue: its ts is 5 s old, past max_age_ms.
            await raw.send(op="signal", id=1, type="robot.move", data=json.dumps({"x": 0.3}), retry=True,
                           queued_ms=5000)
            answer = None
            async with asyncio.timeout(scaled(10)):
                while answer is None:
                    frame = await raw.recv()
                    if frame.get("op") == "signal" and frame.get("type") == "bridge.ack":
                        answer = json.loads(frame["data"])
            assert answer["status"] == "stale", answer
            # A fresh one goes through: the pty's first line is it, so the stale one wrote nothing.
            await raw.signal("robot.move", json.dumps({"x": 0.4}))
            assert await pair.read_line(scaled(10)) == "M 0.40"
            await raw.close()


async def test_sigterm_leaves_the_device_safe(tmp_path: Path) -> None:
    with PtyPair() as pair:
        config, port = write_config(tmp_path, pair.path)
        async with bridge_process(config) as bridge:
            await started(bridge)
            h = handle(tmp_path, port)
            async with SessionClient(h.url, "lab", h.token("lab", role="moderator"),
                                     give_up_s=0.5) as client:
                seen: list[object] = []
                client.set_event_handler(seen.append)

                async def stream() -> None:
                    n = 0
                    while True:
                        n += 1
                        try:
                            await client.signal("robot.move", json.dumps({"x": (n % 9) / 10}))
                        except SignalError:
                            return
                        await asyncio.sleep(0.02)

                pump = asyncio.create_task(stream())
                lines = [await pair.read_line(scaled(10)) for _ in range(3)]
                exited = asyncio.ensure_future(bridge.proc.wait())
                bridge.proc.send_signal(signal.SIGTERM)
                while True:
                    try:
                        lines.append(await pair.read_line(0.3))
                    except TimeoutError:
                        if exited.done():
                            break
                assert await exited == 0, "".join(bridge.stderr)
                pump.cancel()
            assert lines.count("STOP") == 1 and lines[-1] == "STOP", lines[-10:]
            assert sum(line.startswith("M ") for line in lines) >= 3, lines
            # The bridge left its session before the hub closed: the operator was told.
            left = [e for e in seen if isinstance(e, ConnectionDestroyed) and e.connection.data == "bridge"]
            assert left, seen


async def test_forced_out_the_bridge_runs_on_disconnect_and_joins_again(tmp_path: Path) -> None:
    """A moderator forcing the bridge's own member out ends its membership: on_disconnect on the
    device, then the bridge joins its session again as a new connection and drives again."""
    with PtyPair() as pair:
        config, port = write_config(tmp_path, pair.path)
        async with bridge_process(config) as bridge:
            await started(bridge)
            h = handle(tmp_path, port)
            async with SessionClient(h.url, "lab", h.token("lab", role="moderator")) as client:
                [first] = [c.id for c in client.connections.values() if c.data == "bridge"]
                mark = bridge.mark()
                await client.force_disconnect(first)
                assert await pair.read_line(scaled(10)) == "OFFLINE"
                await bridge.wait_for(r"session: connected as", after=mark)
                await until(lambda: [c for c in client.connections.values() if c.data == "bridge"])
                [again] = [c.id for c in client.connections.values() if c.data == "bridge"]
                assert again != first
                await client.signal("robot.move", json.dumps({"x": 0.2}))
                assert await pair.read_line(scaled(10)) == "M 0.20"


def test_url_and_embedded_together_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(port=free_port(), tty="/dev/null", lease="").replace(
        "  session_id: lab\n", "  session_id: lab\n  url: ws://127.0.0.1:8765\n"))
    run = subprocess.run([sys.executable, "-m", "bridge", "run", "-c", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "session.url" in run.stderr and "embedded" in run.stderr, run.stderr
    assert not (tmp_path / "state").exists()    # refused before anything was served or created
