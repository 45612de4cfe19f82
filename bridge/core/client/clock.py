"""Clock offset to the hub and round-trip time, from `connected` and `pong` frames.

Each exchange gives one sample: the local clock when the request left (``sent_ms``), when the answer
arrived (``received_ms``), and the hub's ``server_time`` in between. Assuming the hub stamped the
answer half-way, ``offset = server_time - (sent + received) / 2`` (hub minus local), with an error of
at most ``rtt / 2``. Samples with a small RTT are the most precise, so the estimate is the offset of
the lowest-RTT sample among the last ``window`` ones (NTP's "min filter"): a queueing delay on one
exchange cannot pull the offset away, and old samples age out so a changed path or a step of the
hub's clock is followed within ``window`` exchanges.

The local clock is a MONOTONIC one (the session client feeds ``time.monotonic()`` in ms), and the
hub's current time is ``hub_now_ms(local monotonic ms)``: the stale guard compares that with a
signal's hub ``ts``. A step of the local wall clock (an NTP correction, a wrong RTC at boot) then
changes nothing: neither the samples nor the estimate read the wall clock. A wall-clock based
estimate would stay off by the step until every older sample had aged out of the window (a step back
makes old commands look young, one forward makes fresh ones look stale).

Pure: the caller reads the clocks and feeds the numbers in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClockSample:
    rtt_ms: float
    offset_ms: float


class ClockEstimator:
    """Min-RTT filtered offset (hub minus local, ms) and the latest RTT (ms)."""

    def __init__(self, window: int = 8) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._samples: deque[ClockSample] = deque(maxlen=window)
        self._best: ClockSample | None = None
        self.rtt_ms: float | None = None

    def add(self, sent_ms: float, server_time_ms: float, received_ms: float) -> ClockSample | None:
        """Feed one exchange. Returns the sample, or None when it is unusable (negative RTT: the
        local clock stepped back between send and receive)."""
        rtt = received_ms - sent_ms
        if rtt < 0:
            return None
        sample = ClockSample(rtt, server_time_ms - (sent_ms + received_ms) / 2.0)
        self._samples.append(sample)
        self.rtt_ms = rtt
        self._best = min(self._samples, key=lambda s: s.rtt_ms)
        return sample

    @property
    def offset_ms(self) -> float:
        """Best estimate of hub minus local clock; 0.0 before the first sample."""
        return self._best.offset_ms if self._best is not None else 0.0

    def hub_now_ms(self, local_ms: float) -> float:
        """The hub's clock at local (monotonic) time ``local_ms``."""
        return local_ms + self.offset_ms

    @property
    def min_rtt_ms(self) -> float | None:
        return self._best.rtt_ms if self._best is not None else None

    @property
    def samples(self) -> int:
        return len(self._samples)
