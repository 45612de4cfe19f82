"""The daemon's session loop: one `SessionClient` at a time, its events to the engine in arrival order.

A client's events are taken by callback in its reader (no queue, no task switch per signal, nothing
dropped) and handled at once. The session link lost (``Reconnecting``) -> the ``on_disconnect`` actions
before anything else. When the client gives up (its reconnect window is over) a new client (a new
connection) is made, with backoff, forever; a hub that cannot be reached is retried for ever.

A token that can never work ends the daemon (``give_up``): the hub refusing it (401/403), or the hub
granting a role that cannot send signals. The engine learns who is in the session from the client's
ConnectionCreated/Destroyed events and a signal's age from the signal (``Signal.age_ms``); this loop
never asks the client for either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable

from bridge.adapters.systemd import Notifier
from bridge.client import SessionClient, SignalError
from bridge.core.backoff import Backoff
from bridge.core.engine import Publish, WriteFrame, WriteLine
from bridge.core.engine.actions import Notice
from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionEvent,
    Signal,
)
from bridge.core.model import SessionSettings
from bridge.core.signal import FORBIDDEN, SIGNALLING_ROLES, UNAUTHORIZED, is_bridge_data
from bridge.daemon.executor import Executor
from bridge.daemon.port import SessionPort

log = logging.getLogger(__name__)

#: Backoff between session clients after one gave up for good.
RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0


def remote_client(s: SessionSettings) -> SessionPort:
    """A WebSocket client to the hub of ``session.url``."""
    return SessionClient(s.hub_urls, s.session_id, s.token, ping_interval_s=s.keepalive_ms / 1000,
                         link_timeout_s=s.link_timeout_ms / 1000)


class SessionLoop:
    """``run()`` joins, serves and rejoins until the daemon stops (``stopping``) or gives up."""

    def __init__(self, executor: Executor, notifier: Notifier, stopping: asyncio.Event,
                 stop: Callable[[], None], give_up: Callable[[str], None],
                 make_client: Callable[[SessionSettings], SessionPort] | None = None) -> None:
        self._x = executor
        #: A client per join: a SessionClient to the configured hub, unless the daemon hosts the
        #: session itself (bridge.daemon.embedded gives the in-process member instead).
        self._make_client = make_client or remote_client
        self._notifier = notifier
        self._stopping = stopping
        self._stop = stop
        self._give_up = give_up
        self._ready_printed = False

    async def run(self) -> None:
        retry = Backoff(RESTART_MIN_S, RESTART_MAX_S)
        x = self._x
        while True:
            s = x.config.session        # read each time: a reload may have brought a new token
            client = self._make_client(s)
            ended = asyncio.Event()
            # Events by callback from the start: the members listed at the join reach the engine as
            # ConnectionCreated, none queued (a queue could drop some in a crowded session).
            client.set_event_handler(self._event_handler(client, ended))
            try:
                await client.connect()
            except SignalError as exc:
                if exc.code in (UNAUTHORIZED, FORBIDDEN):
                    self._give_up(f"the hub refused the bridge's token ({exc.code}: {exc.message}); mint "
                                  f"a new one for session {s.session_id} (sigbridge token) and restart")
                    return
                delay, started = retry.failed()
                if started:
                    log.warning("session: cannot join %s (%s); retrying every <=%.0fs", client.uri, exc,
                                RESTART_MAX_S)
                await asyncio.sleep(delay)
                continue
            retry.stable()
            assert client.connection is not None
            if client.connection.role not in SIGNALLING_ROLES:
                with contextlib.suppress(Exception):
                    await client.disconnect()
                self._give_up(f"the bridge's token has the role {client.connection.role!r}, which cannot "
                              f"send signals (every ack, status and telemetry signal would be refused); "
                              f"mint a token with --role publisher or moderator")
                return
            x.counters["sessions"] += 1
            x.client = client
            try:
                self._link_up(client)
                await ended.wait()
            finally:
                x.client = None
                client.set_event_handler(None)
                if x.engine.linked and not self._stopping.is_set():
                    x.link_down(time.monotonic())
                x.engine.session_left()
                with contextlib.suppress(Exception):
                    await client.disconnect()
            if self._stopping.is_set():
                return
            log.warning("session: left for good; joining again as a new connection")
            await asyncio.sleep(retry.min_s)

    def _event_handler(self, client: SessionPort, ended: asyncio.Event) -> Callable[[SessionEvent], None]:
        def on_event(event: SessionEvent) -> None:
            try:
                if self._on_event(client, event):
                    ended.set()
            except Exception:
                # A bug: stop as a crash would (on_shutdown actions, exit; systemd restarts us) rather
                # than carry on with an engine in an unknown state.
                log.exception("session event %s failed; stopping", type(event).__name__)
                self._stop()
                ended.set()
        return on_event

    def _on_event(self, client: SessionPort, event: SessionEvent) -> bool:
        """One session event; True when it ends the client (Disconnected)."""
        x = self._x
        now = time.monotonic()
        if isinstance(event, Signal):
            commands = x.engine.signal(event, now)
            if x.metrics is not None and any(isinstance(c, WriteLine | WriteFrame | Publish)
                                             for c in commands):
                x.metrics.latency.observe(max(0, event.age_ms) / 1000)
            x.execute(commands)
        elif isinstance(event, ConnectionCreated):
            x.execute(x.engine.connection_created(event.connection, now))
        elif isinstance(event, ConnectionDestroyed):
            x.execute(x.engine.connection_destroyed(event.connection, now))
        elif isinstance(event, Reconnecting):
            # Safe actions first: nothing else is handled before they are handed to the devices.
            x.link_down(now)
            log.warning("session: link lost, reconnecting (on_disconnect actions sent)")
            self._notifier.status("session link lost, reconnecting")
        elif isinstance(event, Reconnected):
            self._link_up(client)
        elif isinstance(event, Disconnected):
            if x.engine.linked and not self._stopping.is_set():
                x.link_down(now)
            if not self._stopping.is_set():
                log.warning("session: disconnected (%s)", event.reason)
            return True
        return False

    def _link_up(self, client: SessionPort) -> None:
        assert client.connection is not None
        x = self._x
        x.pace(client)
        own = client.connection.id
        commands = x.engine.link_up(own, time.monotonic())
        dropped = sum(c.count for c in commands if isinstance(c, Notice))   # TELEMETRY_DROPPED only
        log.info("session: connected as %s%s", own,
                 f" ({dropped} telemetry value(s) dropped while down)" if dropped else "")
        x.execute(c for c in commands if not isinstance(c, Notice))
        self._notifier.status(f"connected as {own}")
        if not self._ready_printed:
            self._ready_printed = True
            print(f"sigbridge run: READY connected to {client.uri} as {own}", file=sys.stderr, flush=True)
            if not is_bridge_data(client.connection.data):
                log.warning("session: the token's connection data is %r, not 'bridge' or 'bridge:NAME': "
                            "consoles will not trust this bridge (mint its token with sigbridge token "
                            "SESSION --bridge NAME)", client.connection.data[:40])
