"""A real ``python -m bridge -v run`` process and an operator that drives it, for end-to-end tests.

    async with bridge_process(config_path) as bridge, SessionClient(url, sid, token) as c:
        await bridge.wait_for(r"READY")
        op = Operator(c); await op.send("robot.move", {"x": 1}); print(await ack(op))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bridge.client import SessionClient
from bridge.core.events import Signal
from tests.conftest import scaled
from tests.helpers.process import Proc, spawned

#: A running bridge: ``stderr`` (its lines), ``wait_for(pattern, timeout, after)``, ``mark()``, ``proc``.
Bridge = Proc


@contextlib.asynccontextmanager
async def bridge_process(config_path: Path, env: dict[str, str] | None = None,
                         module: str = "bridge") -> AsyncIterator[Bridge]:
    """`python -m MODULE -v run -c CONFIG` (MODULE: the CLI, or a test wrapper around it), stderr
    collected; SIGTERM (then SIGKILL) on exit. ``env`` is added to this process's environment."""
    async with spawned(sys.executable, "-m", module, "-v", "run", "-c", str(config_path), env=env) as p:
        yield p


class Operator:
    """A moderator SessionClient whose received signals are queued for the test."""

    def __init__(self, client: SessionClient) -> None:
        self.client = client
        self.signals: asyncio.Queue[Signal] = asyncio.Queue()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.client.events():
            if isinstance(event, Signal):
                self.signals.put_nowait(event)

    async def next(self, type_: str, timeout: float = 10.0) -> Signal:
        async with asyncio.timeout(scaled(timeout)):
            while True:
                sig = await self.signals.get()
                if sig.type == type_:
                    return sig

    async def send(self, type_: str, data: object) -> None:
        await self.client.signal(type_, json.dumps(data))


async def next_status(op: Operator, **want: Any) -> dict[str, Any]:
    """The next bridge.status whose fields include ``want`` (``devices`` compared as a dict)."""
    while True:
        status: dict[str, Any] = json.loads((await op.next("bridge.status")).data)
        if all(status.get(k) == v for k, v in want.items()):
            return status


async def ack(op: Operator) -> dict[str, Any]:
    """The next bridge.ack's data."""
    data: dict[str, Any] = json.loads((await op.next("bridge.ack")).data)
    return data
