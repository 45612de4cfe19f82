"""Logging of refused input that an attacker controls the rate of: at most one line per kind and
interval, with the number of refusals it stands for, so that a flood of bad tokens or bodies costs
the log a line a minute instead of one (or a traceback) per attempt. Counting is the metrics' job."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 60.0


class RefusalLog:
    """``note(kind, message)`` logs a WARNING the first time ``kind`` is refused in each interval
    (``kind`` is one of a few fixed names, never input); later ones are only counted until then."""

    def __init__(self, logger: logging.Logger, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def note(self, kind: str, message: str) -> None:
        """``message`` must not hold the refused credential (the refusal messages never do)."""
        now = self._clock()
        if now < self._next.get(kind, float("-inf")):
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._next[kind] = now + self._interval
        more = f" (and {held} more in the last {self._interval:g} s)" if held else ""
        self._log.warning("refused %s: %s%s", kind, message, more)
