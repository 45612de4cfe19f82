"""The audit log: one JSON line per command decision (``bridge.core.engine.decisions.AuditRecord``), rotated.

The event loop never touches the file: :meth:`AuditLog.write` puts the record on a bounded queue (no
syscall, no serialising) and a writer thread turns it into its JSON line and hands it to a
``logging.handlers.RotatingFileHandler``, which writes and flushes it, so each line is on disk as soon as
the disk takes it. A slow or stalled disk (NFS, a dying SD card) stalls that thread only; while it is
stalled at most ``QUEUE_RECORDS`` records wait, and later ones are dropped and counted
(``AuditLog.dropped``), never queued without bound.

Rotation is the standard library's (``audit.log`` becomes ``audit.log.1``, ``.1`` becomes ``.2``, ...,
at most ``backups`` old files kept), decided as this log always has: when the next line would take the
file past ``max_bytes`` (a file that is still empty takes its first line whatever its size, so a line is
never split across two files and no empty backup is made), and with ``backups: 0`` the old content is
dropped (the handler alone would then never rotate).

An audit failure (disk full, directory removed) must never stop the robot from being driven safely, nor
crash the daemon: errors are counted, logged at most every 10 s, and the file is reopened on the next
record. Failing to open the log at start, on the other hand, raises: the operator asked for an audit
trail and must learn at once that there will be none.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

from bridge.core.engine.decisions import AuditRecord
from bridge.core.model import Audit

log = logging.getLogger(__name__)

#: Records waiting for the writer thread at most (a stalled disk: later ones are dropped and counted).
QUEUE_RECORDS = 10_000
#: How long close() waits for the writer to write what is queued (a stalled disk must not hang the exit).
CLOSE_TIMEOUT_S = 5.0
_ERROR_LOG_EVERY_S = 10.0
_ENCODING = "utf-8"
_ERRORS = "backslashreplace"


class _Flushed:
    """Put on the queue by flush()/close(): set by the writer once everything before it is written."""

    def __init__(self, last: bool) -> None:
        self.done = threading.Event()
        self.last = last


class _Handler(logging.handlers.RotatingFileHandler):
    """The standard handler with this log's rotation decision (see the module docstring) and its error
    accounting; used from the writer thread only."""

    def __init__(self, path: str, max_bytes: int, backups: int,
                 on_error: Callable[[BaseException], None]) -> None:
        super().__init__(path, "a", max_bytes, backups, encoding=_ENCODING, errors=_ERRORS)
        self.rotations = 0
        self._on_error = on_error

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        name = self.baseFilename
        if self.maxBytes <= 0 or (os.path.exists(name) and not os.path.isfile(name)):
            return False        # never rotate a device or a pipe (as the stdlib handler)
        if self.stream is None:
            self.stream = self._open()
        size = self.stream.seek(0, os.SEEK_END)
        line = (self.format(record) + self.terminator).encode(_ENCODING, _ERRORS)
        return size > 0 and size + len(line) > self.maxBytes

    def doRollover(self) -> None:
        if self.backupCount > 0:
            super().doRollover()
        else:                   # no backups: start the file again (the stdlib would never rotate)
            if self.stream is not None:
                self.stream.close()
            os.truncate(self.baseFilename, 0)
            self.stream = self._open()
        self.rotations += 1

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        # Drop the file: the next record reopens it (the directory may come back, the disk may free up).
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None
        self._on_error(exc if exc is not None else OSError("unknown error"))


class AuditLog:
    """A size-rotated JSON-lines file written by its own thread. ``write`` is for the event loop (it
    never blocks); ``flush`` and ``close`` wait for the writer and are for start-up, reloads and exit."""

    def __init__(self, path: str, max_bytes: int = 10_000_000, backups: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Open (append to) ``path``, creating its directory. Raises OSError when that fails."""
        if backups < 0:
            raise ValueError(f"audit backups must be >= 0, got {backups}")
        self.path = path
        self.max_bytes = max_bytes          # <= 0: never rotate
        self.backups = backups
        self._clock = clock
        self.records = 0                    # records accepted (queued for the writer)
        self.dropped = 0                    # records refused because the writer was QUEUE_RECORDS behind
        self.errors = 0                     # records the writer failed to write (each is lost)
        self._last_error_log = -_ERROR_LOG_EVERY_S
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._handler = _Handler(path, max_bytes, backups, self._failed)
        self._queue: queue.Queue[AuditRecord | str | _Flushed] = queue.Queue(QUEUE_RECORDS)
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name=f"audit {path}", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, audit: Audit) -> AuditLog:
        return cls(audit.path, audit.max_bytes, audit.backups)

    @property
    def rotations(self) -> int:
        """Rotations done so far (by the writer thread)."""
        return self._handler.rotations

    # ------------------------------------------------------------------ the event loop's side

    def write(self, record: AuditRecord) -> None:
        """Queue one record for the writer. Never blocks, never raises for I/O errors."""
        self._put(record)

    def write_line(self, line: str) -> None:
        """Queue ``line`` (one JSON document, no newline); the writer adds the newline."""
        self._put(line)

    def _put(self, item: AuditRecord | str) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            self._warn("audit log %s: the writer is %d records behind (a slow disk?); %d record(s) dropped",
                       self.path, QUEUE_RECORDS, self.dropped)
            return
        self.records += 1

    # ------------------------------------------------------------------ waiting for the writer

    def flush(self, timeout: float | None = CLOSE_TIMEOUT_S) -> bool:
        """Wait (at most ``timeout``) until every record queued so far is written; False on timeout."""
        return self._barrier(False, timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is queued (waiting at most ``timeout``), stop the writer, close the file. Idempotent.
        A writer still stuck after ``timeout`` is left behind (a daemon thread) with what it holds."""
        if self._closed:
            return
        self._closed = True
        if self._barrier(True, timeout):
            self._handler.close()
        else:
            log.error("audit log %s: the disk did not take the last records within %.0f s; exiting without",
                      self.path, timeout)

    def _barrier(self, last: bool, timeout: float | None) -> bool:
        if not self._thread.is_alive():
            return True
        mark = _Flushed(last)
        try:
            self._queue.put(mark, timeout=timeout)
        except queue.Full:
            return False
        return mark.done.wait(timeout)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ the writer thread

    def _write_loop(self) -> None:
        handler = self._handler
        while True:
            item = self._queue.get()
            if isinstance(item, _Flushed):
                item.done.set()
                if item.last:
                    return
                continue
            line = item if isinstance(item, str) else item.to_json()
            # handle() takes the handler's lock, rotates when due, writes, flushes; errors -> handleError.
            handler.handle(logging.LogRecord("audit", logging.INFO, "", 0, line, None, None))

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._warn("audit log %s: write failed: %s (%d failures so far)", self.path, exc, self.errors)

    def _warn(self, fmt: str, *args: object) -> None:
        now = self._clock()
        if now - self._last_error_log >= _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            log.warning(fmt, *args)
