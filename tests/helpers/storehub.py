"""A stand-in for one hub process in store tests: a started RedisSessionStore and the notes it got."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from bridge.cluster import Member, Note, RedisSessionStore, StoreConfig

_ids = itertools.count(1)


class StoreHub:
    def __init__(self, config: StoreConfig) -> None:
        self.notes: list[Note] = []
        self._changed = asyncio.Event()
        self.store = RedisSessionStore(config, self._note)
        self.id = self.store.hub_id

    def _note(self, note: Note) -> None:
        self.notes.append(note)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[Note]], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(self.notes)`` holds (re-checked at every new note)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.notes):
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; notes: {self.notes[-5:]}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def of(self, kind: type[Any]) -> list[Any]:
        return [n for n in self.notes if isinstance(n, kind)]


def member(token_id: str = "tok0", role: str = "publisher", data: str = "") -> Member:
    n = next(_ids)
    return Member(f"conn-{n}", data or f"user-{n}", role, 1_700_000_000_000 + n, token_id)


@contextlib.asynccontextmanager
async def store_hubs(urls: tuple[str, ...], **overrides: Any) -> AsyncIterator[Callable[..., Any]]:
    """``make(**config) -> StoreHub`` (started); every hub made is closed at the end."""
    made: list[StoreHub] = []
    base = StoreConfig(urls=urls, **overrides)

    async def make(**cfg: Any) -> StoreHub:
        hub = StoreHub(replace(base, hub_id=f"hub-{next(_ids)}", **cfg))
        await hub.store.start()
        made.append(hub)
        return hub

    try:
        yield make
    finally:
        for hub in made:
            await hub.store.close()
