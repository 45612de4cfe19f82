"""A real ``sigbridge camera`` process for tests, and a Python viewer process that can be frozen.

    async with camera_process(tmp_path, hub, "s1", roles=["moderator"]) as cam:
        ...  cam.connection_id, cam.proc, await cam.wait_for(r"stream .* live")

:func:`viewer_process` runs ``python -m tests.helpers.camviewer``: an aiortc viewer that joins the
session, watches, prints ``LIVE`` once frames arrive, then keeps receiving. SIGSTOP it and it is a
viewer that stalls (no RTCP, no leaving: its session link is only dropped by the hub's heartbeat,
and its connection kept for the hub's grace window).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

from tests.helpers.hub import HubHandle
from tests.helpers.process import Proc, spawned


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
    async with spawned(sys.executable, "-m", "bridge", "-v", "camera", "-c", str(config),
                       new_session=True) as p:
        match = re.search(r"READY .* as (\S+)$", await p.wait_for(r"READY .* as (\S+)$"))
        assert match is not None
        p.connection_id = match.group(1)
        yield p


@contextlib.asynccontextmanager
async def viewer_process(hub: HubHandle, session: str, role: str = "moderator") -> AsyncIterator[Proc]:
    env_token = hub.token(session, role=role, data="py-viewer")
    async with spawned(sys.executable, "-m", "tests.helpers.camviewer", hub.url, session, env_token,
                       stdout=True, new_session=True) as p:
        yield p


def freeze(p: Proc) -> None:
    os.kill(p.proc.pid, signal.SIGSTOP)
