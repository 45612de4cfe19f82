"""`sigbridge send` / `sigbridge listen` as real subprocesses against an in-process hub."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.session import ConnectionCreated, SessionClient, Signal
from tests.conftest import scaled
from tests.helpers.client import next_of, signals_until
from tests.helpers.hub import HubHandle, running_hub

SID = "lab-1"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    async with running_hub() as h:
        yield h


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_") or k.endswith("_SCALE")}
    env.update(extra)
    return env


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=ROOT, env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), scaled(30))
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def flags(h: HubHandle, role: str = "publisher") -> list[str]:
    return ["--url", h.url, "--session", SID, "--token", h.token(SID, role)]


async def test_send_exits_0_when_acked_and_the_signal_arrives(hub: HubHandle) -> None:
    async with SessionClient(hub.url, SID, hub.token(SID)) as watcher:
        code, _, err = await run("send", "robot.move", '{"x":0.5}', *flags(hub))
        assert (code, err) == (0, "")
        got = await next_of(watcher, Signal)
        assert (got.type, got.data) == ("robot.move", '{"x":0.5}')


async def test_send_to_one_connection_from_the_environment(hub: HubHandle) -> None:
    async with SessionClient(hub.url, SID, hub.token(SID)) as target, \
            SessionClient(hub.url, SID, hub.token(SID)) as other:
        assert target.connection is not None
        env = clean_env(SIGBRIDGE_URL=hub.url, SIGBRIDGE_SESSION=SID, SIGBRIDGE_TOKEN=hub.token(SID))
        code, _, err = await run("send", "arm.grip", "7", "--to", target.connection.id, "--no-retry", env=env)
        assert (code, err) == (0, "")
        await other.signal(type="end", data="END")
        assert [(s.type, s.data) for s in await signals_until(target, "END")] == [("arm.grip", "7")]
        assert await signals_until(other, "END") == []


@pytest.mark.parametrize("args, role, expected", [
    (["bad type!"], "publisher", "error 400: signal type may only hold"),
    (["t" * 129], "publisher", "error 413: signal type is 129 characters"),
    (["t", "x", "--to", "no-such-connection"], "publisher", "error 404: "),
    (["t", "x"], "subscriber", "error 403: role subscriber may not send"),
])
async def test_send_refused_exits_1_with_the_code(hub: HubHandle, args: list[str], role: str,
                                                  expected: str) -> None:
    code, out, err = await run("send", *args, *flags(hub, role))
    assert code == 1 and out == ""
    assert err.startswith(expected), err
    assert err.count("\n") == 1  # one clear line, no traceback


async def test_send_with_a_bad_token_exits_1() -> None:
    async with running_hub() as h:
        code, _, err = await run("send", "t", "--url", h.url, "--session", SID, "--token", "nonsense")
        assert code == 1 and err.startswith(("error 401:", "error 403:")) and "Traceback" not in err


async def test_missing_settings_exit_2_naming_them() -> None:
    code, _, err = await run("send", "t", "--url", "ws://127.0.0.1:1")
    assert code == 2
    assert "--session (or SIGBRIDGE_SESSION)" in err and "--token (or SIGBRIDGE_TOKEN)" in err
    assert "--url" not in err
    code, _, err = await run("listen", env=clean_env(SIGBRIDGE_TOKEN="x"))
    assert code == 2 and "--url (or SIGBRIDGE_URL)" in err and "--token" not in err


async def read_json(stream: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), scaled(15))
    assert line.endswith(b"\n"), f"listen ended early: {line!r}"
    obj = json.loads(line)
    assert isinstance(obj, dict)
    return obj


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_listen_prints_json_lines_filters_by_type_and_stops_on_signal(
        hub: HubHandle, stop: signal.Signals) -> None:
    async with SessionClient(hub.url, SID, hub.token(SID, data="who=sender")) as sender:
        assert sender.connection is not None
        proc = await asyncio.create_subprocess_exec(
            # --type filters every event: this glob keeps robot.* and the connection* events only.
            sys.executable, "-m", "bridge", "listen", "--type", "[rc]o*", *flags(hub), cwd=ROOT,
            env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            # The newcomer is told about everyone already there.
            first = await read_json(proc.stdout)
            assert first == {"event": "connectionCreated", "connection": sender.connection.to_wire()}
            await next_of(sender, ConnectionCreated)  # the listener is in
            await sender.signal(type="robot.move", data='{"x":1}')
            await sender.signal(type="arm.grip", data="filtered out")
            await sender.signal(type="robot.stop", data="")
            lines = [await read_json(proc.stdout) for _ in range(2)]
            assert [(m["type"], m["data"], m["from"]) for m in lines] == [
                ("robot.move", '{"x":1}', sender.connection.id), ("robot.stop", "", sender.connection.id)]
            assert lines[0]["seq"] < lines[1]["seq"] and isinstance(lines[0]["ts"], int)
            async with SessionClient(hub.url, SID, hub.token(SID)) as late:
                joined = await read_json(proc.stdout)
                assert late.connection is not None
                assert joined["event"] == "connectionCreated"
                assert joined["connection"]["id"] == late.connection.id
            left = await read_json(proc.stdout)
            assert left["event"] == "connectionDestroyed" and left["reason"] == "clientDisconnected"
            proc.send_signal(stop)
            assert await asyncio.wait_for(proc.wait(), scaled(15)) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.stderr is not None
        assert b"Traceback" not in await proc.stderr.read()


async def test_listen_exits_1_when_forced_out(hub: HubHandle) -> None:
    async with SessionClient(hub.url, SID, hub.token(SID, role="moderator")) as mod:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "listen", *flags(hub), cwd=ROOT, env=clean_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            joined = await next_of(mod, ConnectionCreated)
            await mod.force_disconnect(joined.connection.id)
            out, err = await asyncio.wait_for(proc.communicate(), scaled(15))
            assert proc.returncode == 1
            assert json.loads(out.splitlines()[-1]) == {"event": "sessionDisconnected",
                                                         "reason": "forceDisconnected"}
            assert b"forceDisconnected" in err and b"Traceback" not in err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
