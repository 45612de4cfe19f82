"""What the daemon needs of its session membership: a :class:`bridge.client.SessionClient` (a hub
across the network) or a :class:`bridge.hub.local.LocalClient` (the session it hosts itself,
``session.embedded``). Both raise ``SignalError`` for refusals and hand events to the handler in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bridge.core.events import SessionEvent
from bridge.core.signal import Connection


class SessionPort(Protocol):
    @property
    def uri(self) -> str: ...

    @property
    def connection(self) -> Connection | None: ...

    @property
    def rate_limit(self) -> tuple[float, float] | None: ...

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    def set_event_handler(self, handler: Callable[[SessionEvent], None] | None) -> None: ...

    def send_nowait(self, type: str = "", data: str = "", to: str | None = None) -> bool: ...

    async def signal(self, type: str = "", data: str = "", to: str | None = None,
                     retry_after_reconnect: bool = True) -> None: ...
