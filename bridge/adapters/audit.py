"""The audit log: one JSON line per command decision (``bridge.core.engine.decisions.AuditRecord``), rotated.

Writes go to a buffered file, so the event loop pays for a memory copy per record, not a syscall;
the buffer reaches the disk at least every ``flush_interval_s`` (on the next write, and from
:func:`flush_loop`, which the daemon runs as a task) and on :meth:`AuditLog.close`.

Rotation is by size, as ``logging.handlers.RotatingFileHandler`` does it: when the next line would take
the file past ``max_bytes``, ``audit.log`` becomes ``audit.log.1`` (``.1`` becomes ``.2``, ...) and at
most ``backups`` old files are kept (0: the old content is dropped). A line is never split across two
files.

An audit failure (disk full, directory removed) must never stop the robot from being driven safely, nor
crash the daemon: errors are counted, logged at most every 10 s, and the file is reopened on a later
write. Failing to open the log at start, on the other hand, raises: the operator asked for an audit
trail and must learn at once that there will be none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO

from bridge.core.engine.decisions import AuditRecord
from bridge.core.model import Audit

log = logging.getLogger(__name__)

_BUFFER_BYTES = 64 * 1024
_ERROR_LOG_EVERY_S = 10.0


class AuditLog:
    """A size-rotated JSON-lines file. Not thread-safe: use it from the event loop only."""

    def __init__(self, path: str, max_bytes: int = 10_000_000, backups: int = 5,
                 flush_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Open (append to) ``path``, creating its directory. Raises OSError when that fails."""
        if backups < 0:
            raise ValueError(f"audit backups must be >= 0, got {backups}")
        self.path = path
        self.max_bytes = max_bytes          # <= 0: never rotate
        self.backups = backups
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self.records = 0                    # lines accepted
        self.errors = 0                     # failed writes/flushes (each loses what was buffered)
        self.rotations = 0
        self._last_error_log = -_ERROR_LOG_EVERY_S
        self._file: BinaryIO | None = None
        self._size = 0
        self._open()
        self._last_flush = clock()

    @classmethod
    def from_config(cls, audit: Audit) -> AuditLog:
        return cls(audit.path, audit.max_bytes, audit.backups)

    # ------------------------------------------------------------------ writing

    def write(self, record: AuditRecord) -> None:
        """Append one record. Never raises for I/O errors (see the module docstring)."""
        self.write_line(record.to_json())

    def write_line(self, line: str) -> None:
        """Append ``line`` (one JSON document, no newline) plus a newline."""
        data = line.encode("utf-8", "backslashreplace") + b"\n"
        try:
            if self._file is None:
                self._open()
            if 0 < self.max_bytes < self._size + len(data) and self._size > 0:
                self._rotate()
            assert self._file is not None
            self._file.write(data)
            self._size += len(data)
            self.records += 1
            if self._clock() - self._last_flush >= self.flush_interval_s:
                self.flush()
        except OSError as exc:
            self._failed("write", exc)

    def flush(self) -> None:
        """Push buffered lines to the file. Never raises for I/O errors."""
        self._last_flush = self._clock()
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            self._failed("flush", exc)

    def close(self) -> None:
        """Flush and close. Idempotent."""
        if self._file is None:
            return
        self.flush()
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _open(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        f = open(self.path, "ab", buffering=_BUFFER_BYTES)  # noqa: SIM115 - kept open on purpose
        self._size = os.fstat(f.fileno()).st_size
        self._file = f

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        if self.backups == 0:
            os.truncate(self.path, 0)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self.rotations += 1
        self._open()

    def _failed(self, what: str, exc: OSError) -> None:
        self.errors += 1
        # Drop the file: a later write reopens it (the directory may come back, the disk may free up).
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        now = self._clock()
        if now - self._last_error_log >= _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            log.warning("audit log %s: %s failed: %s (%d failures so far)",
                        self.path, what, exc, self.errors)


async def flush_loop(audit: AuditLog) -> None:
    """Flush ``audit`` every ``flush_interval_s`` until cancelled; run it as a task next to the engine.
    On cancellation the log is flushed once more (closing it stays the owner's job)."""
    try:
        while True:
            await asyncio.sleep(audit.flush_interval_s)
            audit.flush()
    finally:
        audit.flush()
