"""``bridge.describe`` answers, rate-limited per sender and coalesced.

Each answer costs the bridge two signals (``bridge.capabilities`` and ``bridge.status``) against the
hub's rate limit for its one connection, the same budget its acks and status broadcasts need. So a
sender gets at most one answer per ``interval_s``: the first request after a quiet interval is answered
at once; any number of further requests within the interval are coalesced into one answer at its end
(``due``), with the state of that moment. A describe flood from one connection costs at most
``2 / interval_s`` signals a second, and whoever asks always gets an answer, at most ``interval_s`` late.

Bounded: at most ``max_senders`` senders are remembered (those quiet for an interval are forgotten
first); past that a request is dropped and counted in ``dropped``. Pure: the caller passes monotonic
time in.
"""

from __future__ import annotations

#: At most one describe answer per sender per this many seconds.
INTERVAL_S = 1.0
MAX_SENDERS = 1024


class DescribeLimiter:
    __slots__ = ("_interval", "_last", "_max", "_pending", "coalesced", "dropped")

    def __init__(self, interval_s: float = INTERVAL_S, max_senders: int = MAX_SENDERS) -> None:
        self._interval = interval_s
        self._max = max_senders
        self._last: dict[str, float] = {}        # sender -> when it was last answered
        self._pending: dict[str, None] = {}      # senders owed one answer at the end of their interval
        self.coalesced = 0
        self.dropped = 0

    def request(self, sender: str, now: float) -> bool:
        """A describe from ``sender`` at ``now``: True when it is to be answered now (then recorded)."""
        last = self._last.get(sender)
        if last is None or now - last >= self._interval:
            if last is None and len(self._last) >= self._max and not self._prune(now):
                self.dropped += 1
                return False
            self._last[sender] = now
            return True
        if sender in self._pending:
            self.coalesced += 1
        self._pending[sender] = None
        return False

    def due(self, now: float) -> list[str]:
        """The senders whose coalesced answer is due at ``now`` (each then recorded as answered)."""
        out = [s for s in self._pending if now >= self._last[s] + self._interval]
        for sender in out:
            del self._pending[sender]
            self._last[sender] = now
        return out

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return min(self._last[s] for s in self._pending) + self._interval

    def forget(self, sender: str) -> None:
        """The sender's connection is gone: nothing is owed to it any more."""
        self._last.pop(sender, None)
        self._pending.pop(sender, None)

    def _prune(self, now: float) -> bool:
        """Forget the senders quiet for an interval; True when there is room again."""
        quiet = [s for s, t in self._last.items() if now - t >= self._interval and s not in self._pending]
        for sender in quiet:
            del self._last[sender]
        return len(self._last) < self._max
