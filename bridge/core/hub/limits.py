"""Sans-I/O bounds of the session hub: the hub-wide byte budget for buffered frames, the throttle on
wrong resume secrets, and the "log at most once per interval" gate.

Time is passed in (``now``: a monotonic clock in seconds); nothing here blocks or schedules.
"""

from __future__ import annotations

from dataclasses import dataclass


class Budget:
    """Bytes of frames held in memory by the whole hub (outboxes and resume buffers), at most ``limit``.

    Resume buffers may take bytes only while the total stays within ``limit // 2`` (:meth:`take` with
    ``resume=True``), so that frames for live links always have at least the other half: a crowd of
    dropped links filling their buffers cannot starve the connections that are still reading.
    ``limit`` 0 means no hub-wide budget (the per-connection bounds still hold)."""

    __slots__ = ("limit", "resume_limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = max(int(limit), 0)
        self.resume_limit = self.limit // 2  # read directly by the hot path (member.Member._keep)
        self.used = 0

    def take(self, n: int, *, resume: bool = False) -> bool:
        """Account ``n`` more bytes; False (nothing taken) when they do not fit."""
        if self.limit:
            ceiling = self.resume_limit if resume else self.limit
            if self.used + n > ceiling:
                return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken earlier."""
        self.used -= n


@dataclass(slots=True)
class _Failures:
    count: int
    until: float


class ResumeThrottle:
    """Wrong resume secrets, keyed by the presenting token's identity (``tokens.token_identity``).

    After the n-th wrong secret, that token may not attempt a resume for ``base_s * 2**(n-1)`` seconds
    (at most ``max_s``); attempts meanwhile are refused (429) without looking at the secret. Keyed by
    token rather than by connection id: connection ids are visible to everyone in a session, so a
    throttle per connection would let any member lock another out of its own resume. At most
    ``max_keys`` tokens are remembered (the oldest entry is forgotten first)."""

    __slots__ = ("_entries", "base_s", "max_keys", "max_s")

    def __init__(self, base_s: float = 0.5, max_s: float = 30.0, max_keys: int = 10_000) -> None:
        self.base_s, self.max_s, self.max_keys = base_s, max_s, max_keys
        self._entries: dict[str, _Failures] = {}

    def wait(self, key: str, now: float) -> float:
        """Seconds ``key`` must still wait before its next resume attempt (0: it may try now)."""
        f = self._entries.get(key)
        return 0.0 if f is None else max(0.0, f.until - now)

    def failed(self, key: str, now: float) -> float:
        """Record a wrong secret from ``key``; returns the seconds it now has to wait."""
        f = self._entries.pop(key, None)
        count = 1 if f is None else f.count + 1
        delay = min(self.max_s, self.base_s * float(2 ** min(count - 1, 30)))
        self._entries[key] = _Failures(count, now + delay)  # re-inserted last: the newest
        while len(self._entries) > self.max_keys:
            del self._entries[next(iter(self._entries))]
        return delay

    def succeeded(self, key: str) -> None:
        self._entries.pop(key, None)


class LogGate:
    """Decides whether a message of kind ``key`` may be logged now: at most once per ``interval_s``.
    :meth:`allow` returns None (stay quiet) or how many were suppressed since the last one logged."""

    __slots__ = ("_last", "_suppressed", "interval_s")

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)
