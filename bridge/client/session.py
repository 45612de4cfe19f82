"""The session client: one connection to a session hub over wire protocol v1, with automatic reconnection.

    async with SessionClient("ws://127.0.0.1:8765", "lab-1", token) as s:
        await s.signal(type="robot.move", data='{"x":0.5}')
        async for event in s.events():
            ...

This is the public API (DESIGN.md, "Python client API") and one plain asyncio adapter: every decision
is taken by the sans-I/O :class:`bridge.core.client.ClientSession`; this class only pumps frames and
timers between it and the socket (``bridge.client.link``), and hands its events to the user.

After the first link is open (``connect()`` opens it itself, so that its failure is the caller's
exception) one supervisor task owns the link: it reads frames, runs a keep-alive beside the reader,
and on a drop reconnects with backoff and ``resume``. Everything runs on the caller's event loop; no
locks are needed because every state change happens between awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as _ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.client.link import RETRYABLE, Writer, open_link
from bridge.core.client import ClientSession, LinkState
from bridge.core.errors import SignalError
from bridge.core.events import Disconnected, SessionEvent
from bridge.core.signal import CLIENT_DISCONNECTED, NETWORK_DISCONNECTED, NOT_CONNECTED, Connection
from bridge.core.wire import HubError, ProtocolError, disconnect_frame

log = logging.getLogger("bridge.session.client")


class SessionClient:
    """One connection to a session; see the module docstring and DESIGN.md (Python client API).

    Options: ``ping_interval_s`` between keep-alive pings; ``link_timeout_s`` of silence after which
    the link is considered lost; ``reconnect_min_s``/``reconnect_max_s`` bound the exponential backoff
    (jittered to 50-100 %); ``give_up_s`` after a drop before ending with Disconnected (None: never);
    ``open_timeout_s`` per connection attempt; ``event_queue_size`` events kept for ``events()``
    (when full, the oldest is dropped and counted in ``stats["events_dropped"]``); ``ssl`` the TLS
    context for a ``wss://`` hub (None: the system's default CA store; e.g.
    ``ssl.create_default_context(cafile="hub-ca.pem")`` for a private CA or a self-signed hub).

    ``url`` is one hub base URL, or several (a list, or one string of URLs separated by commas) of
    hubs that share sessions (docs/cluster.md): the first connect tries them in order, and after a
    drop the resume goes to the next one, then round the list (``bridge.core.client.hubs``); an
    empty one raises ValueError.
    """

    def __init__(self, url: str | Sequence[str], session_id: str, token: str, *, ping_interval_s: float = 2.0,
                 link_timeout_s: float = 6.0, reconnect_min_s: float = 0.5, reconnect_max_s: float = 5.0,
                 give_up_s: float | None = 60.0, open_timeout_s: float = 10.0,
                 event_queue_size: int = 1000, ssl: _ssl.SSLContext | None = None) -> None:
        self._path = f"/v1/session/{quote(session_id, safe='')}"
        self._token = token
        self._ssl = ssl
        self._core = ClientSession(ping_interval_s=ping_interval_s, link_timeout_s=link_timeout_s,
                                   reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s,
                                   give_up_s=give_up_s, open_timeout_s=open_timeout_s, urls=url)
        self._writer = Writer()
        self._events: asyncio.Queue[SessionEvent] = asyncio.Queue(max(1, event_queue_size))
        #: When set (set_event_handler), events are handed to it instead of the queue.
        self._handler: Callable[[SessionEvent], None] | None = None
        #: The open link; set exactly while the core is connected (between awaits).
        self._ws: ClientConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    # ---- public state --------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The session's WebSocket URI on the hub dialled now (the current link's, while connected)."""
        return self._core.hubs.url.rstrip("/") + self._path

    @property
    def urls(self) -> tuple[str, ...]:
        """The hub base URLs this client may dial, in order."""
        return self._core.hubs.urls

    @property
    def state(self) -> str:
        """Link state name: connecting, connected, reconnecting or closed."""
        return self._core.state.value

    @property
    def connected(self) -> bool:
        return self._core.connected

    @property
    def connection(self) -> Connection | None:
        """This client's own connection (None before the first join)."""
        return self._core.connection

    @property
    def connections(self) -> dict[str, Connection]:
        """The others in the session, by connection id."""
        return self._core.connections

    @property
    def rate_limit(self) -> tuple[float, float] | None:
        """The hub's rate limit for this connection (signals/s, burst), as its last 'connected' said."""
        return self._core.rate_limit

    @property
    def stats(self) -> dict[str, int]:
        """Counters: sent, acked, dropped, duplicates, reconnects, received, events_dropped, nowait_nacked."""
        return self._core.stats

    @property
    def clock_offset_ms(self) -> float:
        """Hub clock minus the local wall clock now, ms (min-RTT filtered; the estimate itself is kept
        against the monotonic clock, so a wall-clock step shows here at once and nowhere else)."""
        return self.hub_time_ms() - time.time() * 1000.0

    @property
    def rtt_ms(self) -> float | None:
        """Round-trip time of the latest connect/ping exchange, ms."""
        return self._core.clock.rtt_ms

    def hub_time_ms(self) -> float:
        """Now on the hub's clock: estimated from the local monotonic clock, never the wall clock, so
        that a wall-clock step neither ages nor rejuvenates signals (see ``bridge.core.client.clock``).
        Before the first exchange (not connected yet) the local wall clock is the only guess."""
        if self._core.clock.samples == 0:
            return time.time() * 1000.0
        return self._core.hub_now_ms(time.monotonic())

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
        if self._core.state is not LinkState.CONNECTING or self._supervisor is not None:
            raise RuntimeError("connect() may be called once")
        failures: list[str] = []
        while True:
            try:
                ws, answer, sent, received = await open_link(self._core, self.uri, self._token, self._ssl,
                                                             self._core.open_timeout_s)
                break
            except RETRYABLE as exc:
                failures.append(f"{self.uri}: {exc or type(exc).__name__}")
                if not self._core.first_failed():
                    raise SignalError(NOT_CONNECTED, f"cannot connect to {'; '.join(failures)}") from None
                log.info("cannot connect to %s; trying %s", failures[-1], self.uri)
        events, _ = self._core.joined(answer, sent, received)  # SignalError when refused
        self._ws = ws  # usable at once, before the supervisor task first runs
        self._emit_all(events)
        self._supervisor = asyncio.create_task(self._supervise(ws), name=f"session-client {self.uri}")

    async def disconnect(self) -> None:
        """Leave the session cleanly (idempotent). Pending signals fail with 500; events() then ends
        with Disconnected("clientDisconnected")."""
        self._closing = True
        ws = self._ws
        if ws is not None and self._core.connected:
            with contextlib.suppress(ConnectionClosed, OSError):
                await ws.send(disconnect_frame())
        task = self._supervisor
        if task is not None and not task.done():
            if ws is not None:
                # The hub closes the link after a disconnect; don't wait for it forever.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(task), self._core.open_timeout_s)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish(CLIENT_DISCONNECTED)

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Events in order of arrival; ends after yielding Disconnected (at once when closed and drained)."""
        while not (self._core.state is LinkState.CLOSED and self._events.empty()):
            event = await self._events.get()
            yield event
            if isinstance(event, Disconnected):
                return

    def set_event_handler(self, handler: Callable[[SessionEvent], None] | None) -> None:
        """Take events by callback instead of through ``events()`` (None: back to the queue).

        ``handler`` is called synchronously by the client's reader, once per event, in order of
        arrival (events already queued are handed over first); nothing is queued, so nothing is
        dropped. It must not block. An exception it raises is logged and the link carries on. This
        saves the queue and a task switch per event: for a consumer that handles events at once (the
        bridge daemon)."""
        self._handler = handler
        if handler is not None:
            while not self._events.empty():
                self._emit(self._events.get_nowait())

    # ---- requests ------------------------------------------------------------------------------

    async def signal(self, type: str = "", data: str = "", to: str | None = None,
                     retry_after_reconnect: bool = True) -> None:
        """Send a signal (broadcast, or to connection ``to``) and wait for the hub's ack.

        Raises SignalError: 400/413 from the local check, 400/403/404/413/429 from the hub, 500 when
        not connected. While reconnecting, a retry signal is queued and sent after the resume (one in
        flight at a drop is re-sent, unless the resume's ``last_id`` shows the hub had it: then it is
        settled with its lost answer); a non-retry one fails at once and counts in ``stats["dropped"]``.
        A signal that waited (queued, or re-sent) tells the hub how long (``queued_ms``): its ``ts`` at
        the receivers is when this was called, so a stale guard downstream judges its true age.
        """
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        frame = self._core.signal(type, data, to, retry_after_reconnect, ticket, time.monotonic())
        if frame is not None:
            await self._write(frame)
        await ticket

    def send_nowait(self, type: str = "", data: str = "", to: str | None = None) -> bool:
        """Send a signal with ``retry`` false and forget it: no ack awaited, no future, no task.

        For signals whose ack nobody needs (telemetry, status): the frame is written at once, in order
        with the other signals of this client. Returns False, counted in ``stats["dropped"]``, when it
        cannot be written now (not connected, reconnecting, or the link's write buffer is full); it is
        never queued. The hub's ack is ignored; a nack is counted in ``stats["nowait_nacked"]``.
        Raises SignalError (400/413) for a signal the local check refuses.
        """
        core = self._core
        frame = core.nowait_frame(type, data, to)
        ws = self._ws
        return core.nowait_written(frame is not None and ws is not None
                                   and self._writer.write_now(ws, frame, core.awaiting_answer > 1))

    async def ping(self) -> float:
        """One keep-alive exchange now; returns its round-trip time in ms (also updates the clock)."""
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        await self._send_control(self._core.ping_frame(time.monotonic(), waiter))
        return await waiter

    async def force_disconnect(self, connection_id: str) -> None:
        """Put another connection out of the session (moderators only: 403 otherwise; 404 unknown)."""
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._send_control(self._core.force_disconnect_frame(connection_id, ticket))
        await ticket

    # ---- the pump ------------------------------------------------------------------------------

    async def _write(self, frame: str) -> None:
        ws = self._ws
        if ws is None:  # cannot be while the core is connected; the ticket fails at the drop
            return
        if self._writer.write_now(ws, frame, self._core.awaiting_answer > 1):  # no coroutine: the common case
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame)        # closing, or back-pressure: websockets waits for the drain
        # On ConnectionClosed the supervisor sees the drop and re-queues or fails what was sent.

    async def _send_control(self, frame: str) -> None:
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)

    async def _supervise(self, ws: ClientConnection | None) -> None:
        try:
            while ws is not None:
                ended = await self._serve(ws)
                if ended or self._closing:
                    self._finish(CLIENT_DISCONNECTED)
                    return
                events = self._core.link_lost(time.monotonic())
                if events:
                    log.info("link to %s lost: reconnecting", self.uri)
                self._emit_all(events)
                ws = await self._reconnect()
        except Exception:
            # A bug here must not leave callers waiting on a client that looks connected.
            log.exception("session client failed; leaving the session")
            self._finish(NETWORK_DISCONNECTED)

    async def _serve(self, ws: ClientConnection) -> bool:
        """Pump frames until the link ends; True when the session ended (the hub put us out)."""
        core, emit = self._core, self._emit
        self._ws = ws
        keepalive = asyncio.create_task(self._keepalive(ws))
        # Signals queued during an outage go out beside the reader, so acks are read as they come.
        flusher = asyncio.create_task(self._flush()) if core.outbox.has_queued else None
        try:
            async for message in ws:
                try:
                    event = core.receive(message, time.monotonic())
                except ProtocolError as exc:
                    log.warning("ignoring a bad frame from the hub: %s", exc)
                    continue
                if event is not None:
                    emit(event)
                    if isinstance(event, Disconnected):
                        log.info("left session %s: %s", self.uri, event.reason)
                        return True
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            keepalive.cancel()
            if flusher is not None:
                flusher.cancel()
            ws.transport.abort()
        return False

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Ping when due; declare the link lost after link_timeout_s without any frame."""
        while True:
            try:
                frame = self._core.keepalive(time.monotonic())
            except TimeoutError as exc:
                log.info("%s: link lost", exc)
                ws.transport.abort()
                return
            if frame is not None:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(frame)
            await asyncio.sleep(self._core.keepalive_tick_s)

    async def _flush(self) -> None:
        """Send what was queued during the outage, in order. New signals queue behind until empty."""
        while (frame := self._core.next_queued(time.monotonic())) is not None:
            await self._write(frame)

    async def _reconnect(self) -> ClientConnection | None:
        """Retry with backoff until resumed (returns the new link) or refused/given up (returns None)."""
        core = self._core
        attempt = 0
        while True:
            await asyncio.sleep(core.reconnect_delay(time.monotonic(), random.uniform(0.5, 1.0)))
            attempt += 1
            timeout = core.attempt_timeout(time.monotonic())
            if timeout is None:
                log.warning("gave up reconnecting to %s after %.0f s", self.uri, core.give_up_s)
                self._emit_all(core.give_up())
                return None
            try:
                ws, answer, sent, received = await open_link(core, self.uri, self._token, self._ssl, timeout)
            except RETRYABLE as exc:
                log.debug("reconnection attempt %d to %s failed: %r", attempt, self.uri, exc)
                core.attempt_failed()
                continue
            events, reply = core.joined(answer, sent, received)
            if core.connected:
                log.info("link to %s resumed", self.uri)
                self._ws = ws
                self._emit_all(events)
                return ws
            if isinstance(answer, HubError):
                log.warning("hub refused to resume the connection (%s: %s)", answer.code, answer.message)
            if reply is not None:  # a fresh connection is not ours: give it back
                with contextlib.suppress(ConnectionClosed, OSError):
                    await ws.send(reply)
            ws.transport.abort()
            self._emit_all(events)
            return None

    def _finish(self, reason: str) -> None:
        """End the session (idempotent): everything pending fails, Disconnected is emitted once."""
        events = self._core.finish(reason)
        if events:
            log.info("left session %s: %s", self.uri, reason)
        self._emit_all(events)
        if self._ws is not None:
            self._ws.transport.abort()

    def _emit_all(self, events: list[SessionEvent]) -> None:
        for event in events:
            self._emit(event)

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
            self._core.stats["events_dropped"] += 1
            self._events.put_nowait(event)


__all__ = ["SessionClient", "SignalError"]
