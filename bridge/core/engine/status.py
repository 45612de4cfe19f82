"""The ``bridge.status`` signal: what state the bridge is in, and how often it may say so.

Data (one compact JSON object, version 1)::

    {"version": 1,
     "state": "ready" | "degraded" | "estopped",   # estopped wins; degraded: a device is down
     "estopped": false,
     "lease": "CONNECTION_ID" | null,                # null also when control.lease is off
     "devices": {"base": "up", "arm": "down"},
     "counters": {"signals": 12, "unmatched": 1, "telemetry_dropped": 0, "watchdog_fired": 2,
                  "estops": 0, "writes_refused": 0, "writes_expired": 0, "lease_expired": 0,
                  "lease_taken_over": 0, "frames_bad_checksum": 0,
                  "decisions": {"applied": 9, "clamped": 0, "rejected": 1, ...}}}

``writes_refused`` counts lines and publishes a device link did not take (the device down, or its
bounded queue full): decided, but never written. ``writes_expired`` counts those a link took and then
dropped unwritten, still in its queue when their command turned ``max_age_ms`` old.
``lease_expired`` / ``lease_taken_over`` count the leases lost to ``control.idle_timeout_ms`` and to a
moderator (each also changes ``lease``).
``frames_bad_checksum`` counts telemetry frames of ``framing: binary`` devices whose constant bytes
matched but whose checksum did not (``bridge.core.engine.frames``).

``decisions`` always holds every decision of :class:`bridge.core.engine.decisions.Decision` (0 when none yet),
so a reader never has to guess whether a key is missing or zero.

When it is sent (the engine decides, see ``bridge.core.engine``): broadcast on every (re)connect of the
session link, broadcast on every change of state (a device up or down, the e-stop latched or reset, the
lease holder) - coalesced by :class:`StatusAnnouncer` - and, targeted, in answer to ``bridge.describe``.
Counters alone changing is not a change worth a broadcast; they ride along with the next one.

Pure: the caller passes monotonic time in.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.core.engine.counters import EngineStatus
from bridge.core.engine.decisions import Decision

VERSION = 1
#: At most one broadcast per this interval (seconds): a flapping device cannot flood the session.
MIN_INTERVAL_S = 0.5


class StatusAnnouncer:
    """Coalesces ``bridge.status`` broadcasts.

    The first change after a quiet ``min_interval_s`` goes out at once (``changed`` returns True); later
    changes within the interval set a pending flag, and one broadcast of the then-current state goes out
    when the interval ends (``due`` returns True at ``next_deadline``). So a device flapping at any rate
    costs at most one signal per interval, and the last state always gets out."""

    __slots__ = ("_last", "_min", "_pending")

    def __init__(self, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self._min = min_interval_s
        self._last: float | None = None
        self._pending = False

    def changed(self, now: float) -> bool:
        """The state changed at ``now``: True when a broadcast must go out now (then it is recorded)."""
        if self._last is None or now - self._last >= self._min:
            self.sent(now)
            return True
        self._pending = True
        return False

    def sent(self, now: float) -> None:
        """A broadcast went out at ``now`` (also one not asked through ``changed``, e.g. on connect)."""
        self._last = now
        self._pending = False

    def due(self, now: float) -> bool:
        """True when a coalesced broadcast must go out now (then it is recorded)."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return False
        self.sent(now)
        return True

    def next_deadline(self) -> float | None:
        if not self._pending or self._last is None:
            return None
        return self._last + self._min

    def cancel(self) -> None:
        """Forget a pending broadcast (the link went down; the next connect sends a fresh one)."""
        self._pending = False


def status_data(status: EngineStatus) -> str:
    """The ``bridge.status`` data as compact JSON (see the module docstring)."""
    down = not all(status.devices.values())
    c = status.counters
    obj: dict[str, Any] = {
        "version": VERSION,
        "state": "estopped" if status.estopped else "degraded" if down else "ready",
        "estopped": status.estopped,
        "lease": status.lease_holder,
        "devices": {name: "up" if up else "down" for name, up in status.devices.items()},
        "counters": {
            "signals": c.signals,
            "unmatched": c.unmatched,
            "telemetry_dropped": c.telemetry_dropped_link_down,
            "watchdog_fired": c.watchdog_fired,
            "estops": c.estops,
            "writes_refused": c.writes_refused,
            "writes_expired": c.writes_expired,
            "lease_expired": c.lease_expired,
            "lease_taken_over": c.lease_taken_over,
            "frames_bad_checksum": c.frames_bad_checksum,
            "decisions": {d.value: status.decisions[d] for d in Decision},
        },
    }
    return json.dumps(obj, separators=(",", ":"))
