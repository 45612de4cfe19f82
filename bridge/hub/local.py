"""A member of a hub in the hub's own process: :class:`LocalClient`, the embedded session's link.

The bridge that hosts its session (``session.embedded``) joins it as an ordinary member - the same
token check, role, admission, member life cycle and engine as a WebSocket member - but without a
WebSocket: its :class:`LocalLink` is the :class:`~bridge.core.hub.member.Link` the hub writes to, and
each frame written is parsed there and then and handed to the event handler (a signal goes from the
operator's read loop to the bridge engine in one call chain, no queue, no task switch). What the bridge
sends goes straight to :meth:`HubState.signal` as a parsed frame (no encode, no decode).

A signal's ``age_ms`` is the hub's own clock now minus its ``ts`` (the same clock stamped it: no
estimate needed). The local member never loses its link; it leaves by :meth:`LocalClient.disconnect`
(SIGTERM) or when a moderator forces it out (``Disconnected``; the daemon then joins again).

Re-entrancy: a frame reaches the handler while the engine is still delivering the operator's signal
(the operator's ack not yet written). Signals the bridge sends from inside that handler are queued and
handed to the hub at the end of the loop turn, so the engine never runs inside itself and the operator
sees its ack before the bridge's answer, as over a WebSocket.

:class:`LocalClient` offers the part of :class:`bridge.client.SessionClient`'s API the daemon uses
(``connect``, ``disconnect``, ``set_event_handler``, ``signal``, ``send_nowait``, ``connection``,
``rate_limit``, ``uri``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from bridge.core import wire
from bridge.core.errors import SignalError
from bridge.core.events import ConnectionCreated, ConnectionDestroyed, Disconnected, SessionEvent, Signal
from bridge.core.hub import HubState, Member
from bridge.core.signal import CLIENT_DISCONNECTED, NOT_CONNECTED, Connection

log = logging.getLogger("bridge.hub")


def _now_ms() -> int:
    return int(time.time() * 1000)  # the clock the hub's adapters stamp ``ts`` with


class LocalLink:
    """The hub's side of the local member: frames go to ``on_frame`` as they are written."""

    __slots__ = ("_on_close", "_on_frame", "closed")

    def __init__(self, on_frame: Callable[[str], None], on_close: Callable[[], None]) -> None:
        self._on_frame = on_frame
        self._on_close = on_close
        self.closed = False

    def send(self, text: str) -> None:
        if not self.closed:
            self._on_frame(text)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close()


class LocalClient:
    """One membership of ``session_id`` in ``state`` (this process's hub), admitted by ``token``."""

    def __init__(self, state: HubState, session_id: str, token: str, uri: str) -> None:
        self.uri = uri
        self._state = state
        self._session_id = session_id
        self._token = token
        self._link = LocalLink(self._frame, self._link_closed)
        self._join: wire.JoinReader | None = wire.JoinReader()
        self._refused: tuple[int, str] | None = None
        self._member: Member | None = None
        self._connection: Connection | None = None
        self._handler: Callable[[SessionEvent], None] | None = None
        self._held: list[SessionEvent] = []
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._busy = False
        self._out: deque[wire.SignalFrame] = deque()
        self._flush_armed = False
        self._ended = False

    # ---- what the daemon reads ---------------------------------------------------------------------

    @property
    def connection(self) -> Connection | None:
        return self._connection

    @property
    def connected(self) -> bool:
        return self._member is not None and not self._ended

    @property
    def rate_limit(self) -> tuple[float, float] | None:
        """None: the hub does not meter its own member (its signals never cross a socket)."""
        return None

    def set_event_handler(self, handler: Callable[[SessionEvent], None] | None) -> None:
        self._handler = handler
        held, self._held = self._held, []
        for event in held:
            self._emit(event)

    # ---- life cycle --------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Join through the hub's own admission (token, role, caps). Raises SignalError (401/403/...,
        as the WebSocket client does) when refused."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Member | None] = loop.create_future()
        self._state.connect(self._session_id, wire.connect_frame(self._token), self._link, loop.time(),
                            _now_ms(), time.time(), done.set_result)
        member = await done
        if member is None:
            code, message = self._refused or (NOT_CONNECTED, "refused")
            raise SignalError(code, message)
        self._member = member

    async def disconnect(self) -> None:
        """Leave the session (the others get ``connection_destroyed``); idempotent."""
        member = self._member
        if member is not None and not self._ended and member.link is self._link:
            loop = asyncio.get_running_loop()
            self._state.receive(member, self._link, wire.disconnect_frame(), loop.time(), _now_ms())
        self._finish(CLIENT_DISCONNECTED)

    # ---- signals out -------------------------------------------------------------------------------

    def send_nowait(self, type: str = "", data: str = "", to: str | None = None) -> bool:
        """Hand a ``retry: false`` signal to the hub (its answer ignored); False when not joined."""
        if not self.connected:
            return False
        self._next_id += 1
        self._submit(wire.SignalFrame(self._next_id, type, data, to, False))
        return True

    async def signal(self, type: str = "", data: str = "", to: str | None = None,
                     retry_after_reconnect: bool = True) -> None:
        """Send a signal and wait for the hub's answer; raises SignalError on a nack."""
        if not self.connected:
            raise SignalError(NOT_CONNECTED, "not connected")
        self._next_id += 1
        fid = self._next_id
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[fid] = answer
        self._submit(wire.SignalFrame(fid, type, data, to, retry_after_reconnect))
        await answer

    def _submit(self, frame: wire.SignalFrame) -> None:
        if self._busy or self._out:
            self._out.append(frame)  # inside a delivery, or behind ones that were: keep the order
            if not self._flush_armed:
                self._flush_armed = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        self._hand(frame)

    def _flush(self) -> None:
        self._flush_armed = False
        out = self._out
        while out and not self._busy:
            self._hand(out.popleft())
        if out and not self._flush_armed:
            self._flush_armed = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _hand(self, frame: wire.SignalFrame) -> None:
        member = self._member
        if member is None or self._ended or member.link is not self._link:
            return
        self._state.signal(member, frame, _now_ms())

    # ---- frames in ---------------------------------------------------------------------------------

    def _frame(self, text: str) -> None:
        join = self._join
        if join is not None:  # the answer to connect
            answer = join.feed(text)
            if isinstance(answer, wire.HubError):
                self._refused = (answer.code, answer.message)
                self._join = None
            elif answer is not None:
                self._join = None
                self._connection = answer.connection
                # Everyone present, as the WebSocket client reports them at its first join.
                for c in answer.connections:
                    self._emit(ConnectionCreated(c))
            return
        try:
            frame = wire.parse_hub_frame(text, _now_ms())
        except wire.ProtocolError:
            log.exception("the hub wrote a frame its own member cannot read")  # a bug
            return
        if isinstance(frame, Signal | ConnectionCreated | ConnectionDestroyed):
            was, self._busy = self._busy, True
            try:
                self._emit(frame)
            finally:
                self._busy = was
        elif isinstance(frame, wire.Ack):
            self._settle(frame.id, None)
        elif isinstance(frame, wire.Nack):
            self._settle(frame.id, SignalError(frame.code, frame.message))
        elif isinstance(frame, wire.HubDisconnected):
            self._finish(frame.reason)

    def _settle(self, fid: int, error: SignalError | None) -> None:
        answer = self._waiting.pop(fid, None)
        if answer is None or answer.done():
            return
        if error is None:
            answer.set_result(None)
        else:
            answer.set_exception(error)

    def _link_closed(self) -> None:
        if self._member is not None:
            self._finish("forceDisconnected")

    def _finish(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._link.closed = True
        self._out.clear()
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(SignalError(NOT_CONNECTED, "left the session"))
        self._waiting.clear()
        if self._member is not None:
            self._emit(Disconnected(reason))

    def _emit(self, event: SessionEvent) -> None:
        handler = self._handler
        if handler is None:
            self._held.append(event)
        else:
            handler(event)
