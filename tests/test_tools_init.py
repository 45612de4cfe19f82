"""`sigbridge init` through the real entry point: non-interactive with flags, and once interactively
with answers on stdin. What it writes passes `sigbridge check`, the token file is 0600 with a role that
can send and the bridge mark, tokens that cannot serve are refused, nothing is overwritten without
--force, and the written config really drives a pty through a real hub."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from bridge.client import SessionClient
from bridge.core.tokens import verify_client_token
from bridge.tools.init import probe_mqtt
from tests.conftest import scaled
from tests.helpers.bridge import bridge_process
from tests.helpers.cli import sigbridge, until_others
from tests.helpers.hub import running_hub
from tests.helpers.mosquitto import Mosquitto, free_port
from tests.helpers.pty import PtyPair

KEY, SECRET = "12345678", "s" * 40


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_") or k.endswith("_SCALE")}
    by_id = tmp_path / "by-id"
    by_id.mkdir(exist_ok=True)
    e.update(SIGBRIDGE_SERIAL_BY_ID=str(by_id), SIGBRIDGE_API_KEY=KEY, SIGBRIDGE_API_SECRET=SECRET)
    e.update(extra)
    return e


def flags(tmp_path: Path, *more: str) -> list[str]:
    return ["init", "--yes", "--dir", str(tmp_path / "etc"), "--url", "ws://hub.example:8765",
            "--session", "lab-1", *more]


def claims(token_file: Path, session: str = "lab-1") -> tuple[str, str]:
    grant = verify_client_token(token_file.read_text().strip(), api_key=KEY, api_secret=SECRET,
                                session_id=session, now=time.time())
    return grant.role, grant.data


async def test_flags_only_writes_a_config_that_passes_check_and_a_0600_token(tmp_path: Path,
                                                                             mosquitto: Mosquitto) -> None:
    port = tmp_path / "by-id" / "usb-FTDI_FT232R-if00-port0"
    code, out, err = await sigbridge(*flags(tmp_path, "--mint", "--serial", str(port), "--mqtt",
                                            f"127.0.0.1:{mosquitto.port}"), env=env(tmp_path))
    assert code == 0, err
    config, token = tmp_path / "etc" / "bridge.yaml", tmp_path / "etc" / "token"
    assert f"wrote {config} (passes sigbridge check)" in out and "note:" not in out   # the broker answered
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert claims(token) == ("publisher", "bridge:robot")
    code, summary, err = await sigbridge("check", str(config))
    assert code == 0, err
    assert f"devices: base (serial: {port}), broker (mqtt: 127.0.0.1:{mosquitto.port})" in summary
    # The unit is printed (not installed) with this config.
    assert f" run -c {config.resolve()}\n" in out and "RestartPreventExitStatus=78" in out


async def test_the_first_by_id_port_and_no_broker_when_none_answers(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    for name in ("usb-b-port0", "usb-a-port0"):
        (by_id / name).symlink_to("/dev/null")
    closed = free_port()
    code, out, err = await sigbridge(*flags(tmp_path, "--mint"), env=env(tmp_path))
    assert code == 0, err
    text = (tmp_path / "etc" / "bridge.yaml").read_text()
    assert f'port: "{by_id}/usb-a-port0"' in text and "mqtt:" not in text
    assert "no MQTT broker answers on 127.0.0.1:1883" in out or probe_mqtt("127.0.0.1", 1883)
    # Given explicitly, an unreachable broker is kept and said.
    code, out, _ = await sigbridge(*flags(tmp_path, "--mint", "--force", "--serial", "none", "--mqtt",
                                          f"127.0.0.1:{closed}"), env=env(tmp_path))
    assert code == 0 and f"note: no MQTT broker answers on 127.0.0.1:{closed}" in out


def test_probe_mqtt_needs_a_real_broker(mosquitto: Mosquitto) -> None:
    assert probe_mqtt("127.0.0.1", mosquitto.port)
    assert not probe_mqtt("127.0.0.1", free_port())


@pytest.mark.parametrize(("role", "data", "session", "words"), [
    ("subscriber", "bridge:robot", "lab-1", "its role is 'subscriber'"),
    ("publisheronly", "bridge:robot", "lab-1", "its role is 'publisheronly'"),
    ("publisher", "operator=ann", "lab-1", "not bridge or bridge:NAME"),
    ("publisher", "bridge:robot", "lab-2", "it is for session 'lab-2'"),
])
async def test_a_token_that_cannot_serve_the_bridge_is_refused_and_nothing_written(
        tmp_path: Path, role: str, data: str, session: str, words: str) -> None:
    from bridge.core.tokens import mint_client_token
    token = mint_client_token(api_key=KEY, api_secret=SECRET, session_id=session, role=role, data=data,
                              now=time.time())
    code, _, err = await sigbridge(*flags(tmp_path, "--serial", "/dev/ttyUSB0", "--mqtt", "none"),
                                   env=env(tmp_path, SIGBRIDGE_TOKEN=token))
    assert code == 1 and words in err, err
    assert not (tmp_path / "etc").exists()


async def test_existing_files_are_kept_without_force(tmp_path: Path) -> None:
    args = flags(tmp_path, "--mint", "--serial", "/dev/ttyUSB0", "--mqtt", "none")
    assert (await sigbridge(*args, env=env(tmp_path)))[0] == 0
    token = (tmp_path / "etc" / "token").read_text()
    code, _, err = await sigbridge(*args, env=env(tmp_path))
    assert code == 1 and "exists (use --force" in err
    assert (tmp_path / "etc" / "token").read_text() == token
    assert (await sigbridge(*args, "--force", env=env(tmp_path)))[0] == 0
    assert (tmp_path / "etc" / "token").read_text() != token


async def test_missing_answers_with_yes_are_an_error(tmp_path: Path) -> None:
    code, _, err = await sigbridge("init", "--yes", "--dir", str(tmp_path), "--serial", "/dev/ttyUSB0",
                                   "--mqtt", "none", env=env(tmp_path))
    assert code == 1 and "no answer for: hub URL" in err


async def test_install_writes_the_unit(tmp_path: Path) -> None:
    units = tmp_path / "units"
    code, out, err = await sigbridge(*flags(tmp_path, "--mint", "--serial", "/dev/ttyUSB0", "--mqtt", "none",
                                            "--install", "--unit-dir", str(units)), env=env(tmp_path))
    assert code == 0, err
    unit = (units / "sigbridge.service").read_text()
    assert f"run -c {(tmp_path / 'etc' / 'bridge.yaml').resolve()}" in unit and "[Install]" in unit
    assert "systemctl daemon-reload && systemctl enable --now sigbridge" in out


async def test_interactive_answers_on_stdin_drive_a_real_pty_through_a_real_hub(tmp_path: Path) -> None:
    async with running_hub() as hub:
        by_id = tmp_path / "by-id"
        by_id.mkdir()
        with PtyPair(by_id / "usb-b-rover-port0") as rover:
            (by_id / "usb-a-other-port0").symlink_to("/dev/null")
            closed = free_port()
            answers = f"2\n{hub.url}\nlab-1\n".encode()   # port 2 (the rover), hub URL, session
            e = env(tmp_path, SIGBRIDGE_API_KEY=hub.api_key, SIGBRIDGE_API_SECRET=hub.api_secret)
            code, out, err = await sigbridge("init", "--dir", str(tmp_path / "etc"), "--mint",
                                             "--mqtt", f"127.0.0.1:{closed}", "--name", "rover",
                                             env=e, stdin=answers)
            assert code == 0, err
            assert "serial ports found:\n" in out and f"  2) {rover.path}" in out
            assert "hub URL (ws://HOST:8765, or wss:// with TLS): " in out
            config = tmp_path / "etc" / "bridge.yaml"
            async with bridge_process(config) as bridge:
                await bridge.wait_for("session: connected as")
                async with SessionClient(hub.url, "lab-1", hub.token("lab-1", "publisher")) as op:
                    await until_others(op, 1)
                    [b] = op.connections.values()
                    assert (b.role, b.data) == ("publisher", "bridge:rover")
                    await op.signal("robot.move", json.dumps({"x": 0.25, "y": -2}))
                    assert await rover.read_until(b"\n", scaled(10)) == b"M 0.25 -1.00\n"
