"""Shared pieces of the benchmarks: statistics, the results table, /proc readings, pty pairs and
child processes. Nothing here knows about signal-bridge itself (that is `bench.rig`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Everything the harness waits for is bounded by this many seconds times BENCH_TIMEOUT_SCALE.
TIMEOUT_SCALE = float(os.environ.get("BENCH_TIMEOUT_SCALE")
                      or os.environ.get("SIGBRIDGE_TEST_TIMEOUT_SCALE", "1"))
ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of latency samples in milliseconds (nearest-rank percentiles)."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        if not samples_ms:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        s = sorted(samples_ms)
        return cls(len(s), _rank(s, 0.50), _rank(s, 0.90), _rank(s, 0.99), s[-1])


def _rank(sorted_samples: Sequence[float], q: float) -> float:
    index = max(0, min(len(sorted_samples) - 1, int(q * len(sorted_samples) + 0.999999) - 1))
    return sorted_samples[index]


def median_ratio(pairs: Sequence[tuple[float, float]]) -> float:
    """Median over rounds of measured/baseline, each pair measured back to back (noise cancels)."""
    ratios = [a / b for a, b in pairs if b > 0]
    return statistics.median(ratios) if ratios else float("nan")


# ---------------------------------------------------------------- results


@dataclass(slots=True)
class Row:
    """One line of the results table. ``ratio`` is bridge/baseline (median of per-round ratios)."""

    section: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        verdict = "" if self.passed is None else ("PASS" if self.passed else "MISS")
        return [self.section, self.metric, f"{_fmt(self.value)} {self.unit}".strip(),
                "" if self.baseline is None else f"{_fmt(self.baseline)} {self.unit}".strip(),
                "" if self.ratio is None else f"{self.ratio:.2f}x",
                self.target, verdict, self.note]


HEADER = ["section", "metric", "signal-bridge", "baseline", "ratio", "target", "", "note"]


def _fmt(v: float) -> str:
    if v != v:  # NaN
        return "n/a"
    if v == int(v) and abs(v) < 1000:  # counts
        return str(int(v))
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 0.1 else f"{v:.2f}"


@dataclass
class Results:
    """Rows collected by the benchmarks plus raw samples for the plot."""

    rows: list[Row] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print("  " + " | ".join(c for c in row.cells() if c), flush=True)
        return row

    def table(self, markdown: bool = False) -> str:
        rows = [HEADER] + [r.cells() for r in self.rows]
        if markdown:
            lines = ["| " + " | ".join(r) + " |" for r in rows]
            lines.insert(1, "|" + "|".join("---" for _ in HEADER) + "|")
            return "\n".join(lines)
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def check(value: float, limit: float, *, at_most: bool = True) -> bool:
    return value <= limit if at_most else value >= limit


# ---------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a live process, all its threads.

    From /proc/PID/task/*/schedstat (nanoseconds on CPU) when the kernel has it, because
    /proc/PID/stat's utime + stime count in 10 ms ticks, too coarse for a fan-out round; the two
    agree over long runs. Falls back to /proc/PID/stat."""
    try:
        return sum(int((t / "schedstat").read_text().split()[0])
                   for t in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        return _stat_cpu_seconds(pid)


def _stat_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (fields 14 and 15 of /proc/PID/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    m = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


# ---------------------------------------------------------------- pty


class Pty:
    """A raw pseudo-terminal pair. The device side (``path``) is opened by the process under test;
    the bench reads and writes the master with the event loop. Both ends stay open for the pty's
    life so the master never reads EIO between runs."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._buf = b""
        self._on_line: Callable[[bytes, float], None] | None = None

    def start_reading(self, on_line: Callable[[bytes, float], None]) -> None:
        """Call ``on_line(line_without_newline, perf_counter_at_read)`` for each complete line."""
        self._on_line = on_line
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def stop_reading(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.master)
        self._on_line = None

    def _readable(self) -> None:
        now = time.perf_counter()
        try:
            chunk = os.read(self.master, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        data = self._buf + chunk
        *lines, self._buf = data.split(b"\n")
        if self._on_line is not None:
            for line in lines:
                self._on_line(line.rstrip(b"\r"), now)

    def write(self, data: bytes) -> None:
        """Write all of ``data`` at the master (a non-blocking write can be partial); bounded."""
        view = memoryview(data)
        deadline = time.monotonic() + scaled(5)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                n = 0
            view = view[n:]
            if view and time.monotonic() > deadline:
                raise TimeoutError("pty master not draining")

    def close(self) -> None:
        self.stop_reading()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------- child processes


_PYCACHE: list[str] = []


def _bytecode_env() -> dict[str, str]:
    """Children run with a bytecode cache, as an installed bridge does (pip compiles its modules), even
    where ``PYTHONDONTWRITEBYTECODE`` is set: without it every start compiles the bridge's own modules
    again (a quarter of its import time). The cache goes to a directory of this run
    (``PYTHONPYCACHEPREFIX``), never into the source tree, and is removed at exit."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("BENCH_NO_BYTECODE"):
        return {}
    if not _PYCACHE:
        import atexit
        import shutil
        import tempfile

        _PYCACHE.append(tempfile.mkdtemp(prefix="sigbridge-bench-pyc-"))
        atexit.register(shutil.rmtree, _PYCACHE[0], True)
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": _PYCACHE[0]}


class Child:
    """A child process whose stdout+stderr lines are collected; ``wait_line`` waits for a marker.
    With ``BENCH_LOG_DIR`` set, every line is also written to ``$BENCH_LOG_DIR/NAME-PID.log``."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **_bytecode_env(), **(env or {})}
        self.cwd = cwd or ROOT
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.started_at = 0.0
        self._new_line = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> Child:
        self.started_at = time.perf_counter()
        # A session of its own, so that stop() ends a wrapper (a profiler) and what it runs together.
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._tasks.append(asyncio.create_task(self._pump()))
        return self

    async def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        log_dir = os.environ.get("BENCH_LOG_DIR")
        log = open(Path(log_dir) / f"{self.name}-{self.proc.pid}.log", "w") if log_dir else None  # noqa: SIM115
        try:
            while line := await self.proc.stdout.readline():
                text = line.decode(errors="replace").rstrip()
                if log is not None:
                    log.write(text + "\n")
                self._keep(text)
        finally:
            if log is not None:
                log.close()
        self._new_line.set()

    def _keep(self, text: str) -> None:
        self.lines.append(text)
        if len(self.lines) > 2000:  # a chatty child must not eat memory
            del self.lines[:1000]
        self._new_line.set()

    async def wait_line(self, marker: str, timeout: float) -> str:
        async def scan() -> str:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if marker in line:
                        return line
                seen = len(self.lines)
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
                self._new_line.clear()
                await self._new_line.wait()
        try:
            return await asyncio.wait_for(scan(), scaled(timeout))
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no '{marker}' within {timeout}s:\n{self.tail()}") from None

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # its own session: the group id is its pid

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), scaled(5))
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
                await self.proc.wait()
        if self.proc is not None:
            self._signal_group(signal.SIGKILL)  # anything the child left behind in its group
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


async def wait_port(port: int, timeout: float, child: Child | None = None) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port (bounded)."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            pass
        if child is not None and not child.alive() and child.proc is not None:
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}):\n{child.tail()}")
        await asyncio.sleep(0.02)  # polling a port: there is no event to wait on
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


PYTHON = sys.executable


def raise_fd_limit(want: int = 8192) -> int:
    """Raise the soft open-files limit (inherited by children) towards ``want``; returns the new one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        return new
    return soft
