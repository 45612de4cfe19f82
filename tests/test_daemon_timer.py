"""The daemon's engine timer (a loop.call_later handle re-armed after every batch of commands), in
process against a real hub and a pty: it calls tick at the engine's deadline, and a failing tick stops
the daemon (as a crash would) instead of leaving the watchdogs disarmed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.daemon.runner import Daemon
from tests.conftest import scaled
from tests.helpers.hub import running_hub

SID = "timer"


async def _daemon(tmp_path: Path, url: str, token: str) -> tuple[Daemon, int]:
    master, slave = os.openpty()
    (tmp_path / "token").write_text(token)
    conf = tmp_path / "bridge.yaml"
    conf.write_text(f"""\
session: {{url: "{url}", session_id: "{SID}", token_file: "{tmp_path / 'token'}"}}
devices:
  base: {{serial: {{port: "{os.ttyname(slave)}", baudrate: 115200}}}}
rules:
  - signal: robot.move
    send: {{device: base, line: "M"}}
""")
    os.close(slave)
    return Daemon(load_config(conf)), master


async def test_tick_runs_at_the_deadline_and_a_failing_tick_stops_the_daemon(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_hub() as h:
        daemon, master = await _daemon(tmp_path, h.url, h.token(SID, "publisher", ""))
        try:
            engine = daemon.engine
            ticked = asyncio.Event()
            due = [time.monotonic() + 0.05]
            real_tick = engine.tick

            def next_deadline() -> float | None:
                return due[0] if due else None

            def tick(now: float) -> list:  # type: ignore[type-arg]
                assert due and now >= due[0]   # never called early
                due.clear()
                ticked.set()
                return real_tick(now)

            engine.next_deadline = next_deadline  # type: ignore[method-assign]
            engine.tick = tick                    # type: ignore[method-assign]
            run = asyncio.create_task(daemon.run())
            await asyncio.wait_for(ticked.wait(), scaled(10))

            def broken(now: float) -> list:  # type: ignore[type-arg]
                raise RuntimeError("a bug in the engine")

            engine.tick = broken                  # type: ignore[method-assign]
            due.append(time.monotonic())          # an earlier deadline than none: the timer is armed
            daemon.timer.arm()
            assert await asyncio.wait_for(run, scaled(10)) == 0
            assert "engine timer failed; stopping" in caplog.text
        finally:
            os.close(master)

