"""Reading a SessionClient's events in tests: the next event of a kind, the signals up to a marker,
and short client timers (FAST) so that a reconnect takes about a second."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from bridge.session import (
    SessionClient,
    Signal,
)
from tests.conftest import scaled

E = TypeVar("E")


async def next_of(s: SessionClient, kind: type[E], timeout: float = 10.0) -> E:
    """The next event of ``kind`` (others skipped)."""
    async def find() -> E:
        async for ev in s.events():
            if isinstance(ev, kind):
                return ev
        raise AssertionError(f"events ended before a {kind.__name__}")
    return await asyncio.wait_for(find(), scaled(timeout))


async def signals_until(s: SessionClient, marker: str, timeout: float = 10.0) -> list[Signal]:
    """Signals received up to (not including) the one whose data is ``marker``."""
    got: list[Signal] = []

    async def collect() -> list[Signal]:
        async for ev in s.events():
            if isinstance(ev, Signal):
                if ev.data == marker:
                    return got
                got.append(ev)
        raise AssertionError("events ended before the marker")
    return await asyncio.wait_for(collect(), scaled(timeout))


# Short timers so that each test takes about a second.
FAST = {"ping_interval_s": 0.2, "link_timeout_s": 1.0, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2,
        "open_timeout_s": 1.0}
