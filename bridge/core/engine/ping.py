"""``bridge.ping`` -> ``bridge.pong``: how a client measures its latency to the robot (not only to
the hub).

A client sends ``bridge.ping`` with data ``{"id": X}`` (X a string of at most 128 characters or an
int; anything else is answered with ``"id": null``), ideally targeted at the bridge's connection. The
engine answers the sender only, retry disabled, with ``bridge.pong`` data
``{"id": X, "hub_ms": T}``: T is the bridge's estimate of the hub clock when it answered. The round
trip seen by the client (send to pong) is operator -> hub -> bridge -> hub -> operator, the path every
command and its ack take.

Bounded: each sender gets ``burst`` pings at once and ``hz`` per second (a token bucket per sender, as
rule rate limits); pings past that, and REST pings (no sender to answer), are not answered (the engine
counts them: ``pings_refused``). Nothing here touches a device.

Pure: the caller passes monotonic time in; the hub's time comes with the signal (its age).
"""

from __future__ import annotations

import json

from bridge.core.engine.actions import SendSignal, correlation_id
from bridge.core.engine.params import decode_data
from bridge.core.engine.ratelimit import RateLimiter
from bridge.core.events import Signal

PING = "bridge.ping"
PONG = "bridge.pong"
#: Per sender: a console pings about once a second; 4/s with a burst of 4 leaves room for a CLI.
PING_HZ = 4.0
PING_BURST = 4


class PingResponder:
    """Answers pings, rate-limited per sender (see the module docstring)."""

    __slots__ = ("_limit",)

    def __init__(self, hz: float = PING_HZ, burst: int = PING_BURST) -> None:
        self._limit = RateLimiter(hz, burst)

    def answer(self, sig: Signal, now: float) -> list[SendSignal]:
        """The pong for ``sig`` (a ``bridge.ping``), or nothing when it cannot or may not be answered.
        ``hub_ms`` is the hub's time at receipt: ``sig.ts + sig.age_ms``."""
        if sig.from_id is None or self._limit.check(sig.from_id, now) is not None:
            return []
        body = {"id": _ping_id(sig.data), "hub_ms": sig.ts + sig.age_ms}
        return [SendSignal(PONG, json.dumps(body, separators=(",", ":")), sig.from_id)]

    def forget(self, sender: str) -> None:
        self._limit.forget(sender)


def _ping_id(data: str) -> str | int | None:
    try:
        return correlation_id(decode_data(data))
    except ValueError:
        return None
