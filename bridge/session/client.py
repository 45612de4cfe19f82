"""The session client: one connection to a session hub over wire protocol v1, with automatic reconnection.

    async with SessionClient("ws://127.0.0.1:8765", "lab-1", token) as s:
        await s.signal(type="robot.move", data='{"x":0.5}')
        async for event in s.events():
            ...

This module is the public API (what DESIGN.md promises); the link itself (socket, pump, keep-alive,
reconnection with ``resume``) is :class:`bridge.session.clientlink.LinkSupervisor`, which
:class:`SessionClient` extends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.core.client_protocol import disconnect_frame, force_disconnect_frame, ping_frame, signal_frame
from bridge.core.events import Disconnected, SessionEvent
from bridge.core.linkstate import LinkEvent, LinkState
from bridge.core.signal import BAD_REQUEST, CLIENT_DISCONNECTED, NOT_CONNECTED, check_signal
from bridge.session.clientlink import RETRYABLE, LinkSupervisor, Refused, SignalError, mono_ms, wall_ms


class SessionClient(LinkSupervisor):
    """One connection to a session; see the module docstring and DESIGN.md (Python client API).

    Options: ``ping_interval_s`` between keep-alive pings; ``link_timeout_s`` of silence after which
    the link is considered lost; ``reconnect_min_s``/``reconnect_max_s`` bound the exponential backoff
    (jittered to 50-100 %); ``give_up_s`` after a drop before ending with Disconnected (None: never);
    ``open_timeout_s`` per connection attempt; ``event_queue_size`` events kept for ``events()``
    (when full, the oldest is dropped and counted in ``stats["events_dropped"]``); ``ssl`` the TLS
    context for a ``wss://`` hub (None: the system's default CA store; e.g.
    ``ssl.create_default_context(cafile="hub-ca.pem")`` for a private CA or a self-signed hub).
    """

    def __init__(self, url: str, session_id: str, token: str, *, ping_interval_s: float = 2.0,
                 link_timeout_s: float = 6.0, reconnect_min_s: float = 0.5, reconnect_max_s: float = 5.0,
                 give_up_s: float | None = 60.0, open_timeout_s: float = 10.0,
                 event_queue_size: int = 1000, ssl: _ssl.SSLContext | None = None) -> None:
        super().__init__(f"{url.rstrip('/')}/v1/session/{quote(session_id, safe='')}", token,
                         ping_interval_s=ping_interval_s, link_timeout_s=link_timeout_s,
                         reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s,
                         give_up_s=give_up_s, open_timeout_s=open_timeout_s,
                         event_queue_size=event_queue_size, ssl=ssl)

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
        """Hub clock minus the local wall clock now, ms (min-RTT filtered; the estimate itself is kept
        against the monotonic clock, so a wall-clock step shows here at once and nowhere else)."""
        return self.hub_time_ms() - wall_ms()

    @property
    def rtt_ms(self) -> float | None:
        """Round-trip time of the latest connect/ping exchange, ms."""
        return self._clock.rtt_ms

    def hub_time_ms(self) -> float:
        """Now on the hub's clock (to judge a signal's age by its ``ts``): estimated from the local
        monotonic clock, never the wall clock, so that a wall-clock step neither ages nor rejuvenates
        signals (see ``bridge.core.clock``). Before the first exchange (no sample: not connected yet)
        the local wall clock is the only guess."""
        if self._clock.samples == 0:
            return wall_ms()
        return self._clock.hub_now_ms(mono_ms())

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
        except Refused as r:
            self._link.handle(LinkEvent.REFUSED)
            raise SignalError(r.code, r.message) from None
        except RETRYABLE as exc:
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
        refusal = check_signal(type, data)
        if refusal is not None:
            raise SignalError(refusal.code, refusal.message)
        if to is not None and (not isinstance(to, str) or not to):
            raise SignalError(BAD_REQUEST, "'to' must be a connection id")
        ws = self._ws
        state = self._link.state
        issued = time.monotonic()
        if state is LinkState.CONNECTED and ws is not None:
            out = self._outbox.new(type, data, to, retry_after_reconnect, self._future(), issued)
            if self._outbox.has_queued:  # a resume is still flushing: keep the order
                self._outbox.enqueue(out)
            else:
                await self._send(ws, out)
        elif state is LinkState.RECONNECTING or (state is LinkState.CONNECTED and ws is None):
            if not retry_after_reconnect:
                self.stats["dropped"] += 1
                raise SignalError(NOT_CONNECTED, "not connected (reconnecting): signal dropped")
            out = self._outbox.new(type, data, to, True, self._future(), issued)
            self._outbox.enqueue(out)
        else:
            raise SignalError(NOT_CONNECTED, f"not connected ({state.value})")
        await out.ticket

    def send_nowait(self, type: str = "", data: str = "", to: str | None = None) -> bool:
        """Send a signal with ``retry`` false and forget it: no ack awaited, no future, no task.

        For signals whose ack nobody needs (telemetry, status): the frame is written at once, in order
        with the other signals of this client. Returns False, counted in ``stats["dropped"]``, when it
        cannot be written now (not connected, reconnecting, or the link's write buffer is full); it is
        never queued. The hub's ack is ignored; a nack is counted in ``stats["nowait_nacked"]`` and
        logged at DEBUG. Raises SignalError (400/413) for a signal the local check refuses.
        """
        refusal = check_signal(type, data)
        if refusal is not None:
            raise SignalError(refusal.code, refusal.message)
        if to is not None and (not isinstance(to, str) or not to):
            raise SignalError(BAD_REQUEST, "'to' must be a connection id")
        ws = self._ws
        # Queued retry signals (a resume still flushing) go first: overtaking them would reorder.
        if (ws is None or self._link.state is not LinkState.CONNECTED or self._outbox.has_queued
                or not self._write_now(ws, signal_frame(self._outbox.new_id(), type, data, to, False))):
            self.stats["dropped"] += 1
            return False
        self.stats["sent"] += 1
        return True

    async def ping(self) -> float:
        """One keep-alive exchange now; returns its round-trip time in ms (also updates the clock)."""
        ws = self._require_link()
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        id_ = self._outbox.new_id()
        self._pings[id_] = (mono_ms(), fut)
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

    def _require_link(self) -> ClientConnection:
        ws = self._ws
        if ws is None or not self._link.connected:
            raise SignalError(NOT_CONNECTED, f"not connected ({self.state})")
        return ws


__all__ = ["SessionClient", "SignalError"]
