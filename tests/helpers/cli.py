"""The CLI as a user runs it: `sigbridge check` and other subcommands as real subprocesses, and a
rig (hub + pty + bridge) for the operations commands."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.bridge import Bridge, bridge_process
from tests.helpers.hub import HubHandle, running_hub
from tests.helpers.poll import until
from tests.helpers.pty import PtyPair

ROOT = Path(__file__).resolve().parents[2]


def check(path: Path | str, env: dict[str, str] | None = None,
          cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(path)], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=scaled(60))


SID = "ops-lab"


#: The console script pip installed (the real entry point), not `python -m bridge`.
SIGBRIDGE = shutil.which("sigbridge", path=str(Path(sys.executable).parent)) or "sigbridge"


CONFIG = """\
session: {{url: "{url}", session_id: {sid}, token: "{token}"}}
devices: {{base: {{serial: {{port: "{port}"}}}}}}
rules:
  - signal: robot.move
    params: {{x: {{type: float, min: -1, max: 1, on_range: clamp}}, y: {{type: float, min: -1, max: 1}}}}
    send: {{device: base, line: "M {{x:.2f}} {{y:.2f}}"}}
    ack: true
  - signal: robot.quiet
    send: {{device: base, line: "Q"}}
  - signal: robot.admin
    send: {{device: base, line: "A"}}
    from_roles: [moderator]
    ack: true
safety:
  estop: {{signal: robot.estop, reset: robot.estop_reset, send: [{{device: base, line: "S"}}]}}
"""


@dataclass
class Rig:
    hub: HubHandle
    pty: PtyPair
    bridge: Bridge
    config: Path

    def env(self, role: str = "publisher", **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_") or k.endswith("_SCALE")}
        env.update(SIGBRIDGE_URL=self.hub.url, SIGBRIDGE_SESSION=SID,
                   SIGBRIDGE_TOKEN=self.hub.token(SID, role))
        env.update(extra)
        return env


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            token = hub.token(SID, "moderator", "bridge:rover")
            config.write_text(CONFIG.format(url=hub.url, sid=SID, token=token, port=pair.path))
            async with bridge_process(config) as bridge:
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"session: connected as")
                yield Rig(hub, pair, bridge, config)


async def sigbridge(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
                    timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        SIGBRIDGE, *args, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), scaled(timeout))
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def until_others(client: SessionClient, n: int) -> None:
    """Until ``client`` sees ``n`` other connections."""
    await until(lambda: len(client.connections) >= n, 20, every=0.02)
