"""The one retry backoff: capped exponential, optionally jittered, with the outage it belongs to.

Used by the session client (reconnecting with ``resume``), the bridge daemon (joining the session
again) and the device links (reopening a port, reconnecting to a broker). Pure: the caller sleeps,
draws the jitter and runs the stability timer.

An outage starts with the first failure and ends only when the caller reports a connection that
stayed up for :attr:`Backoff.stable_s` (:meth:`Backoff.stable`): a peer that accepts and drops us at
once (a flapping USB hub, two bridges fighting over one MQTT client id) is one long outage with the
delay still growing, not a loop of "lost"/"back" at full speed. :meth:`Backoff.failed` says whether
a failure started the outage, so that the caller can log once when it starts and once when it ends.
"""

from __future__ import annotations


def backoff_delay(attempt: int, min_s: float, max_s: float, jitter: float = 1.0) -> float:
    """Wait before attempt ``attempt`` (0-based): ``min_s * 2**attempt`` capped at ``max_s``, scaled by
    ``jitter`` in [0.5, 1.0] (the caller draws it) so that a fleet of clients dropped by one hub
    restart does not come back in lockstep. Raises ValueError for a jitter outside that range."""
    if not 0.5 <= jitter <= 1.0:
        raise ValueError("jitter must be in [0.5, 1.0]")
    return min(max_s, min_s * (2.0 ** min(attempt, 30))) * jitter


class Backoff:
    """The attempts of one retry loop. Call :meth:`failed` after each failure (it returns the wait
    before the next attempt) and :meth:`stable` once a connection has stayed up ``stable_s`` (default:
    twice the longest delay, so that two peers kicking each other at the cap never look stable)."""

    __slots__ = ("attempt", "in_outage", "max_s", "min_s", "stable_s")

    def __init__(self, min_s: float, max_s: float, stable_s: float | None = None) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.stable_s = 2 * max_s if stable_s is None else stable_s
        self.attempt = 0
        self.in_outage = False

    def failed(self, jitter: float = 1.0) -> tuple[float, bool]:
        """Record a failure: (the wait before the next attempt, True when this failure started the
        outage)."""
        delay = backoff_delay(self.attempt, self.min_s, self.max_s, jitter)
        self.attempt += 1
        started = not self.in_outage
        self.in_outage = True
        return delay, started

    def stable(self) -> bool:
        """A connection stayed up: the next failure waits ``min_s`` again. True when this ended an
        outage (to report the recovery once)."""
        ended = self.in_outage
        self.attempt = 0
        self.in_outage = False
        return ended
