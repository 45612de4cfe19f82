"""SIGHUP reloads (systemd: RELOADING=1 ... READY=1), one at a time (a second SIGHUP during one
triggers one more).

A file with errors is refused, its errors logged as ``file:line: ...``, and the running config kept; a
good one is swapped in as a new engine that takes over the old one's state (``Engine.take_over`` of the
old one's ``hand_over()``) while the session link and the device links stay as they are. A new token is
used from the next new connection on. Changes to the session URL or id, or to ``devices``, need a
restart: such a reload is refused as a whole (``bridge.core.engine.reload``). Once shutdown has begun a
reload is refused: shutdown is final.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bridge.adapters.audit import AuditLog
from bridge.adapters.systemd import Notifier
from bridge.config import ConfigError, load_config
from bridge.core.engine import Engine
from bridge.core.engine.reload import restart_needed
from bridge.daemon.executor import Executor

log = logging.getLogger(__name__)


class Reloader:
    """``run()`` carries out the reloads asked for with :meth:`ask` (the SIGHUP handler)."""

    def __init__(self, executor: Executor, notifier: Notifier, stopping: asyncio.Event) -> None:
        self._x = executor
        self._notifier = notifier
        self._stopping = stopping
        self._asked = asyncio.Event()
        #: Reloads applied / refused since start.
        self.counts = {"applied": 0, "refused": 0}

    def ask(self) -> None:
        self._asked.set()

    async def run(self) -> None:
        while True:
            await self._asked.wait()
            self._asked.clear()
            self._notifier.reloading()
            outcome = await self.reload()
            self.counts["applied" if outcome is None else "refused"] += 1
            self._notifier.ready(outcome or f"config reloaded from {self._x.config.source}")

    async def reload(self) -> str | None:
        """Load the file again and swap it in. Returns None when applied, else why it was refused
        (logged as errors; the running config is kept)."""
        x = self._x
        path = x.config.source
        if self._stopping.is_set():
            return _refuse("shutting down")
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            for issue in exc.errors:
                log.error("reload: %s", issue)
            return _refuse(f"{path}: {len(exc.errors)} error(s)")
        if self._stopping.is_set():     # shutdown began while the file was being read: it is final
            return _refuse("shutting down")
        reasons = restart_needed(x.config, new, estopped=x.engine.estopped)
        if reasons:
            return _refuse(f"{path}: {'; '.join(reasons)}")
        try:
            engine = Engine(new)
        except ValueError as exc:   # TemplateError too: the loader checks all this; the last guard
            return _refuse(f"{path}: {exc}")
        old_audit = x.audit
        if new.audit != x.config.audit:
            if old_audit is not None:   # the new log may be the same file: let the old writer finish first
                await asyncio.to_thread(old_audit.flush)
                if self._stopping.is_set():
                    return _refuse("shutting down")
            try:
                x.audit = AuditLog.from_config(new.audit) if new.audit is not None else None
            except OSError as exc:
                log.error("reload: cannot open the audit log %s: %s", new.audit and new.audit.path, exc)
                return _refuse(f"{path}: cannot open the audit log {new.audit and new.audit.path}")
        commands = engine.take_over(x.engine.hand_over(), time.monotonic())
        x.adopt(new, engine)
        x.execute(commands)
        log.warning("reload: %s: %d rule(s) applied; session link and devices kept", path, len(new.rules))
        if old_audit is not None and old_audit is not x.audit:
            await asyncio.to_thread(old_audit.close)    # its writer ends, off the loop
        return None

def _refuse(why: str) -> str:
    log.error("reload refused, running config kept: %s", why)
    return f"reload refused: {why}"
