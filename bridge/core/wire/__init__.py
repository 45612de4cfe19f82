"""Wire protocol v1, for both roles: the one place that knows the frames (docs/protocol.md).

- :mod:`bridge.core.wire.client_frames`: what a client sends (``connect``, ``signal``, ``ping``,
  ``disconnect``, ``force_disconnect``): dataclasses, the hub's :func:`parse_client_frame`, the
  client's encoders. One :class:`Resume`.
- :mod:`bridge.core.wire.hub_frames`: what the hub sends (``connected`` and its ``connections`` pages,
  ``ack``/``nack``, ``pong``, ``signal``, ``connection_created``/``_destroyed``, ``error``,
  ``disconnected``): the hub's encoders, dataclasses, the client's :func:`parse_hub_frame`.
- :mod:`bridge.core.wire.common`: the JSON encoder, the text check, :class:`WireError` (the hub
  refuses a client frame) and :class:`ProtocolError` (the client skips a hub frame).

Import from here (``from bridge.core import wire``; ``wire.parse_client_frame(text)``).
"""

from bridge.core.wire.client_frames import (
    ClientFrame,
    ConnectFrame,
    DisconnectFrame,
    ForceDisconnectFrame,
    PingFrame,
    Resume,
    SignalFrame,
    connect_frame,
    disconnect_frame,
    force_disconnect_frame,
    parse_client_frame,
    ping_frame,
    signal_frame,
    with_queued_ms,
)
from bridge.core.wire.common import ProtocolError, WireError, dumps, is_text
from bridge.core.wire.hub_frames import (
    JOIN_FRAME_BUDGET,
    LIMITS,
    Ack,
    Connected,
    ConnectionsPage,
    HubDisconnected,
    HubError,
    HubFrame,
    JoinReader,
    Nack,
    Pong,
    SignalBody,
    ack,
    connected_frames,
    connection_created,
    connection_destroyed,
    disconnected,
    error,
    nack,
    parse_hub_frame,
    pong,
    with_pages,
)

__all__ = [
    "JOIN_FRAME_BUDGET", "LIMITS", "Ack", "ClientFrame", "ConnectFrame", "Connected", "ConnectionsPage",
    "DisconnectFrame", "ForceDisconnectFrame", "HubDisconnected", "HubError", "HubFrame", "JoinReader",
    "Nack", "PingFrame", "Pong", "ProtocolError", "Resume", "SignalBody", "SignalFrame", "WireError", "ack",
    "connect_frame", "connected_frames", "connection_created", "connection_destroyed", "disconnect_frame",
    "disconnected", "dumps", "error", "force_disconnect_frame", "is_text", "nack", "parse_client_frame",
    "parse_hub_frame", "ping_frame", "pong", "signal_frame", "with_pages", "with_queued_ms",
]
