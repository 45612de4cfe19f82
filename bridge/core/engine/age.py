"""A command's age: the stale guard and the deadline its writes carry into the device links.

The age is ``Signal.age_ms``: the receiving client's estimate, at receipt, of the hub clock now minus
the hub's timestamp ``ts`` (estimated from the local monotonic clock and the measured offset to the
hub, ``bridge.core.client.clock``, so that a step of the local wall clock neither disables nor trips the
guard). The engine judges age from it alone and never reads a clock of its own; ``ts + age_ms`` is
the hub's time at receipt (audit records, pongs).
"""

from __future__ import annotations


def is_stale(max_age_ms: int | None, age_ms: int) -> bool:
    """True when a command ``age_ms`` old is older than ``max_age_ms`` (a negative age, a clock
    estimate behind the hub, is never stale)."""
    return max_age_ms is not None and age_ms > max_age_ms


def write_deadline(max_age_ms: int | None, age_ms: int, now: float) -> float | None:
    """When (monotonic seconds, on the clock of ``now``) a command ``age_ms`` old at ``now`` turns
    older than ``max_age_ms``: the deadline its writes carry into the device links, which drop what is
    still queued then. None when the rule has no max age."""
    return None if max_age_ms is None else now + (max_age_ms - age_ms) / 1000.0
