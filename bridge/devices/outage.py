"""What the device links share: their up/down report, and the asyncio side of the reconnect policy
(the backoff itself is :class:`bridge.core.backoff.Backoff`): an outage logged once, ended by a
stability timer.

One warning when the outage starts, one info line when it ends (after the connection has stayed up
``stable_s``); everything in between goes to debug.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bridge.core.backoff import Backoff


def report_state(on_state: Callable[[str, bool], None] | None, name: str, up: bool,
                 log: logging.Logger) -> None:
    """Tell a link's owner that it went up or down. The owner's exception is logged, never raised into
    the link's read loop."""
    if on_state is None:
        return
    try:
        on_state(name, up)
    except Exception:
        log.exception("%s: on_state callback failed", name)


class Reconnect:
    """Use: ``await asyncio.sleep(r.failed(msg))`` after each failure or loss; ``r.connected()`` right after
    each success (it arms the stability timer); ``r.disconnected()`` as soon as that connection ends."""

    def __init__(self, log: logging.Logger, min_s: float, max_s: float,
                 stable_s: float | None = None) -> None:
        self.log = log
        self.backoff = Backoff(min_s, max_s, stable_s)
        self._recovered_msg = ""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def in_outage(self) -> bool:
        return self.backoff.in_outage

    def failed(self, msg: str) -> float:
        """Record a failure; returns how long to wait before the next attempt."""
        delay, started = self.backoff.failed()
        (self.log.warning if started else self.log.debug)(msg)
        return delay

    def connected(self, recovered_msg: str) -> None:
        """A connection is up; if it lasts ``stable_s``, the outage (if any) ends with ``recovered_msg``."""
        self._recovered_msg = recovered_msg
        self.disconnected()
        self._timer = asyncio.get_running_loop().call_later(self.backoff.stable_s, self._stable)

    def disconnected(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stable(self) -> None:
        self._timer = None
        if self.backoff.stable():
            self.log.info(self._recovered_msg)
