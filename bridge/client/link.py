"""The session client's WebSocket: opening a link (handshake, ``connect``, the hub's answer) and the
write path that skips websockets' ``send()`` coroutine on the hot path.

Everything here that reaches below websockets' public API is listed in :data:`WEBSOCKETS_INTERNALS`;
``tests/test_websockets_contract.py`` checks that each is still there and behaves as relied on, and
pyproject.toml pins websockets below the next major version.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.protocol import State

from bridge.core.client import ClientSession
from bridge.core.signal import MAX_FRAME_BYTES
from bridge.core.wire import Connected, HubError, JoinReader, ProtocolError

#: Failures of one connection attempt that are worth another attempt.
RETRYABLE = (OSError, TimeoutError, WebSocketException, ProtocolError)

#: What :class:`Writer` uses of websockets beyond ``send``/``recv`` (websockets.asyncio, 13 to 17):
#: ``ClientConnection.protocol`` (the sans-I/O protocol), ``.transport``, ``.paused`` (the write
#: buffer is over its high-water mark), ``.send_data()`` (hand the protocol's bytes to the transport),
#: ``Protocol.state``, ``Protocol.send_text(bytes)`` and ``Protocol.data_to_send() -> list[bytes]``.
WEBSOCKETS_INTERNALS = ("protocol", "transport", "paused", "send_data", "state", "send_text",
                        "data_to_send")


async def open_link(session: ClientSession, uri: str, token: str, ssl: _ssl.SSLContext | None,
                    timeout: float) -> tuple[ClientConnection, Connected | HubError, float, float]:
    """One connection attempt within ``timeout`` s: WebSocket handshake, ``connect`` frame (with
    ``resume`` when the session is reconnecting), the hub's whole answer. Returns the link, the answer,
    and the monotonic times the ``connect`` left and the answer arrived (for :meth:`ClientSession.joined`).
    Raises one of :data:`RETRYABLE`; the socket is closed on any failure."""
    ws: ClientConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            # ssl only when given: websockets takes an explicit None as "no TLS" and refuses wss://.
            tls: dict[str, Any] = {} if ssl is None else {"ssl": ssl}
            ws = await connect(uri, max_size=MAX_FRAME_BYTES, ping_interval=None, compression=None,
                               open_timeout=None, close_timeout=1.0, **tls)
            sent = time.monotonic()
            await ws.send(session.connect_frame(token))
            first = await ws.recv()
            received = time.monotonic()  # the clock sample is the connect/connected exchange alone
            reader = JoinReader()
            answer = reader.feed(first)
            while answer is None:  # the member list's pages follow at once
                answer = reader.feed(await ws.recv())
    except BaseException:
        if ws is not None:
            ws.transport.abort()
        raise
    if isinstance(answer, HubError):
        ws.transport.abort()
    return ws, answer, sent, received


class Writer:
    """Writes text frames to one client's current link, gathering a burst into one transport write.

    :meth:`write_now` does the same steps as ``ws.send(str)`` up to its ``drain()``, which is the only
    place that coroutine can suspend: ``protocol.send_text`` frames the message into the protocol's
    buffer, and the first frame of a loop turn goes to the transport at once (``send_data``); while
    other signals await their answers (a burst is under way), the frames that follow it in the same
    turn stay in that buffer and :meth:`_write_turn` hands them over together at the end of the turn
    (a burst costs two ``send`` syscalls, not one per frame). Every writer of the connection
    (``ws.send``, pings, close) goes through that same buffer, so order is kept; frames are never
    fragmented here."""

    __slots__ = ("_turn_ws",)

    def __init__(self) -> None:
        #: The connection whose frames of this loop turn wait for _write_turn (None: no write due).
        self._turn_ws: ClientConnection | None = None

    def write_now(self, ws: ClientConnection, frame: str, gather: bool) -> bool:
        """Write ``frame`` now, or gather it into this loop turn's write when ``gather`` (others await
        their answers, so more frames are likely to follow in this turn). False, nothing written, when
        the link is not open or its write buffer is over the high-water mark."""
        if ws.protocol.state is not State.OPEN or ws.paused or ws.transport.is_closing():
            return False
        ws.protocol.send_text(frame.encode())
        if self._turn_ws is ws:
            return True             # gathered: leaves with the others at the end of the turn
        ws.send_data()              # the turn's first frame leaves at once (a lone signal waits for nothing)
        if gather:
            # Acks arrive together and wake their senders in one turn. (Not for a lone signal: the
            # end-of-turn callback costs a loop iteration, measurable in ping-pong latency.)
            self._turn_ws = ws
            asyncio.get_running_loop().call_soon(self._write_turn, ws)
        return True

    def _write_turn(self, ws: ClientConnection) -> None:
        """End of the loop turn: what :meth:`write_now` gathered after the turn's first frame leaves in
        one transport write (nothing is left when a ``ws.send`` in the turn wrote it). A closing
        transport takes nothing: the supervisor re-queues or fails what was in flight."""
        if self._turn_ws is ws:
            self._turn_ws = None
        chunks = ws.protocol.data_to_send()
        if not chunks or ws.transport.is_closing():
            return
        if all(chunks):
            ws.transport.write(b"".join(chunks))
            return
        # An empty chunk is the protocol asking for end-of-stream (it is closing): websockets' order.
        for chunk in chunks:
            if chunk:
                ws.transport.write(chunk)
            elif ws.transport.can_write_eof():
                ws.transport.write_eof()
            else:
                ws.transport.close()
