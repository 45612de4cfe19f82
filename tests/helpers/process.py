"""Child processes for tests: their output lines, waiting for a line, and stopping them.

    async with spawned(sys.executable, "-m", "bridge", "-v", "run", "-c", path) as p:
        line = await p.wait_for(r"READY")           # stderr (and stdout when asked) lines
        mark = p.mark(); ...; await p.wait_for(r"reloaded", after=mark)

On exit: SIGCONT (a test may have frozen it), SIGTERM, then SIGKILL after ``scaled(10)`` s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import scaled

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    """A running child and every line it printed so far (decoded, newline kept)."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connection_id: str = ""

    @property
    def stderr(self) -> list[str]:
        """The lines (for a bridge, its stderr: the name the tests read them by)."""
        return self.lines

    def mark(self) -> int:
        """An index for ``wait_for(..., after=mark)``: lines printed from now on."""
        return len(self.lines)

    async def wait_for(self, pattern: str, timeout: float = 20.0, after: int = 0) -> str:
        """The first line from index ``after`` on matching ``pattern`` (``re.search``); fails with
        the output's tail when the process ends first or after ``scaled(timeout)`` seconds."""
        rx = re.compile(pattern)
        try:
            async with asyncio.timeout(scaled(timeout)):
                while True:
                    for line in self.lines[after:]:
                        if rx.search(line):
                            return line
                    if self.proc.returncode is not None:
                        raise AssertionError(f"process exited ({self.proc.returncode}) before {pattern!r}:\n"
                                             + "".join(self.lines[-30:]))
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"no line matching {pattern!r} in {scaled(timeout):.0f} s:\n"
                                 + "".join(self.lines[-30:])) from None


async def _pump(p: Proc, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        p.lines.append(line.decode(errors="replace"))
        p.changed.set()
    p.changed.set()


async def stop(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """SIGCONT + SIGTERM, then SIGKILL when it has not exited after ``scaled(timeout)`` s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), scaled(timeout))
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def spawned(*argv: str, stdout: bool = False, env: dict[str, str] | None = None,
                  new_session: bool = False) -> AsyncIterator[Proc]:
    """``argv`` run from the repository root; its stderr lines (and stdout's when ``stdout``)
    collected; ``env`` added to this process's environment; stopped with :func:`stop` on exit."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, cwd=str(ROOT), start_new_session=new_session,
        env=None if env is None else dict(os.environ, **env))
    p = Proc(proc)
    assert proc.stderr is not None
    pumps = [asyncio.create_task(_pump(p, proc.stderr))]
    if stdout:
        assert proc.stdout is not None
        pumps.append(asyncio.create_task(_pump(p, proc.stdout)))
    try:
        yield p
    finally:
        await stop(proc)
        await asyncio.gather(*pumps)
