"""Tokens that cannot work, through the real `sigbridge` entry point against a real hub: `sigbridge run`
ends with EXIT_AUTH (which the systemd unit does not restart on) and the reason, after its on_shutdown
actions and without ever reporting READY; `sigbridge token` never generates credentials unless told to
and says where the ones it used came from."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bridge.core.tokens import mint_client_token
from bridge.daemon.runner import EXIT_AUTH
from tests.conftest import scaled
from tests.helpers.hub import HubHandle, hub_process, raw_connect, running_hub, test_credentials
from tests.helpers.pty import PtyPair

ROOT = Path(__file__).resolve().parent.parent


async def run_bridge(tmp_path: Path, url: str, token: str) -> tuple[int, str, PtyPair]:
    """`sigbridge run` until it exits by itself; its status, its stderr, and the device's pty."""
    pair = PtyPair(tmp_path / "rover")
    config = tmp_path / "bridge.yaml"
    config.write_text(textwrap.dedent(f"""\
        session: {{url: "{url}", session_id: tok, token: "{token}"}}
        devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
        rules: [{{signal: go, send: {{device: base, line: GO}}}}]
        safety: {{on_shutdown: [{{device: base, line: BYE}}]}}
        """))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "-c", str(config), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        _, err = await asyncio.wait_for(proc.communicate(), scaled(30))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace"), pair


def other_token(hub: HubHandle, session: str = "tok", role: str = "publisher") -> str:
    key, secret = test_credentials()     # credentials this hub has never seen
    return mint_client_token(api_key=key, api_secret=secret, session_id=session, role=role, now=time.time())


@pytest.mark.parametrize(("case", "words"), [
    ("subscriber", "the bridge's token has the role 'subscriber', which cannot send signals"),
    ("publisheronly", "the bridge's token has the role 'publisheronly', which cannot send signals"),
    ("other session", "the hub refused the bridge's token (403: token is for another session)"),
    ("other credentials", "the hub refused the bridge's token (401: token was issued for another API key)"),
])
async def test_a_token_that_cannot_work_ends_run_with_exit_auth(tmp_path: Path, case: str,
                                                                words: str) -> None:
    async with running_hub() as hub:
        token = {"subscriber": lambda: hub.token("tok", role="subscriber"),
                 "publisheronly": lambda: hub.token("tok", role="publisheronly"),
                 "other session": lambda: hub.token("elsewhere"),
                 "other credentials": lambda: other_token(hub)}[case]()
        status, err, pair = await run_bridge(tmp_path, hub.url, token)
        with pair:
            assert status == EXIT_AUTH, err
            assert words in err, err
            assert f"not retrying (exit status {EXIT_AUTH})" in err
            assert "READY" not in err and "Traceback" not in err
            # It stopped as on SIGTERM: at most its on_shutdown line reached the device (nothing if the
            # refusal came before the port was open).
            assert drain(pair) in (b"", b"BYE\n")


def drain(pair: PtyPair) -> bytes:
    data = b""
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(pair.master, 4096):
            data += chunk
    return data


def sigbridge_token(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "token", *args], env=env, capture_output=True,
                          text=True, timeout=scaled(60))


async def test_token_never_creates_credentials_unless_asked_and_says_where_it_read(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    state = tmp_path / "hub-state"
    refused = sigbridge_token("lab-1", "--state-dir", str(state), env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert f"no API credentials in the state directory {state}" in refused.stderr
    assert "--create" in refused.stderr and "Traceback" not in refused.stderr
    assert not state.exists()                               # nothing generated behind the user's back
    # The default state dir (HOME) is no different.
    env_home = dict(env, HOME=str(tmp_path / "home"))
    refused = sigbridge_token("lab-1", env=env_home)
    assert refused.returncode == 2
    assert str(tmp_path / "home" / ".local" / "state" / "sigbridge") in refused.stderr
    # The real order: the hub creates its credentials, `sigbridge token` reads them, the hub accepts.
    with hub_process("--state-dir", str(state), env=env) as h:
        out = sigbridge_token("lab-1", "--role", "moderator", "--state-dir", str(state), env=env)
        assert out.returncode == 0, out.stderr
        assert out.stderr == f"sigbridge token: API credentials from {state / 'credentials.json'}\n"
        c = await raw_connect(h, "lab-1", token=out.stdout.strip())
        assert c.connected["op"] == "connected" and c.connected["connection"]["role"] == "moderator"
        await c.close()
    # --create: generated (said so), and a hub on the same state dir accepts the token.
    fresh = tmp_path / "fresh"
    out = sigbridge_token("lab-2", "--state-dir", str(fresh), "--create", env=env)
    assert out.returncode == 0, out.stderr
    assert f"generated new API credentials in {fresh / 'credentials.json'}" in out.stderr
    assert json.loads((fresh / "credentials.json").read_text())["api_secret"] not in out.stdout + out.stderr
    with hub_process("--state-dir", str(fresh), env=env) as h:
        c = await raw_connect(h, "lab-2", token=out.stdout.strip())
        assert c.connected["op"] == "connected"
        await c.close()
