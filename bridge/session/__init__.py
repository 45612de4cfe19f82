"""The public import path of the Python session client (DESIGN.md, "Python client API"): a re-export
of :mod:`bridge.client` and the session events, nothing else.

``from bridge.session import SessionClient, SignalError, Signal``.
"""

from bridge.client import SessionClient, SignalError
from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionEvent,
    Signal,
)

__all__ = [
    "ConnectionCreated",
    "ConnectionDestroyed",
    "Disconnected",
    "Reconnected",
    "Reconnecting",
    "SessionClient",
    "SessionEvent",
    "Signal",
    "SignalError",
]
