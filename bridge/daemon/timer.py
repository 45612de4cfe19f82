"""The daemon's engine timer: ``engine.tick`` called at ``engine.next_deadline()`` (watchdogs, throttled
telemetry, lease expiry), with one ``loop.call_later`` handle.

:meth:`EngineTimer.arm` runs after every batch of commands (cheap: a comparison): the handle is moved
only when the deadline got earlier than the one it is set for; a later or vanished deadline leaves it,
and its early firing re-arms. A tick that raises is a bug that would leave the watchdogs disarmed: the
daemon is stopped as a crash would stop it (``on_failure``: on_shutdown actions, exit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from bridge.core.engine import Command, Engine

log = logging.getLogger(__name__)


class EngineTimer:
    def __init__(self, engine: Callable[[], Engine], execute: Callable[[Iterable[Command]], None],
                 on_failure: Callable[[], None]) -> None:
        self._engine = engine           # read at each use: a reload swaps the engine
        self._execute = execute
        self._on_failure = on_failure
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self._stopped = False

    def arm(self) -> None:
        """Have ``tick`` called at the engine's next deadline (see the module docstring)."""
        if self._stopped:
            return
        deadline = self._engine().next_deadline()
        if deadline is None:
            return
        at = self._at
        if at is not None and at <= deadline:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = deadline
        # The loop's clock is time.monotonic() (asyncio's default); call_later keeps that an assumption.
        self._handle = asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()),
                                                             self._fire)

    def stop(self) -> None:
        """No tick from now on (shutdown is final)."""
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()

    def _fire(self) -> None:
        self._handle = self._at = None
        try:
            now = time.monotonic()
            engine = self._engine()
            deadline = engine.next_deadline()
            if deadline is not None and now >= deadline:
                self._execute(engine.tick(now))    # re-arms for the next deadline
            else:
                self.arm()
        except Exception:
            log.exception("engine timer failed; stopping")
            self._on_failure()
