"""The one polling helper: for a state that has no event to wait on from outside (a counter, the
in-process simulator's state, the hub's tables). Prefer an event or a line when there is one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import scaled


async def until(condition: Callable[[], object], timeout: float = 10.0, every: float = 0.005) -> None:
    """Return once ``condition()`` is true (checked every ``every`` s); TimeoutError after
    ``scaled(timeout)`` s."""
    async with asyncio.timeout(scaled(timeout)):
        while not condition():
            await asyncio.sleep(every)
