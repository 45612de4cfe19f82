"""The rig of tests/test_faults.py: real processes that a test can break and bring back.

- ``HubProc``: ``sigbridge hub`` as a child process on a fixed port, so that it can be killed and started
  again *on the same port* (a hub restart as the bridge sees it);
- ``BridgeProc``: ``sigbridge run -c FILE`` as a child process; ``kill9()`` then ``start()`` again;
- ``Probe``: the device side of a pty. A thread blocks on the master and stamps every complete line with
  the wall clock the moment it is read, so the stamps do not depend on how busy the test's event loop is;
- ``Ledger``: what the suite injected and measured (faults, stale commands blocked, safe-action delays,
  recovery times), written as JSON at the end of the module.

Every figure in the ledger is measured by the tests; nothing in it is a constant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from tests.helpers.proxy import TcpProxy
from tests.helpers.pty import PtyPair

_SCALE = float(os.environ.get("SIGBRIDGE_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * _SCALE


# ---------------------------------------------------------------- processes


class HubProc:
    """``sigbridge hub -c CONFIG --listen 127.0.0.1:PORT`` with credentials in the environment."""

    def __init__(self, port: int, key: str, secret: str, config: Path, log: Path) -> None:
        self.port = port
        self.env = dict(os.environ, SIGBRIDGE_API_KEY=key, SIGBRIDGE_API_SECRET=secret)
        self.config = config
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    async def start(self, timeout: float = 20.0) -> None:
        """Spawn and wait until /healthz answers 200 (the port may still be closing from the last run)."""
        self._log = open(self.log_path, "ab")   # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "hub", "-c", str(self.config), "--listen",
             f"127.0.0.1:{self.port}"], env=self.env, stdout=subprocess.DEVNULL, stderr=self._log)
        self.starts += 1
        async with asyncio.timeout(scaled(timeout)), aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited with {self.proc.returncode}: "
                                       f"{self.log_path.read_text(errors='replace')[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)   # polling the port: nothing to wait on before it listens

    async def kill(self) -> int:
        """SIGKILL (a crash: no goodbye to the clients); returns the exit status."""
        return await self._end(signal.SIGKILL)

    async def stop(self) -> int:
        return await self._end(signal.SIGTERM)

    async def _end(self, signum: int) -> int:
        proc = self.proc
        code = 0
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signum)
            code = await asyncio.to_thread(_wait_or_kill, proc, 10.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
        return code


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class BridgeProc:
    """``sigbridge -v run -c CONFIG``; its stderr lines (over every run) are kept for ``wait_for``."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self.exits: list[int] = []
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "-v", "run", "-c", str(self.config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self.stderr.append("--- bridge started\n")
        self._pump = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace"))
            self._changed.set()
        self._changed.set()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def mark(self) -> int:
        return len(self.stderr)

    async def wait_for(self, pattern: str, timeout: float = 20.0, after: int = 0) -> str:
        """The first stderr line from index ``after`` on that matches ``pattern``."""
        rx = re.compile(pattern)
        async with asyncio.timeout(scaled(timeout)):
            while True:
                for line in self.stderr[after:]:
                    if rx.search(line):
                        return line
                if self.proc is not None and self.proc.returncode is not None:
                    raise AssertionError(f"bridge exited ({self.proc.returncode}): {self.log_tail()}")
                self._changed.clear()
                await self._changed.wait()

    def log_tail(self, n: int = 40) -> str:
        return "".join(self.stderr[-n:])

    async def kill9(self) -> int:
        assert self.proc is not None and self.proc.returncode is None, "bridge not running"
        self.proc.kill()
        return await self._reap()

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and the exit status (SIGKILL after ``timeout``: then the status says so)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self._reap(timeout)

    async def _reap(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), scaled(timeout))
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self._pump is not None:
            await self._pump
        self.exits.append(code)
        return code


class SilentProxy(TcpProxy):
    """A TcpProxy whose blackhole also swallows the *end* of a link, as on a real dead path: while
    blackholed, one side closing (the hub giving up on the silent link after its own heartbeat) is not
    passed on to the other, which has to notice the silence by itself. (TcpProxy closes both sides as
    soon as either ends, so the bridge would learn of the dead link from the hub's FIN.)"""

    def _side_ended(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        if not self._blackhole:
            super()._side_ended(pair)


# ---------------------------------------------------------------- the device side


@dataclass(frozen=True, slots=True)
class Line:
    t: float      # wall clock (time.time()) when the line was read at the pty master
    text: str


class Probe:
    """Reads every line the bridge writes to ``pair`` (stamped as read) until ``vanish()``/``close()``."""

    def __init__(self, pair: PtyPair) -> None:
        self.pair = pair
        self.lines: list[Line] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._attach()

    def _attach(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(self.pair.master,), daemon=True)
        self._thread.start()

    def _detach(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, fd: int) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            # A short select timeout only so the thread notices _stop; lines are stamped when read.
            if not select.select([fd], [], [], 0.05)[0]:
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            t = time.time()
            buf += data
            new: list[Line] = []
            while (i := buf.find(b"\n")) >= 0:
                new.append(Line(t, buf[:i].decode("utf-8", "replace")))
                del buf[: i + 1]
            if new:
                self._loop.call_soon_threadsafe(self._add, new)

    def _add(self, new: list[Line]) -> None:
        self.lines.extend(new)
        self._changed.set()

    async def wait(self, pred: Callable[[str], bool], after: int = 0, timeout: float = 10.0) -> int:
        """Index of the first line from ``after`` on whose text satisfies ``pred``."""
        i = after
        async with asyncio.timeout(scaled(timeout)):
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i].text):
                        return i
                    i += 1
                self._changed.clear()
                await self._changed.wait()

    async def wait_text(self, text: str, after: int = 0, timeout: float = 10.0) -> Line:
        return self.lines[await self.wait(lambda s: s == text, after, timeout)]

    def vanish(self) -> None:
        """Unplug: stop reading, close the pty, remove its symlink."""
        self._detach()
        self.pair.vanish()

    def recreate(self) -> None:
        """Plug back in: a new pty behind the same path, read again."""
        self.pair.recreate()
        self._attach()

    def close(self) -> None:
        self._detach()
        self.pair.close()


class WakeLateness:
    """How late this machine wakes a sleeping thread right now: a thread sleeps ``seconds`` and measures
    its overshoot. A timing bound on *another* process is checked with this as an allowance: nothing in
    user space is woken more promptly than the machine allows (100+ ms on a 2-core machine running two
    CPU burners and other test suites)."""

    def __init__(self, seconds: float) -> None:
        self.late = 0.0
        self._thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self._thread.start()

    def _run(self, seconds: float) -> None:
        start = time.monotonic()
        time.sleep(seconds)
        self.late = max(0.0, time.monotonic() - start - seconds)

    async def result(self) -> float:
        await asyncio.to_thread(self._thread.join)
        return self.late


# ---------------------------------------------------------------- figures


@dataclass
class Ledger:
    """Counts and measurements of the whole module, printed and written as JSON at its end."""

    faults: Counter[str] = field(default_factory=Counter)
    stale_blocked: int = 0                 # acked "stale" by the bridge, never written
    estopped_blocked: int = 0              # acked "estopped", never written
    rejected: int = 0                      # hostile payloads refused by the bridge (acked "rejected")
    refused_by_hub: int = 0                # hostile frames the hub itself nacked
    hostile_sent: int = 0
    never_delivered: int = 0               # sent while the path was broken: lost, and never written
    commands_written: int = 0              # command lines checked for age at the pty
    worst_age_ms: float = 0.0              # oldest command line seen at the pty (send -> read)
    machine_lateness: float = 0.0          # worst WakeLateness seen while checking a timing bound
    safe_delays: dict[str, list[float]] = field(default_factory=dict)
    recoveries: dict[str, list[float]] = field(default_factory=dict)
    floods: list[dict[str, float]] = field(default_factory=list)

    def delay(self, kind: str, seconds: float) -> None:
        self.safe_delays.setdefault(kind, []).append(seconds)

    def recovery(self, kind: str, seconds: float) -> None:
        self.recoveries.setdefault(kind, []).append(seconds)

    def summary(self) -> dict[str, Any]:
        def ms(values: list[float]) -> dict[str, float]:
            return {"n": len(values), "worst_ms": round(max(values) * 1000, 1),
                    "median_ms": round(statistics.median(values) * 1000, 1)}
        return {
            "faults_injected": sum(self.faults.values()),
            "faults": dict(sorted(self.faults.items())),
            "stale_commands_blocked": self.stale_blocked,
            "estopped_commands_blocked": self.estopped_blocked,
            "hostile_payloads_sent": self.hostile_sent,
            "hostile_rejected_by_bridge": self.rejected,
            "hostile_refused_by_hub": self.refused_by_hub,
            "sent_during_outage_never_written": self.never_delivered,
            "command_lines_checked": self.commands_written,
            "oldest_command_written_ms": round(self.worst_age_ms, 1),
            "safe_action_delay": {k: ms(v) for k, v in sorted(self.safe_delays.items())},
            "machine_wake_lateness_worst_ms": round(self.machine_lateness * 1000, 1),
            "recovery_time": {k: ms(v) for k, v in sorted(self.recoveries.items())},
            "floods": self.floods,
        }

    def write(self, path: Path) -> str:
        text = json.dumps(self.summary(), indent=2)
        path.write_text(text + "\n")
        return text
