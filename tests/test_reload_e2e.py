"""SIGHUP reloads the config of a real `python -m bridge run` process: a bad file is refused (errors with
file:line logged, old rules kept), a good one is applied without dropping the session link (same
connection id) or reopening the devices, a device change is refused (needs a restart); systemd is told
RELOADING=1 ... READY=1 (the test plays its notify socket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentok import Client

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.bridge import Operator, bridge_process
from tests.helpers.hub import running_hub
from tests.helpers.pty import PtyPair


@pytest.fixture
def notify_sock() -> Iterator[socket.socket]:
    """systemd's end of $NOTIFY_SOCKET (a short path: AF_UNIX paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix="sdr-", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"{d}/notify")
    sock.setblocking(False)
    yield sock
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


async def next_note(sock: socket.socket) -> str:
    """The next state notification (READY, RELOADING, STOPPING), past watchdog pings and STATUS lines."""
    loop = asyncio.get_running_loop()
    while True:
        note = (await asyncio.wait_for(loop.sock_recv(sock, 4096), scaled(10))).decode()
        if note != "WATCHDOG=1" and not note.startswith("STATUS="):
            return note


def config_text(hub_url: str, token: str, port: str, line: str, baudrate: int = 115200,
                extra_rule: str = "", audit: str = "") -> str:
    return textwrap.dedent(f"""\
        session: {{url: "{hub_url}", session_id: r1, token: "{token}"}}
        devices: {{base: {{serial: {{port: "{port}", baudrate: {baudrate}}}}}}}
        rules:
          - signal: go
            params: {{n: {{type: int}}}}
            send: {{device: base, line: "{line}"}}
            ack: true
        {extra_rule}
        safety: {{estop: {{signal: stop, reset: reset, send: [{{device: base, line: ESTOP}}]}}}}
        {audit}
        """)


async def test_sighup_bad_file_refused_good_file_applied_without_dropping_the_link(
        tmp_path: Path, notify_sock: socket.socket) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            path = tmp_path / "bridge.yaml"
            token = hub.token("r1")
            path.write_text(config_text(hub.url, token, pair.path, "GO {n}"))
            env = {"NOTIFY_SOCKET": notify_sock.getsockname()}
            async with bridge_process(path, env) as bridge, SessionClient(
                    hub.url, "r1", hub.token("r1", role="moderator")) as c:
                op = Operator(c)
                assert (await next_note(notify_sock)).startswith("READY=1")
                await bridge.wait_for(r"device base: up")
                own = (await bridge.wait_for(r"connected as (\S+)")).split("connected as ")[1].split()[0]
                await op.send("go", {"n": 1})
                assert await pair.read_line(scaled(10)) == "GO 1"

                # 1. A bad file: refused, its errors logged with file:line, the old rules kept.
                mark = len(bridge.stderr)
                path.write_text(config_text(hub.url, token, pair.path, "GO {n} {m}"))
                bridge.proc.send_signal(signal.SIGHUP)
                assert (await next_note(notify_sock)).startswith("RELOADING=1\nMONOTONIC_USEC=")
                assert (await next_note(notify_sock)).startswith("READY=1\nSTATUS=reload refused")
                where = rf"reload: {path}:6: rules\[0\]\.send\.line: "
                await bridge.wait_for(where + r".*\{m\} is not a declared param", after=mark)
                await bridge.wait_for(r"reload refused, running config kept", after=mark)
                await op.send("go", {"n": 2})
                assert await pair.read_line(scaled(10)) == "GO 2"

                # 2. A good file, with the e-stop latched: applied live, same link, devices not reopened,
                # the latch kept; the new capabilities are announced by the same connection.
                await op.send("stop", {})
                assert await pair.read_line(scaled(10)) == "ESTOP"
                mark = len(bridge.stderr)
                audit = tmp_path / "audit.jsonl"           # the audit log is switched on by the reload
                path.write_text(config_text(hub.url, token, pair.path, "RUN {n}",
                                            extra_rule="  - {signal: hello, send: {device: base, line: HI}}",
                                            audit=f'audit: {{path: "{audit}"}}'))
                bridge.proc.send_signal(signal.SIGHUP)
                assert (await next_note(notify_sock)).startswith("RELOADING=1")
                assert (await next_note(notify_sock)).startswith("READY=1\nSTATUS=config reloaded")
                while True:      # past the announcement made when the bridge joined
                    caps = await op.next("bridge.capabilities")
                    assert caps.from_id == own
                    if [r["signal"] for r in json.loads(caps.data)["rules"]] == ["go", "hello"]:
                        break
                status = await op.next("bridge.status")
                assert json.loads(status.data)["estopped"] is True
                await op.send("go", {"n": 3})
                ack = json.loads((await op.next("bridge.ack")).data)
                assert ack["status"] == "estopped"
                await op.send("reset", {})
                await op.send("go", {"n": 4})
                assert await pair.read_line(scaled(10)) == "RUN 4"
                await op.send("hello", {})
                assert await pair.read_line(scaled(10)) == "HI"

                # 3. A device change needs a restart: refused as a whole, the running config kept.
                mark2 = len(bridge.stderr)
                path.write_text(config_text(hub.url, token, pair.path, "NEW {n}", baudrate=9600,
                                            audit=f'audit: {{path: "{audit}"}}'))
                bridge.proc.send_signal(signal.SIGHUP)
                assert (await next_note(notify_sock)).startswith("RELOADING=1")
                assert (await next_note(notify_sock)).startswith("READY=1\nSTATUS=reload refused")
                await bridge.wait_for(r"device base changed \(needs a restart\)", after=mark2)
                await op.send("go", {"n": 5})
                assert await pair.read_line(scaled(10)) == "RUN 5"

                text = "".join(bridge.stderr)
                assert text.count("connected as") == 1, text          # the link was never dropped
                assert text.count("device base: up") == 1, text       # the port was never reopened
                assert "device base: down" not in text and c.connections.get(own) is not None
                with contextlib.suppress(BlockingIOError):
                    while True:     # nothing else was said: no second READY, no STOPPING
                        note = notify_sock.recv(4096)
                        assert note == b"WATCHDOG=1" or note.startswith(b"STATUS="), note
            records = [json.loads(line) for line in audit.read_text().splitlines()]
            assert [(r["type"], r["decision"]) for r in records] == [
                ("go", "estopped"), ("reset", "applied"), ("go", "applied"), ("hello", "applied"),
                ("go", "applied")]
            assert records[2]["written"] == [{"device": "base", "line": "RUN 4"}]


async def test_sighup_with_a_renewed_token_keeps_the_link_and_the_next_connection_uses_it(
        tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            path = tmp_path / "bridge.yaml"
            token_file = tmp_path / "token"
            token_file.write_text(hub.token("r1", data="v1"))
            path.write_text(config_text(hub.url, "", pair.path, "GO {n}").replace(
                'token: ""', 'token_file: token'))
            async with bridge_process(path) as bridge, SessionClient(
                    hub.url, "r1", hub.token("r1", role="moderator")) as c:
                op = Operator(c)
                await bridge.wait_for(r"device base: up")
                first = (await bridge.wait_for(r"connected as (\S+)")).split("connected as ")[1].split()[0]
                token_file.write_text(hub.token("r1", data="v2"))      # renewal: replace the file, reload
                mark = len(bridge.stderr)
                bridge.proc.send_signal(signal.SIGHUP)
                await bridge.wait_for(r"reload: .* applied", after=mark)
                assert "connected as" not in "".join(bridge.stderr[mark:])     # the link is kept
                assert c.connections[first].data == "v1"
                # The hub ends that connection: the bridge joins again, now with the new token.
                client = Client(hub.api_key, hub.api_secret, api_url=hub.http_url, timeout=10)
                await asyncio.to_thread(client.force_disconnect, "r1", first)
                while (caps := await op.next("bridge.capabilities")).from_id == first:
                    pass
                assert caps.from_id is not None and c.connections[caps.from_id].data == "v2"
                await op.send("go", {"n": 7})
                assert await pair.read_line(scaled(10)) == "GO 7"
