"""The operator CLI through the real `sigbridge` entry point (the console script) against a real hub
and a real `sigbridge run` bridge on a pty: `send --ack` with every exit status, `listen --count
--timeout --type`, a closed pipe, global flags after the command, config files as positional
arguments, and the SIGBRIDGE_* variables."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from bridge.client import SessionClient
from bridge.core.events import Signal
from bridge.core.tokens import verify_client_token
from tests.conftest import scaled
from tests.helpers.cli import SID, SIGBRIDGE, Rig, sigbridge, until_others


def one_json_line(out: str) -> dict[str, object]:
    lines = out.splitlines()
    assert len(lines) == 1, out
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


async def test_send_ack_applied_and_clamped_exit_0_with_the_values_written(rig: Rig) -> None:
    code, out, err = await sigbridge("send", "robot.move", '{"x": 0.5, "y": -0.25}', "--ack", env=rig.env())
    assert (code, err) == (0, "")
    ack = one_json_line(out)
    assert (ack["status"], ack["values"]) == ("applied", {"x": 0.5, "y": -0.25})
    assert str(ack["id"]).startswith("sigbridge-")
    assert await rig.pty.read_until(b"\n", scaled(10)) == b"M 0.50 -0.25\n"

    code, out, err = await sigbridge("send", "robot.move", '{"x": 7, "y": 0, "id": "mine"}', "--ack",
                                     env=rig.env())
    ack = one_json_line(out)
    assert (code, err) == (0, "")
    assert ack == {"id": "mine", "status": "clamped", "reason": None, "values": {"x": 1.0, "y": 0.0},
                   "clamped": ["x"]}


@pytest.mark.parametrize(("args", "role", "status", "reason"), [
    (["robot.move", '{"x": 0, "y": 3}'], "publisher", "rejected", "'y'"),
    (["robot.move", "[1, 2]"], "publisher", "rejected", "JSON object"),
    (["robot.admin"], "publisher", "unauthorised", "publisher"),
])
async def test_send_ack_refused_exits_1_and_prints_why(rig: Rig, args: list[str], role: str, status: str,
                                                       reason: str) -> None:
    code, out, err = await sigbridge("send", *args, "--ack", env=rig.env(role))
    ack = one_json_line(out)
    assert code == 1, (out, err)
    assert ack["status"] == status and reason in str(ack["reason"]), ack


async def test_send_ack_while_estopped_exits_1_and_after_the_reset_0(rig: Rig) -> None:
    assert (await sigbridge("send", "robot.estop", env=rig.env()))[0] == 0
    code, out, _ = await sigbridge("send", "robot.move", '{"x": 0, "y": 0}', "--ack", env=rig.env())
    assert code == 1 and one_json_line(out)["status"] == "estopped"
    assert (await sigbridge("send", "robot.estop_reset", env=rig.env("moderator")))[0] == 0
    code, out, _ = await sigbridge("send", "robot.move", '{"x": 0, "y": 0}', "--ack", env=rig.env())
    assert code == 0 and one_json_line(out)["status"] == "applied"


async def test_send_ack_with_no_answer_exits_124_after_the_timeout(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    code, out, err = await sigbridge("send", "robot.quiet", "--ack", "--timeout", "0.5", env=rig.env())
    elapsed = loop.time() - start
    assert (code, out) == (124, "")
    assert "no bridge.ack within 0.5 s" in err and "ack: true" in err
    assert elapsed >= 0.5
    # Without --ack the same command exits 0 as soon as the hub took it.
    assert (await sigbridge("send", "robot.quiet", env=rig.env()))[:2] == (0, "")


async def test_send_ack_takes_the_answer_of_the_bridge_only(rig: Rig) -> None:
    """A publisher that forges a bridge.ack (it sees the broadcast command and its id) is ignored."""
    async with SessionClient(rig.hub.url, SID, rig.hub.token(SID)) as forger:
        assert forger.connection is not None

        async def forge() -> None:
            async for event in forger.events():
                if isinstance(event, Signal) and event.type == "robot.admin":
                    ack_id = json.loads(event.data)["id"]
                    await forger.signal("bridge.ack", json.dumps({"id": ack_id, "status": "applied"}))

        forging = asyncio.create_task(forge())
        try:
            # The bridge refuses a publisher's robot.admin; the forger says "applied" first.
            code, out, _ = await sigbridge("send", "robot.admin", "{}", "--ack", env=rig.env())
            assert code == 1 and one_json_line(out)["status"] == "unauthorised"
            # Addressed to a connection that is not the bridge: only the bridge's answer would count.
            code, out, _ = await sigbridge("send", "robot.admin", "{}", "--ack", "--timeout", "0.5",
                                           "--to", forger.connection.id, env=rig.env())
            assert (code, out) == (124, "")
        finally:
            forging.cancel()


async def test_listen_count_type_and_timeout(rig: Rig) -> None:
    env = rig.env()
    listen = asyncio.create_task(sigbridge("listen", "--type", "robot.*", "--count", "2", env=env))
    await rig.bridge.wait_for("connected as")
    # Let the listener join: a connection event it must NOT print (filtered by --type) comes first.
    async with SessionClient(rig.hub.url, SID, rig.hub.token(SID)) as op:
        await until_others(op, 2)   # the bridge and the listener
        for n in range(4):
            await op.signal("robot.quiet" if n % 2 == 0 else "other.thing", str(n))
        code, out, err = await listen
    assert (code, err) == (0, "")
    assert [(e["type"], e["data"]) for e in map(json.loads, out.splitlines())] == [
        ("robot.quiet", "0"), ("robot.quiet", "2")]

    # Connection events are filtered by their event name (those already in the session on joining
    # are reported as connectionCreated: the bridge's).
    code, out, _ = await sigbridge("listen", "--type", "connectionCreated", "--count", "1", env=env)
    assert code == 0 and one_json_line(out)["connection"]["role"] == "moderator"  # type: ignore[index]
    code, out, _ = await sigbridge("listen", "--type", "nothing.*", "--count", "1", "--timeout", "0.5",
                                   env=env)
    assert (code, out) == (124, "")
    code, out, _ = await sigbridge("listen", "--type", "nothing.*", "--timeout", "0.3", env=env)
    assert (code, out) == (0, "")


async def test_listen_into_a_closed_pipe_ends_quietly(rig: Rig) -> None:
    # A real shell pipe: head exits after the first line, the next write meets a closed pipe.
    script = (f"'{SIGBRIDGE}' listen | head -1 > '{rig.config.parent}/first'; "
              "echo \"status ${PIPESTATUS[0]}\" >&2")
    proc = await asyncio.create_subprocess_exec("bash", "-c", script, env=rig.env(),
                                                stderr=asyncio.subprocess.PIPE)
    await asyncio.sleep(0)
    async with SessionClient(rig.hub.url, SID, rig.hub.token(SID)) as op:
        async with asyncio.timeout(scaled(20)):
            while proc.returncode is None:
                await op.signal("robot.quiet", "tick")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 0.2)
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert err.strip() == "status 0", err
    assert json.loads((rig.config.parent / "first").read_text())


async def test_global_flags_after_the_command_and_positional_config_files(rig: Rig, tmp_path: Path) -> None:
    code, _, err = await sigbridge("check", str(rig.config), "-v")
    assert code == 0, err
    code, _out, err = await sigbridge("check", "-c", str(rig.config), "--verbose")
    assert code == 0, err
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices: {}\nrules: [{signal: x}]\n")
    code, _, err = await sigbridge("run", str(bad))
    assert code == 2 and f"{bad}:" in err
    code, _, err = await sigbridge("check")
    assert code == 2 and "a config file is needed" in err
    code, _, err = await sigbridge("check", str(bad), "-c", str(rig.config))
    assert code == 2 and "not both" in err
    # -v after the command gives the same INFO logging as before it.
    _, _, err = await sigbridge("listen", "--timeout", "0.3", "-v", env=rig.env())
    _, _, err_before = await sigbridge("-v", "listen", "--timeout", "0.3", env=rig.env())
    assert ("INFO" in err) and ("INFO" in err_before)


def test_token_takes_its_session_from_the_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_")}
    state = tmp_path / "state"
    env["SIGBRIDGE_SESSION"] = "from-env"
    proc = subprocess.run([SIGBRIDGE, "token", "--create", "--state-dir", str(state), "--role", "moderator"],
                          env=env, capture_output=True, text=True, timeout=scaled(30))
    assert proc.returncode == 0, proc.stderr
    creds = json.loads(next(state.glob("*.json")).read_text())
    grant = verify_client_token(proc.stdout.strip(), api_key=creds["api_key"], api_secret=creds["api_secret"],
                                session_id="from-env", now=time.time())
    assert grant.role == "moderator"
    del env["SIGBRIDGE_SESSION"]
    proc = subprocess.run([SIGBRIDGE, "token", "--state-dir", str(state)], env=env, capture_output=True,
                          text=True, timeout=scaled(30))
    assert proc.returncode == 2 and "SIGBRIDGE_SESSION" in proc.stderr


async def test_send_ack_refused_by_the_hub_exits_1_without_waiting(rig: Rig) -> None:
    code, out, err = await sigbridge("send", "robot.move", "{}", "--ack", "--timeout", "30",
                                     env=rig.env("subscriber"), timeout=20)
    assert (code, out) == (1, "") and err.startswith("error 403: "), err
    assert "Traceback" not in err
