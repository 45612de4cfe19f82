"""The Python session client: :class:`SessionClient`, one plain asyncio adapter around the sans-I/O
:class:`bridge.core.client.ClientSession`. The documented import path is ``bridge.session``."""

from bridge.client.session import SessionClient
from bridge.core.errors import SignalError

__all__ = ["SessionClient", "SignalError"]
