"""A real ``sigbridge camera`` process for tests, and a Python viewer process that can be frozen.

    async with camera_process(tmp_path, hub, "s1", roles=["moderator"]) as cam:
        ...  cam.connection_id, cam.proc, await cam.wait_for(r"stream .* live")

:func:`viewer_process` runs ``python -m tests.helpers.camviewer``: an aiortc viewer that joins the
session, watches, prints ``LIVE`` once frames arrive, then keeps receiving. SIGSTOP it and it is a
viewer that stalls (no RTCP, no leaving: its session link is only dropped by the hub's heartbeat,
and its connection kept for the hub's grace window).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import scaled
from tests.helpers.hub import HubHandle


@dataclass
class Proc:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    connection_id: str = ""

    async def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        rx = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next((m for m in map(rx.search, self.lines) if m), None)

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: found() is not None or
                                                         self.proc.returncode is not None), scaled(timeout))
        match = found()
        if match is None:
            raise AssertionError(f"process ended ({self.proc.returncode}) before {pattern!r}:\n"
                                 + "\n".join(self.lines[-30:]))
        return match


async def _pump(p: Proc, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        async with p.changed:
            p.lines.append(line.decode(errors="replace").rstrip())
            p.changed.notify_all()
    async with p.changed:
        p.changed.notify_all()


@contextlib.asynccontextmanager
async def _spawn(*args: str, stdout: bool = False) -> AsyncIterator[Proc]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, cwd=str(Path(__file__).resolve().parents[2]),
        start_new_session=True)
    p = Proc(proc)
    assert proc.stderr is not None
    pumps = [asyncio.create_task(_pump(p, proc.stderr))]
    if stdout:
        assert proc.stdout is not None
        pumps.append(asyncio.create_task(_pump(p, proc.stdout)))
    try:
        yield p
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), scaled(10))
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(*pumps)


def camera_config(path: Path, hub: HubHandle, session: str, *, roles: tuple[str, ...] = ("moderator",),
                  max_viewers: int = 2, size: tuple[int, int] = (320, 240), fps: int = 15,
                  stall_ms: int = 2000, extra: str = "") -> Path:
    token = hub.token(session, role="publisher", data="camera")
    path.write_text(textwrap.dedent(f"""\
        session: {{url: "{hub.url}", session_id: {session}, token: "{token}"}}
        camera: {{name: front, source: synthetic, width: {size[0]}, height: {size[1]}, fps: {fps},
                  bitrate_kbps: 800}}
        viewers: {{roles: [{", ".join(roles)}], max: {max_viewers}, stall_timeout_ms: {stall_ms}}}
        """) + extra)
    return path


@contextlib.asynccontextmanager
async def camera_process(config: Path) -> AsyncIterator[Proc]:
    """``sigbridge -v camera -c config``, ready once it printed READY (its connection id kept)."""
    async with _spawn("-m", "bridge", "-v", "camera", "-c", str(config)) as p:
        match = await p.wait_for(r"READY .* as (\S+)$")
        p.connection_id = match.group(1)
        yield p


@contextlib.asynccontextmanager
async def viewer_process(hub: HubHandle, session: str, role: str = "moderator") -> AsyncIterator[Proc]:
    env_token = hub.token(session, role=role, data="py-viewer")
    async with _spawn("-m", "tests.helpers.camviewer", hub.url, session, env_token, stdout=True) as p:
        yield p


def freeze(p: Proc) -> None:
    os.kill(p.proc.pid, signal.SIGSTOP)
