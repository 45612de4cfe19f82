"""I/O side of sessions: the session client (and, beside it, the hub and the MQTT session backend).

Import the client from here: ``from bridge.session import SessionClient, SignalError, Signal``.
"""

from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionEvent,
    Signal,
)
from bridge.session.client import SessionClient, SignalError

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
