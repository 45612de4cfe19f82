"""`sigbridge demo` end to end: start it, take the printed settings, drive the simulated rover through the
printed session, see its telemetry react, then Ctrl-C (SIGINT) -> everything stops, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys

import pytest

from bridge.client import SessionClient
from bridge.core.events import Signal
from tests.conftest import scaled
from tests.helpers.mosquitto import free_port


@pytest.mark.parametrize("embedded", [False, True], ids=["hub", "embedded"])
async def test_demo_prints_settings_drives_rover_and_stops_on_sigint(embedded: bool) -> None:
    """Both shapes: a separate hub, and (--embedded) the bridge hosting the session, one hop."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "demo", "--listen", f"127.0.0.1:{port}",
        *(["--embedded"] if embedded else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        printed: list[str] = []
        async with asyncio.timeout(scaled(30)):
            while not printed or "Ctrl-C stops everything" not in printed[-1]:
                line = await proc.stdout.readline()
                assert line, f"demo ended early: {''.join(printed)}"
                printed.append(line.decode())
        text = "".join(printed)
        assert f"http://127.0.0.1:{port}/#session=" in text
        assert "sigbridge send robot.move '{\"x\":0.5,\"y\":0}'" in text
        assert "sigbridge listen" in text
        # Each shape names the other one's command.
        assert ("sigbridge demo\n" in text) if embedded else ("sigbridge demo --embedded" in text), text
        [export] = [ln for ln in printed if ln.strip().startswith("export ")]
        env = dict(item.split("=", 1) for item in shlex.split(export)[1:])
        assert env["SIGBRIDGE_URL"] == f"ws://127.0.0.1:{port}"

        # The printed command mints a second operator's token the demo's hub accepts (it reads the
        # demo's state dir; run through the real entry point, with no credentials of its own around).
        [mint] = [ln.strip() for ln in printed if ln.strip().startswith("sigbridge token ")]
        argv = shlex.split(mint)
        assert argv[:3] == ["sigbridge", "token", env["SIGBRIDGE_SESSION"]] and "--state-dir" in argv
        # It says where its state is (the same dir) and how to put sigbridge on the PATH.
        state = argv[argv.index("--state-dir") + 1]
        assert f"state directory: {state}  (the demo hub's credentials" in text
        [path_line] = [ln for ln in printed if "sigbridge on your PATH: export PATH=" in ln]
        bindir = shlex.split(path_line.split("export ", 1)[1])[0].split("=", 1)[1].split(":")[0]
        assert os.access(os.path.join(bindir, "sigbridge"), os.X_OK), path_line
        minted = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", *argv[1:], stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_")})
        out, err = await asyncio.wait_for(minted.communicate(), scaled(30))
        assert minted.returncode == 0, err
        async with SessionClient(env["SIGBRIDGE_URL"], env["SIGBRIDGE_SESSION"], out.decode().strip()) as op2:
            assert op2.connection is not None and op2.connection.role == "moderator"
            assert op2.connection.data == "operator-2"

        async with SessionClient(env["SIGBRIDGE_URL"], env["SIGBRIDGE_SESSION"],
                                 env["SIGBRIDGE_TOKEN"]) as op:
            signals: asyncio.Queue[Signal] = asyncio.Queue()

            async def collect() -> None:
                async for event in op.events():
                    if isinstance(event, Signal):
                        signals.put_nowait(event)
            collector = asyncio.create_task(collect())
            await op.signal("robot.move", '{"x":0.5,"y":0,"id":"demo-1"}')
            acked = moving = False
            async with asyncio.timeout(scaled(15)):
                while not (acked and moving):
                    sig = await signals.get()
                    data = json.loads(sig.data)
                    if sig.type == "bridge.ack":
                        assert data["status"] == "applied" and data["reason"] is None, data
                        acked = acked or data["id"] == "demo-1"
                    elif sig.type == "robot.telemetry":
                        assert set(data) == {"battery", "speed"}
                        # The rover accelerates with some inertia: the move shows in its speed.
                        moving = moving or data["speed"] != 0
                        if not moving:
                            await op.signal("robot.move", '{"x":0.5,"y":0}')
            collector.cancel()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), scaled(20)) == 0
    finally:
        if proc.returncode is None:   # the demo stops its children on SIGTERM; kill only as a last resort
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), scaled(20))
            except TimeoutError:
                proc.kill()
                await proc.wait()
