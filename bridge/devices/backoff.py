"""What the device links share: their up/down report, and the reconnect policy (capped exponential
backoff, an outage logged once).

An outage starts with the first failure (cannot open / connect, or lost). It ends only when a connection
has stayed up for ``stable_s`` (default: twice the longest delay): a port or broker that accepts and drops
us at once (a flapping USB hub, two bridges fighting over one MQTT client id) is one long outage, with the
delay still growing, not a loop of "lost"/"back" messages at full speed. One warning when the outage
starts, one info line when it ends; everything in between goes to debug.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable


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
        self.min_s = min_s
        self.max_s = max_s
        # Twice the longest delay: two peers kicking each other at the cap never look stable.
        self.stable_s = 2 * max_s if stable_s is None else stable_s
        self.delay = min_s
        self.in_outage = False
        self._recovered_msg = ""
        self._timer: asyncio.TimerHandle | None = None

    def failed(self, msg: str) -> float:
        """Record a failure; returns how long to wait before the next attempt."""
        if not self.in_outage:
            self.log.warning(msg)
            self.in_outage = True
        else:
            self.log.debug(msg)
        delay = self.delay
        self.delay = min(self.delay * 2, self.max_s)
        return delay

    def connected(self, recovered_msg: str) -> None:
        """A connection is up; if it lasts ``stable_s``, the outage (if any) ends with ``recovered_msg``."""
        self._recovered_msg = recovered_msg
        self.disconnected()
        self._timer = asyncio.get_running_loop().call_later(self.stable_s, self._stable)

    def disconnected(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stable(self) -> None:
        self._timer = None
        self.delay = self.min_s
        if self.in_outage:
            self.log.info(self._recovered_msg)
            self.in_outage = False
