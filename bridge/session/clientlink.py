"""The session client's link supervisor: the socket, the pump and the reconnection, under the public
API of :class:`bridge.session.client.SessionClient` (which subclasses :class:`LinkSupervisor`).

A thin pump around the pure parts in ``bridge.core``: frames are built and parsed by
``client_protocol``, the link state lives in the ``linkstate`` table, the clock offset in ``clock``.

After the first link is open (``SessionClient.connect()`` opens it itself, so that its failure is the
caller's exception) one supervisor task owns the link: it reads frames, runs a keep-alive beside the
reader, and on a drop reconnects with backoff and ``resume``. Everything runs on the caller's event
loop; no locks are needed because every state change happens between awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as _ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State

from bridge.core.client_protocol import (
    Ack,
    Connected,
    ConnectionsPage,
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
    parse_hub_frame,
    ping_frame,
    with_pages,
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
    CLIENT_DISCONNECTED,
    FORCE_DISCONNECTED,
    MAX_FRAME_BYTES,
    NETWORK_DISCONNECTED,
    NOT_CONNECTED,
    Connection,
)

log = logging.getLogger("bridge.session.client")

# Failures of one connection attempt that are worth another attempt.
RETRYABLE = (OSError, TimeoutError, WebSocketException, ProtocolError)


class SignalError(Exception):
    """A refused signal or request: ``code`` is 400/403/404/413/429 (from the hub or the local check)
    or 500 (not connected). A refused *connection* raises it too, with the hub's 401/403 or 500."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Refused(Exception):
    """The hub answered ``connect`` with an error (``code``, ``message``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message


_Out = Outgoing["asyncio.Future[None]"]


def wall_ms() -> float:
    return time.time() * 1000.0


def mono_ms() -> float:
    """The local clock of the hub clock estimate (``bridge.core.clock``): monotonic, so that a step of
    the wall clock never moves the estimate of the hub's time."""
    return time.monotonic() * 1000.0


class LinkSupervisor:
    """Owns the link to the hub and everything that moves over it; the state the public API reads.
    Not used on its own: see :class:`bridge.session.client.SessionClient` for the options."""

    def __init__(self, uri: str, token: str, *, ping_interval_s: float, link_timeout_s: float,
                 reconnect_min_s: float, reconnect_max_s: float, give_up_s: float | None,
                 open_timeout_s: float, event_queue_size: int, ssl: _ssl.SSLContext | None) -> None:
        self.uri = uri
        self._token = token
        self._ssl = ssl
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
        #: When set (SessionClient.set_event_handler), events are handed to it instead of the queue.
        self._handler: Callable[[SessionEvent], None] | None = None
        self._ws: ClientConnection | None = None
        #: The connection whose frames of this loop turn are waiting for _write_turn (None: no write due).
        self._turn_ws: ClientConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._last_rx = 0.0
        self._outbox: Outbox[asyncio.Future[None]] = Outbox()
        self._requests: dict[int, asyncio.Future[None]] = {}
        self._pings: dict[int, tuple[float, asyncio.Future[float] | None]] = {}
        self._resume_secret = ""
        self.connection: Connection | None = None
        self.connections: dict[str, Connection] = {}
        #: The hub's rate limit for this connection (signals/s, burst), as its last 'connected' said.
        self.rate_limit: tuple[float, float] | None = None
        self.stats: dict[str, int] = {"sent": 0, "acked": 0, "dropped": 0, "duplicates": 0,
                                      "reconnects": 0, "received": 0, "events_dropped": 0,
                                      "nowait_nacked": 0}

    # ---- internals: sending --------------------------------------------------------------------

    @staticmethod
    def _future() -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def _send(self, ws: ClientConnection, out: _Out) -> None:
        self._outbox.sent(out)
        self.stats["sent"] += 1
        frame = self._outbox.frame_at(out, time.monotonic())  # with queued_ms when it had to wait
        if self._write_now(ws, frame):   # the common case: no coroutine, no context manager
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame)        # closing, or back-pressure: websockets waits for the drain
        # On ConnectionClosed the supervisor sees the drop and re-queues or fails `out`.

    def _write_now(self, ws: ClientConnection, frame: str) -> bool:
        """Write one text frame now, or gather it into this loop turn's write; False (nothing written)
        when the link is not open or its write buffer is over the high-water mark (a fire-and-forget
        frame is dropped, not queued).

        The same steps as ``ws.send(str)`` up to its ``drain()``, which is the only place that coroutine
        can suspend: ``protocol.send_text`` frames the message into the protocol's buffer, and the first
        frame of a loop turn goes to the transport at once (``send_data``); while other signals await
        their answers (a burst is under way), the frames that follow it in the same turn stay in that
        buffer and :meth:`_write_turn` hands them over together at the end of the turn (a burst costs
        two ``send`` syscalls, not one per frame). Every writer of this connection (``ws.send``, pings,
        close) goes through that same buffer, so order is kept; frames are never fragmented here."""
        if ws.protocol.state is not State.OPEN or ws.paused or ws.transport.is_closing():
            return False
        ws.protocol.send_text(frame.encode())
        if self._turn_ws is ws:
            return True             # gathered: leaves with the others at the end of the turn
        ws.send_data()              # the turn's first frame leaves at once (a lone signal waits for nothing)
        if self._outbox.awaiting_answer > 1:
            # Others await their acks: those arrive together and wake their senders in one turn, so
            # more frames are likely to follow; gather them. (Not for a lone signal: the end-of-turn
            # callback costs a loop iteration, measurable in ping-pong latency.)
            self._turn_ws = ws
            asyncio.get_running_loop().call_soon(self._write_turn, ws)
        return True

    def _write_turn(self, ws: ClientConnection) -> None:
        """End of the loop turn: what :meth:`_write_now` gathered after the turn's first frame leaves in
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

    async def _send_control(self, ws: ClientConnection, frame: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame)

    # ---- internals: the link -------------------------------------------------------------------

    async def _open(self, resume: Resume | None, timeout: float) -> tuple[ClientConnection, Connected]:
        """One connection attempt: WebSocket handshake, connect frame, the hub's answer."""
        ws: ClientConnection | None = None
        try:
            async with asyncio.timeout(timeout):
                # ssl only when given: websockets takes an explicit None as "no TLS" and refuses wss://.
                tls: dict[str, Any] = {} if self._ssl is None else {"ssl": self._ssl}
                ws = await connect(self.uri, max_size=MAX_FRAME_BYTES, ping_interval=None,
                                   compression=None, open_timeout=None, close_timeout=1.0, **tls)
                sent = mono_ms()
                await ws.send(connect_frame(self._token, resume))
                frame = parse_hub_frame(await ws.recv())
                received = mono_ms()
                if isinstance(frame, Connected) and frame.more:
                    frame = with_pages(frame, await self._pages(ws))
        except BaseException:
            if ws is not None:
                ws.transport.abort()
            raise
        assert ws is not None
        if isinstance(frame, HubError):
            ws.transport.abort()
            raise Refused(frame.code, frame.message)
        if not isinstance(frame, Connected):
            ws.transport.abort()
            raise ProtocolError(f"expected 'connected', got {type(frame).__name__}")
        self._clock.add(sent, frame.server_time, received)
        return ws, frame

    @staticmethod
    async def _pages(ws: ClientConnection) -> list[ConnectionsPage]:
        """The rest of a big session's member list: the pages that follow ``connected`` at once."""
        pages: list[ConnectionsPage] = []
        while not pages or pages[-1].more:
            page = parse_hub_frame(await ws.recv())
            if not isinstance(page, ConnectionsPage):
                raise ProtocolError(f"expected a 'connections' page, got {type(page).__name__}")
            pages.append(page)
        return pages

    def _adopt(self, hello: Connected, *, first: bool) -> None:
        """Take the hub's view of the session; tell the user what changed (all of it the first time:
        a newcomer gets connectionCreated for each client already there)."""
        self.connection = hello.connection
        self._resume_secret = hello.resume_secret
        self.rate_limit = hello.rate_limit
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
                # Its age at receipt (hub clock now from the estimator, never the wall clock, minus ts).
                self._emit(Signal(frame.type, frame.data, frame.from_id, frame.seq, frame.ts, round(
                    self._clock.hub_now_ms(mono_ms()) if self._clock.samples else wall_ms()) - frame.ts))
            else:
                self.stats["duplicates"] += 1
        elif isinstance(frame, Ack | Nack):
            out = self._outbox.answered(frame.id)
            if out is not None:
                self._settle(out, frame)
            elif (fut := self._requests.pop(frame.id, None)) is not None:
                if fut.done():
                    pass
                elif isinstance(frame, Ack):
                    fut.set_result(None)
                else:
                    fut.set_exception(SignalError(frame.code, frame.message))
            elif isinstance(frame, Nack):
                # The answer to a send_nowait() signal (its ack is ignored): nobody waits for it.
                self.stats["nowait_nacked"] += 1
                log.debug("signal %d refused by the hub: %d %s", frame.id, frame.code, frame.message)
        elif isinstance(frame, Pong):
            sent, waiter = self._pings.pop(frame.id, (None, None))
            if sent is not None:
                received = mono_ms()
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

    def _settle(self, out: _Out, answer: Ack | Nack) -> None:
        """Resolve a signal's caller with the hub's answer."""
        if out.ticket.done():  # its caller gave up (cancelled)
            return
        if isinstance(answer, Ack):
            self.stats["acked"] += 1
            out.ticket.set_result(None)
        else:
            out.ticket.set_exception(SignalError(answer.code, answer.message))

    def _settle_resumed(self, hello: Connected) -> None:
        """Signals in flight at the drop with an id up to the hub's ``last_id`` were processed (their
        answer was lost with the link): settle them with the ack, or the nack the hub lists, instead
        of re-sending them. An older hub sends no ``last_id``: everything queued is re-sent."""
        if hello.last_id is None:
            return
        nacks = {n.id: n for n in hello.nacks}
        for out in self._outbox.resumed(hello.last_id):
            self._settle(out, nacks.get(out.id) or Ack(out.id))

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
                self._pings[id_] = (mono_ms(), None)
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
            except Refused as r:
                log.warning("hub refused to resume the connection (%s: %s)", r.code, r.message)
                self._finish(LinkEvent.REFUSED, NETWORK_DISCONNECTED)
                return None
            except RETRYABLE as exc:
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
            self._settle_resumed(hello)
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
        handler = self._handler
        if handler is not None:
            try:
                handler(event)
            except Exception:
                # The handler's bug must not take the link down with it (nor skip the next events).
                log.exception("session event handler failed on %s", type(event).__name__)
            return
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            # Nobody is draining events() fast enough: the oldest is the stalest, drop it.
            self._events.get_nowait()
            self.stats["events_dropped"] += 1
            self._events.put_nowait(event)
