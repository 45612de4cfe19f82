"""The session client: one connection to a session hub over wire protocol v1, with automatic reconnection.

    async with SessionClient("ws://127.0.0.1:8765", "lab-1", token) as s:
        await s.signal(type="robot.move", data='{"x":0.5}')
        async for event in s.events():
            ...

A thin pump around the pure parts in `bridge.core`: frames are built and parsed by
`client_protocol`, the link state lives in the `linkstate` table, the clock offset in `clock`. This
module only owns the socket, the timers and the futures that callers await.

Tasks: ``connect()`` opens the first link itself (its failure is the caller's exception); after that
one supervisor task owns the link: it reads frames, runs a keep-alive beside the reader, and on a drop
reconnects with backoff and ``resume``. Everything runs on the caller's event loop; no locks are
needed because every state change happens between awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from types import TracebackType
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bridge.core.client_protocol import (
    Ack,
    Connected,
    HubDisconnected,
    HubError,
    Nack,
    Outbox,
    Outgoing,
    Pong,
    ProtocolError,
    Resume,
    SeqFilter,
    connect_frame,
    disconnect_frame,
    force_disconnect_frame,
    parse_hub_frame,
    ping_frame,
)
from bridge.core.clock import ClockEstimator
from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionEvent,
    Signal,
)
from bridge.core.linkstate import LinkEvent, LinkMachine, LinkState, Notice, backoff_delay
from bridge.core.signal import (
    BAD_REQUEST,
    CLIENT_DISCONNECTED,
    FORCE_DISCONNECTED,
    MAX_FRAME_BYTES,
    NETWORK_DISCONNECTED,
    NOT_CONNECTED,
    Connection,
    check_signal,
)

log = logging.getLogger(__name__)

# Failures of one connection attempt that are worth another attempt.
_RETRYABLE = (OSError, TimeoutError, WebSocketException, ProtocolError)


class SignalError(Exception):
    """A refused signal or request: ``code`` is 400/403/404/413/429 (from the hub or the local check)
    or 500 (not connected). A refused *connection* raises it too, with the hub's 401/403 or 500."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message


_Out = Outgoing["asyncio.Future[None]"]


def _wall_ms() -> float:
    return time.time() * 1000.0


class SessionClient:
    """One connection to a session; see the module docstring and DESIGN.md (Python client API).

    Options: ``ping_interval_s`` between keep-alive pings; ``link_timeout_s`` of silence after which
    the link is considered lost; ``reconnect_min_s``/``reconnect_max_s`` bound the exponential backoff
    (jittered to 50-100 %); ``give_up_s`` after a drop before ending with Disconnected (None: never);
    ``open_timeout_s`` per connection attempt; ``event_queue_size`` events kept for ``events()``
    (when full, the oldest is dropped and counted in ``stats["events_dropped"]``).
    """

    def __init__(self, url: str, session_id: str, token: str, *, ping_interval_s: float = 2.0,
                 link_timeout_s: float = 6.0, reconnect_min_s: float = 0.5, reconnect_max_s: float = 5.0,
                 give_up_s: float | None = 60.0, open_timeout_s: float = 10.0,
                 event_queue_size: int = 1000) -> None:
        self.uri = f"{url.rstrip('/')}/v1/session/{quote(session_id, safe='')}"
        self._token = token
        self._ping_interval_s = ping_interval_s
        self._link_timeout_s = link_timeout_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._give_up_s = give_up_s
        self._open_timeout_s = open_timeout_s
        self._link = LinkMachine()
        self._clock = ClockEstimator()
        self._seq = SeqFilter()
        self._events: asyncio.Queue[SessionEvent] = asyncio.Queue(max(1, event_queue_size))
        self._ws: ClientConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._last_rx = 0.0
        self._outbox: Outbox[asyncio.Future[None]] = Outbox()
        self._requests: dict[int, asyncio.Future[None]] = {}
        self._pings: dict[int, tuple[float, asyncio.Future[float] | None]] = {}
        self._resume_secret = ""
        self.connection: Connection | None = None
        self.connections: dict[str, Connection] = {}
        self.stats: dict[str, int] = {"sent": 0, "acked": 0, "dropped": 0, "duplicates": 0,
                                      "reconnects": 0, "received": 0, "events_dropped": 0}

    # ---- public state --------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """Link state name: connecting, connected, reconnecting or closed."""
        return self._link.state.value

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def clock_offset_ms(self) -> float:
        """Hub clock minus local clock, ms (min-RTT filtered)."""
        return self._clock.offset_ms

    @property
    def rtt_ms(self) -> float | None:
        """Round-trip time of the latest connect/ping exchange, ms."""
        return self._clock.rtt_ms

    def hub_time_ms(self) -> float:
        """Now on the hub's clock: the local wall clock plus the offset (to judge a signal's age by ts)."""
        return _wall_ms() + self._clock.offset_ms

    # ---- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> SessionClient:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        """Open the first link. Raises SignalError: the hub's 401/403 for a refused token, 500 when
        the hub cannot be reached within ``open_timeout_s``."""
        if self._link.state is not LinkState.CONNECTING or self._supervisor is not None:
            raise RuntimeError("connect() may be called once")
        try:
            ws, hello = await self._open(None, self._open_timeout_s)
        except _Refused as r:
            self._link.handle(LinkEvent.REFUSED)
            raise SignalError(r.code, r.message) from None
        except _RETRYABLE as exc:
            self._link.handle(LinkEvent.LOST)
            raise SignalError(NOT_CONNECTED, f"cannot connect to {self.uri}: {exc or type(exc).__name__}") \
                from None
        self._link.handle(LinkEvent.UP)
        self._adopt(hello, first=True)
        self._ws = ws  # usable at once, before the supervisor task first runs
        self._supervisor = asyncio.create_task(self._supervise(ws), name=f"session-client {self.uri}")

    async def disconnect(self) -> None:
        """Leave the session cleanly (idempotent). Pending signals fail with 500; events() then ends
        with Disconnected("clientDisconnected")."""
        self._closing = True
        ws = self._ws
        if ws is not None and self._link.connected:
            with contextlib.suppress(ConnectionClosed, OSError):
                await ws.send(disconnect_frame())
        task = self._supervisor
        if task is not None and not task.done():
            if ws is not None:
                # The hub closes the link after a disconnect; don't wait for it forever.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(task), self._open_timeout_s)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish(LinkEvent.CLOSE, CLIENT_DISCONNECTED)

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Events in order of arrival; ends after yielding Disconnected (at once when closed and drained)."""
        while not (self._link.state is LinkState.CLOSED and self._events.empty()):
            event = await self._events.get()
            yield event
            if isinstance(event, Disconnected):
                return

    # ---- requests ------------------------------------------------------------------------------

    async def signal(self, type: str = "", data: str = "", to: str | None = None,
                     retry_after_reconnect: bool = True) -> None:
        """Send a signal (broadcast, or to connection ``to``) and wait for the hub's ack.

        Raises SignalError: 400/413 from the local check, 400/403/404/413/429 from the hub, 500 when
        not connected. While reconnecting, a retry signal is queued and sent after the resume (and
        re-sent until acked); a non-retry one fails at once and counts in ``stats["dropped"]``.
        """
        refusal = check_signal(type, data)
        if refusal is not None:
            raise SignalError(refusal.code, refusal.message)
        if to is not None and (not isinstance(to, str) or not to):
            raise SignalError(BAD_REQUEST, "'to' must be a connection id")
        ws = self._ws
        state = self._link.state
        if state is LinkState.CONNECTED and ws is not None:
            out = self._outbox.new(type, data, to, retry_after_reconnect, self._future())
            if self._outbox.has_queued:  # a resume is still flushing: keep the order
                self._outbox.enqueue(out)
            else:
                await self._send(ws, out)
        elif state is LinkState.RECONNECTING or (state is LinkState.CONNECTED and ws is None):
            if not retry_after_reconnect:
                self.stats["dropped"] += 1
                raise SignalError(NOT_CONNECTED, "not connected (reconnecting): signal dropped")
            out = self._outbox.new(type, data, to, True, self._future())
            self._outbox.enqueue(out)
        else:
            raise SignalError(NOT_CONNECTED, f"not connected ({state.value})")
        await out.ticket

    async def ping(self) -> float:
        """One keep-alive exchange now; returns its round-trip time in ms (also updates the clock)."""
        ws = self._require_link()
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        id_ = self._outbox.new_id()
        self._pings[id_] = (_wall_ms(), fut)
        await self._send_control(ws, ping_frame(id_))
        return await fut

    async def force_disconnect(self, connection_id: str) -> None:
        """Put another connection out of the session (moderators only: 403 otherwise; 404 unknown)."""
        ws = self._require_link()
        fut = self._future()
        id_ = self._outbox.new_id()
        self._requests[id_] = fut
        await self._send_control(ws, force_disconnect_frame(id_, connection_id))
        await fut

    # ---- internals: sending --------------------------------------------------------------------

    @staticmethod
    def _future() -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def _send(self, ws: ClientConnection, out: _Out) -> None:
        self._outbox.sent(out)
        self.stats["sent"] += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(out.frame)
        # On ConnectionClosed the supervisor sees the drop and re-queues or fails `out`.

    def _require_link(self) -> ClientConnection:
        ws = self._ws
        if ws is None or not self._link.connected:
            raise SignalError(NOT_CONNECTED, f"not connected ({self.state})")
        return ws

    async def _send_control(self, ws: ClientConnection, frame: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame)

    # ---- internals: the link -------------------------------------------------------------------

    async def _open(self, resume: Resume | None, timeout: float) -> tuple[ClientConnection, Connected]:
        """One connection attempt: WebSocket handshake, connect frame, the hub's answer."""
        ws: ClientConnection | None = None
        try:
            async with asyncio.timeout(timeout):
                ws = await connect(self.uri, max_size=MAX_FRAME_BYTES, ping_interval=None,
                                   compression=None, open_timeout=None, close_timeout=1.0)
                sent = _wall_ms()
                await ws.send(connect_frame(self._token, resume))
                frame = parse_hub_frame(await ws.recv())
                received = _wall_ms()
        except BaseException:
            if ws is not None:
                ws.transport.abort()
            raise
        assert ws is not None
        if isinstance(frame, HubError):
            ws.transport.abort()
            raise _Refused(frame.code, frame.message)
        if not isinstance(frame, Connected):
            ws.transport.abort()
            raise ProtocolError(f"expected 'connected', got {type(frame).__name__}")
        self._clock.add(sent, frame.server_time, received)
        return ws, frame

    def _adopt(self, hello: Connected, *, first: bool) -> None:
        """Take the hub's view of the session; tell the user what changed (all of it the first time:
        a newcomer gets connectionCreated for each client already there)."""
        self.connection = hello.connection
        self._resume_secret = hello.resume_secret
        now = {c.id: c for c in hello.connections if c.id != hello.connection.id}
        if not first:
            for cid, gone in self.connections.items():
                if cid not in now:
                    self._emit(ConnectionDestroyed(gone, NETWORK_DISCONNECTED))
        for cid, conn in now.items():
            if first or cid not in self.connections:
                self._emit(ConnectionCreated(conn))
        self.connections = now

    async def _supervise(self, ws: ClientConnection | None) -> None:
        try:
            await self._run_links(ws)
        except Exception:
            # A bug here must not leave callers waiting on a client that looks connected.
            log.exception("session client failed; leaving the session")
            self._finish(LinkEvent.CLOSE, NETWORK_DISCONNECTED)

    async def _run_links(self, ws: ClientConnection | None) -> None:
        while ws is not None:
            ending = await self._serve(ws)
            if ending is not None or self._closing:
                self._finish(LinkEvent.CLOSE, ending or CLIENT_DISCONNECTED)
                return
            if self._link.handle(LinkEvent.LOST) is Notice.RECONNECTING:
                log.info("link to %s lost: reconnecting", self.uri)
                self._emit(Reconnecting())
            self._requeue_inflight()
            ws = await self._reconnect()

    async def _serve(self, ws: ClientConnection) -> str | None:
        """Pump frames until the link ends; returns the hub's `disconnected` reason, or None for a drop."""
        self._ws = ws
        self._last_rx = time.monotonic()
        keepalive = asyncio.create_task(self._keepalive(ws))
        # Signals queued during an outage go out beside the reader, so acks are read as they come.
        flusher = asyncio.create_task(self._flush(ws)) if self._outbox.has_queued else None
        try:
            async for message in ws:
                self._last_rx = time.monotonic()
                try:
                    frame = parse_hub_frame(message)
                except ProtocolError as exc:
                    log.warning("ignoring a bad frame from the hub: %s", exc)
                    continue
                if isinstance(frame, HubDisconnected):
                    return frame.reason or FORCE_DISCONNECTED
                self._dispatch(frame)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            keepalive.cancel()
            if flusher is not None:
                flusher.cancel()
            ws.transport.abort()
        return None

    def _dispatch(self, frame: object) -> None:
        if isinstance(frame, Signal):  # the hot path first
            if self._seq.accept(frame.seq):
                self.stats["received"] += 1
                self._emit(frame)
            else:
                self.stats["duplicates"] += 1
        elif isinstance(frame, Ack | Nack):
            error = None if isinstance(frame, Ack) else SignalError(frame.code, frame.message)
            out = self._outbox.answered(frame.id)
            fut = out.ticket if out is not None else self._requests.pop(frame.id, None)
            if out is not None and error is None:
                self.stats["acked"] += 1
            if fut is not None and not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)
        elif isinstance(frame, Pong):
            sent, waiter = self._pings.pop(frame.id, (None, None))
            if sent is not None:
                received = _wall_ms()
                self._clock.add(sent, frame.server_time, received)
                if waiter is not None and not waiter.done():
                    waiter.set_result(received - sent)
        elif isinstance(frame, ConnectionCreated):
            cid = frame.connection.id
            if self.connection is not None and cid != self.connection.id and cid not in self.connections:
                self.connections[cid] = frame.connection
                self._emit(frame)
        elif isinstance(frame, ConnectionDestroyed):
            if self.connections.pop(frame.connection.id, None) is not None:
                self._emit(frame)
        else:
            log.warning("ignoring an unexpected %s frame from the hub", type(frame).__name__)

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Ping every ping_interval_s; declare the link lost after link_timeout_s without any frame."""
        tick = min(self._ping_interval_s, self._link_timeout_s / 4)
        next_ping = time.monotonic()
        while True:
            now = time.monotonic()
            if now - self._last_rx > self._link_timeout_s:
                log.info("no frame from the hub for %.1f s: link lost", now - self._last_rx)
                ws.transport.abort()
                return
            if now >= next_ping:
                next_ping = now + self._ping_interval_s
                id_ = self._outbox.new_id()
                self._pings[id_] = (_wall_ms(), None)
                await self._send_control(ws, ping_frame(id_))
            await asyncio.sleep(tick)

    def _requeue_inflight(self) -> None:
        """At a drop: unacked retry signals are queued again, the others fail with 500."""
        for out in self._outbox.link_lost():
            if not out.ticket.done():
                self.stats["dropped"] += 1
                out.ticket.set_exception(SignalError(NOT_CONNECTED, "link lost before the hub's ack"))
        self._fail_requests("link lost before the hub answered")

    async def _reconnect(self) -> ClientConnection | None:
        """Retry with backoff until resumed (returns the new link) or refused/given up (returns None)."""
        assert self.connection is not None
        deadline = None if self._give_up_s is None else time.monotonic() + self._give_up_s
        attempt = 0
        while True:
            delay = backoff_delay(attempt, self._reconnect_min_s, self._reconnect_max_s,
                                  random.uniform(0.5, 1.0))
            attempt += 1
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(delay)
            timeout = self._open_timeout_s
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    log.warning("gave up reconnecting to %s after %.0f s", self.uri, self._give_up_s)
                    self._finish(LinkEvent.GAVE_UP, NETWORK_DISCONNECTED)
                    return None
            resume = Resume(self.connection.id, self._resume_secret, self._seq.last_seq)
            try:
                ws, hello = await self._open(resume, timeout)
            except _Refused as r:
                log.warning("hub refused to resume the connection (%s: %s)", r.code, r.message)
                self._finish(LinkEvent.REFUSED, NETWORK_DISCONNECTED)
                return None
            except _RETRYABLE as exc:
                log.debug("reconnection attempt %d failed: %r", attempt, exc)
                self._link.handle(LinkEvent.LOST)
                continue
            if not hello.resumed or hello.connection.id != self.connection.id:
                # A fresh connection is not ours: others already saw us leave. Give it back.
                with contextlib.suppress(ConnectionClosed, OSError):
                    await ws.send(disconnect_frame())
                ws.transport.abort()
                self._finish(LinkEvent.REFUSED, NETWORK_DISCONNECTED)
                return None
            self._link.handle(LinkEvent.UP)
            self.stats["reconnects"] += 1
            log.info("link to %s resumed", self.uri)
            self._emit(Reconnected())
            self._adopt(hello, first=False)
            return ws

    async def _flush(self, ws: ClientConnection) -> None:
        """Send what was queued during the outage, in order. New signals queue behind until empty."""
        while (out := self._outbox.next_queued()) is not None:
            if not out.ticket.done():  # its caller may have given up (cancelled)
                await self._send(ws, out)

    def _fail_requests(self, why: str) -> None:
        error = SignalError(NOT_CONNECTED, why)
        for fut in self._requests.values():
            if not fut.done():
                fut.set_exception(error)
        for _, waiter in self._pings.values():
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        self._requests.clear()
        self._pings.clear()

    def _finish(self, event: LinkEvent, reason: str) -> None:
        """End the session (idempotent): fail everything pending, emit Disconnected once."""
        if self._link.handle(event) is Notice.DISCONNECTED:
            log.info("left session %s: %s", self.uri, reason)
            self._emit(Disconnected(reason))
        if self._link.state is not LinkState.CLOSED:
            return
        error = SignalError(NOT_CONNECTED, f"not connected (session closed: {reason})")
        for out in self._outbox.clear():
            if not out.ticket.done():
                out.ticket.set_exception(error)
        self._fail_requests(f"session closed: {reason}")
        if self._ws is not None:
            self._ws.transport.abort()

    def _emit(self, event: SessionEvent) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            # Nobody is draining events() fast enough: the oldest is the stalest, drop it.
            self._events.get_nowait()
            self.stats["events_dropped"] += 1
            self._events.put_nowait(event)
