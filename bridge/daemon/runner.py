"""`sigbridge run -c FILE`: the bridge daemon, a thin pump around `bridge.core.engine.Engine`.

Everything that decides lives in the engine; this module only moves data between it and the sockets:

- the session: a `SessionClient`; its events go to the engine in arrival order. When the client gives
  up (its reconnect window is over) a new client (a new connection) is made, with backoff, forever;
- the devices: one `SerialLink` / `MqttLink` per device; their lines and messages go to the engine;
- a timer that calls ``engine.tick`` at ``engine.next_deadline()`` (watchdogs, throttled telemetry);
- heartbeats (``devices.NAME.heartbeat``) and the systemd notify/watchdog pings.

The engine's commands are carried out at once and in order: lines and publishes are handed to the
links without blocking; signals with retry disabled (all the engine makes today) are
written at once with ``SessionClient.send_nowait`` (no ack awaited; while the link is down or its write
buffer is full they fail at once and are counted, never queued), the others are sent as background
tasks. The session link lost -> ``on_disconnect`` actions
before anything else. SIGTERM/SIGINT -> shutdown, final from its first instant (``stop``): the engine is
closed (no later event is taken), the watchdog timer stopped, every device queue purged, the
``on_shutdown`` actions handed to the links and the links sealed (they refuse every later write, the
heartbeats included), so those actions are the last bytes each device gets; then up to
``SHUTDOWN_GRACE_S`` for them to leave, and a clean exit 0.

Before a command is decided, the engine asks ``_gate`` whether its device links would take its writes
now (``device_down`` / ``overloaded`` otherwise). A write a link refuses anyway goes back to the
engine as an event (``WriteRefused``): a safe action the device missed is written first when it comes
back. The engine learns who is in the session from the client's ConnectionCreated/Destroyed events and
a signal's age from the signal (``Signal.age_ms``); the daemon never asks the client for either.

A token that can never work ends the daemon with exit status ``EXIT_AUTH`` (78), which the systemd
unit does not restart on (``RestartPreventExitStatus=``), after its on_shutdown actions and with the
reason on stderr: the hub refusing it (401: not a valid credential, e.g. expired or minted with other
API credentials; 403: valid but not for this session), or the hub granting a role that cannot send
signals (a subscriber token: every ack, status and telemetry signal would be refused). Such a bridge
never reports READY. A hub that cannot be reached is not that: it is retried for ever.

SIGHUP reloads the config file (systemd: RELOADING=1 ... READY=1): a file with errors is refused, its
errors logged as ``file:line: ...``, and the running config kept; a good one is swapped in as a new
engine that takes over the old one's state (``Engine.take_over``) while the session link and the device
links stay as they are. A new token is used from the next new connection on. Changes to the session
URL or id, or to ``devices``, need a restart: such a reload is refused as a whole (see
``bridge.core.engine.reload``).

Logging: INFO only for state changes (link up/down, device up/down, e-stop), never per signal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable

from bridge.adapters.audit import AuditLog, flush_loop
from bridge.adapters.metrics import BridgeMetrics
from bridge.adapters.systemd import Notifier, watchdog_loop
from bridge.config import ConfigError, load_config, load_or_report
from bridge.core.engine import Audit, Command, Engine, Publish, Purge, SendSignal, WriteFrame, WriteLine
from bridge.core.engine.actions import Notice, NoticeKind
from bridge.core.engine.decisions import Decision, Verdict
from bridge.core.engine.frames import FrameEncoder
from bridge.core.engine.outcomes import DeviceState, WriteRefused, WritesExpired
from bridge.core.engine.pacing import Pacer
from bridge.core.engine.reload import restart_needed
from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionEvent,
    Signal,
)
from bridge.core.model import BridgeConfig, Device, MqttTelemetry
from bridge.core.signal import FORBIDDEN, SIGNALLING_ROLES, UNAUTHORIZED, is_bridge_data
from bridge.devices.mqtt_link import MqttLink
from bridge.devices.serial_link import SerialLink
from bridge.session.client import SessionClient, SignalError

log = logging.getLogger(__name__)

#: Retry signals being sent at once (each waits for the hub's ack); beyond this, new ones are dropped+counted.
MAX_SIGNALS_IN_FLIGHT = 256
#: The share of the hub's announced rate limit (and burst) the bridge's own signals use at most.
HUB_RATE_MARGIN = 0.9
#: Backoff between session clients after one gave up for good.
RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
#: Time given to the on_shutdown writes to leave before the ports are closed (less once all have left).
SHUTDOWN_GRACE_S = 0.2
#: Exit status when the bridge's token can never work (sysexits' EX_CONFIG); the systemd unit has
#: RestartPreventExitStatus= with it: restarting cannot help, a person must mint a new token.
EXIT_AUTH = 78


def run_main(args: argparse.Namespace) -> int:
    """Load the config (exit 2 with file:line errors, like `sigbridge check`) and run until stopped."""
    daemon = prepare(args.config)
    if daemon is None:
        return 2
    try:
        return asyncio.run(daemon.run())
    except KeyboardInterrupt:   # a second Ctrl-C while shutting down
        return 130


def prepare(path: str) -> Daemon | None:
    """Everything `sigbridge run` does before its event loop: the config loaded through the same code
    as `sigbridge check` (errors printed as ``file:line: ...``; None), then the daemon built from it."""
    config = load_or_report(path, consequence="; not starting")
    return None if config is None else Daemon(config)


class Daemon:
    """One running bridge. ``run()`` returns 0 after SIGTERM/SIGINT (or ``stop()``), EXIT_AUTH when its
    token can never work."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.engine = Engine(config)
        self.engine.gate = self._gate
        self.links: dict[str, SerialLink | MqttLink] = {
            name: self._make_link(device) for name, device in config.devices.items()}
        self.client: SessionClient | None = None
        #: Opened by run() (an audit log that cannot be opened stops the start: the operator asked for it).
        self.audit: AuditLog | None = None
        #: metrics: in the config: served by run() (read from the current engine when scraped).
        self.metrics = BridgeMetrics(lambda: self.engine) if config.metrics is not None else None
        self.notifier = Notifier.from_env()
        self.counters: dict[str, int] = {"signals_failed": 0, "signals_overflow": 0, "sessions": 0}
        self._in_flight: set[asyncio.Task[None]] = set()
        # The bridge's own signals, paced under the hub's rate limit (acks wait, telemetry may drop).
        s = config.session
        self._pacer: Pacer[SendSignal] = Pacer(s.signal_rate_hz, s.signal_burst, time.monotonic())
        self._pacer_timer: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        #: What run() returns: 0, or EXIT_AUTH after _give_up().
        self._exit_status = 0
        # The engine's timer (see _arm_timer): the handle and the deadline it is set for.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped_timer = False
        self._reload_asked = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._audit_task: asyncio.Task[None] | None = None
        #: Reloads applied / refused since start.
        self.reloads = {"applied": 0, "refused": 0}
        self._ready_printed = False

    def _count(self, cmd: WriteLine | WriteFrame | Publish, taken: bool) -> None:
        if self.metrics is not None:
            (self.metrics.writes if taken else self.metrics.refusals).labels(cmd.device).inc()

    def _make_link(self, device: Device) -> SerialLink | MqttLink:
        if device.serial is not None:
            return SerialLink(device.name, device.serial, self._line_handler(device.name), self._on_device,
                              self._bytes_handler(device.name), self._on_expired)
        assert device.mqtt is not None
        topics = [t.topic for t in self.config.telemetry
                  if isinstance(t, MqttTelemetry) and t.device == device.name]
        return MqttLink(device.name, device.mqtt, topics, self._message_handler(device.name),
                        self._on_device, self._on_expired)

    def stop(self) -> None:
        """Shut down: final at once, whatever is still in the loop's queue (see the module docstring)."""
        if self._stop.is_set():
            return
        self._stop.set()
        log.info("stopping: running on_shutdown actions")
        self._stopped_timer = True
        if self._timer is not None:
            self._timer.cancel()
        try:
            self._execute(self.engine.shutdown())
        finally:                    # sealed even if carrying out the actions failed (a bug)
            for link in self.links.values():
                link.seal()

    async def _drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every link has handed what it took to the device."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(link.up and link.queued for link in self.links.values()) and loop.time() < deadline:
            await asyncio.sleep(0.005)

    def _give_up(self, reason: str) -> None:
        """The token can never work: say why, then stop as on SIGTERM and exit with EXIT_AUTH."""
        print(f"sigbridge run: {reason}; not retrying (exit status {EXIT_AUTH})", file=sys.stderr, flush=True)
        self._exit_status = EXIT_AUTH
        self.stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_asked.set)
        devices = ", ".join(f"{d.name} ({d.serial.port if d.serial else 'mqtt'})"
                            for d in self.config.devices.values())
        print(f"sigbridge run: {self.config.source}: {len(self.config.rules)} rule(s), devices: {devices}; "
              f"joining {self.config.session.url} session {self.config.session.session_id}",
              file=sys.stderr, flush=True)
        if self.metrics is not None and self.config.metrics is not None:
            try:
                await self.metrics.serve(self.config.metrics.host, self.config.metrics.port)
            except OSError as exc:
                print(f"sigbridge run: cannot serve metrics on {self.config.metrics.host}:"
                      f"{self.config.metrics.port}: {exc}", file=sys.stderr)
                return 1
        if self.config.audit is not None:
            try:
                self.audit = AuditLog.from_config(self.config.audit)
            except OSError as exc:
                print(f"sigbridge run: cannot open the audit log {self.config.audit.path}: {exc}",
                      file=sys.stderr)
                return 1
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tasks = [tg.create_task(link.run(), name=f"device {name}")
                         for name, link in self.links.items()]
                tasks.append(tg.create_task(self._session_loop(), name="session"))
                self._arm_timer()
                tasks.extend(tg.create_task(self._heartbeat(d), name=f"heartbeat {d.name}")
                             for d in self.config.devices.values() if d.heartbeat is not None)
                tasks.append(tg.create_task(watchdog_loop(self.notifier), name="systemd watchdog"))
                tasks.append(tg.create_task(self._reloader(), name="reloader"))
                if self.audit is not None:
                    self._audit_task = tg.create_task(flush_loop(self.audit), name="audit flush")
                # Ready for systemd as soon as the devices are being driven: the bridge is useful (and
                # safe) without the hub, and a hub down at boot must not make systemd time the start out.
                self.notifier.ready(f"joining session {self.config.session.session_id}")
                await self._stop.wait()     # stop() has run the on_shutdown actions and sealed the links
                self.notifier.stopping()
                await asyncio.sleep(0)      # this turn's lines are flushed at its end
                await self._drain(SHUTDOWN_GRACE_S)
                client = self.client
                if client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.disconnect(), 2.0)
                for task in tasks:
                    task.cancel()
                if self._audit_task is not None:
                    self._audit_task.cancel()
        finally:
            self._tg = None
            self._stopped_timer = True
            for timer in (self._timer, self._pacer_timer):
                if timer is not None:
                    timer.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self.notifier.close()
            if self.audit is not None:
                self.audit.close()
            if self.metrics is not None:
                await self.metrics.close()
        print("sigbridge run: stopped", file=sys.stderr, flush=True)
        return self._exit_status

    # ------------------------------------------------------------ session

    async def _session_loop(self) -> None:
        delay = RESTART_MIN_S
        failing = False
        while True:
            s = self.config.session     # read each time: a reload may have brought a new token
            client = SessionClient(s.url, s.session_id, s.token, ping_interval_s=s.keepalive_ms / 1000,
                                   link_timeout_s=s.link_timeout_ms / 1000)
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
                if not failing:
                    log.warning("session: cannot join %s (%s); retrying every <=%.0fs", client.uri, exc,
                                RESTART_MAX_S)
                    failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_S)
                continue
            failing = False
            delay = RESTART_MIN_S
            assert client.connection is not None
            if client.connection.role not in SIGNALLING_ROLES:
                with contextlib.suppress(Exception):
                    await client.disconnect()
                self._give_up(f"the bridge's token has the role {client.connection.role!r}, which cannot "
                              f"send signals (every ack, status and telemetry signal would be refused); "
                              f"mint a token with --role publisher or moderator")
                return
            self.counters["sessions"] += 1
            self.client = client
            try:
                await self._serve(client, ended)
            finally:
                self.client = None
                client.set_event_handler(None)
                if self.engine.linked and not self._stop.is_set():
                    self._link_down(time.monotonic())
                self.engine.session_left()
                with contextlib.suppress(Exception):
                    await client.disconnect()
            if self._stop.is_set():
                return
            log.warning("session: left for good; joining again as a new connection")
            await asyncio.sleep(delay)

    async def _serve(self, client: SessionClient, ended: asyncio.Event) -> None:
        """Handle the client's events until it ends (``ended``, set by the handler)."""
        assert client.connection is not None
        self._link_up(client)
        await ended.wait()

    def _event_handler(self, client: SessionClient, ended: asyncio.Event) -> Callable[[SessionEvent], None]:
        """The client's events, taken by callback in its reader (no queue, no task switch per signal,
        nothing dropped) and handled at once, in order."""
        def on_event(event: SessionEvent) -> None:
            try:
                if self._on_event(client, event):
                    ended.set()
            except Exception:
                # A bug: stop as a crash would (on_shutdown actions, exit; systemd restarts us) rather
                # than carry on with an engine in an unknown state.
                log.exception("session event %s failed; stopping", type(event).__name__)
                self.stop()
                ended.set()
        return on_event

    def _on_event(self, client: SessionClient, event: SessionEvent) -> bool:
        """One session event; True when it ends the client (Disconnected)."""
        now = time.monotonic()
        if isinstance(event, Signal):
            commands = self.engine.signal(event, now)
            if self.metrics is not None and any(isinstance(c, WriteLine | WriteFrame | Publish)
                                                for c in commands):
                self.metrics.latency.observe(max(0, event.age_ms) / 1000)
            self._execute(commands)
        elif isinstance(event, ConnectionCreated):
            self._execute(self.engine.connection_created(event.connection, now))
        elif isinstance(event, ConnectionDestroyed):
            self._execute(self.engine.connection_destroyed(event.connection, now))
        elif isinstance(event, Reconnecting):
            # Safe actions first: nothing else is handled before they are handed to the devices.
            self._link_down(now)
            log.warning("session: link lost, reconnecting (on_disconnect actions sent)")
            self.notifier.status("session link lost, reconnecting")
        elif isinstance(event, Reconnected):
            self._link_up(client)
        elif isinstance(event, Disconnected):
            if self.engine.linked and not self._stop.is_set():
                self._link_down(now)
            if not self._stop.is_set():
                log.warning("session: disconnected (%s)", event.reason)
            return True
        return False

    def _link_down(self, now: float) -> None:
        self._pacer.clear()        # acks and status still waiting would be stale after the outage
        self._execute(self.engine.link_down(now))

    def _pace(self, client: SessionClient) -> None:
        """Pace under the lower of ``session.signal_rate`` and the hub's announced limit (re-read on
        every (re)connect), the latter with HUB_RATE_MARGIN to spare (clock drift, network jitter)."""
        s = self.config.session
        rate, burst = s.signal_rate_hz, float(s.signal_burst)
        if client.rate_limit is not None:
            rate = min(rate, client.rate_limit[0] * HUB_RATE_MARGIN)
            burst = min(burst, max(1.0, client.rate_limit[1] * HUB_RATE_MARGIN))
        if (rate, burst) != self._pacer.rate:
            self._pacer.retune(rate, burst, time.monotonic())
            log.info("session: pacing own signals at %.4g/s, burst %.4g (the hub's limit: %s)", rate, burst,
                     client.rate_limit or "none announced")

    def _link_up(self, client: SessionClient) -> None:
        assert client.connection is not None
        self._pace(client)
        own = client.connection.id
        commands = self.engine.link_up(own, time.monotonic())
        dropped = sum(c.count for c in commands if isinstance(c, Notice))   # TELEMETRY_DROPPED only
        log.info("session: connected as %s%s", own,
                 f" ({dropped} telemetry value(s) dropped while down)" if dropped else "")
        self._execute(c for c in commands if not isinstance(c, Notice))
        self.notifier.status(f"connected as {own}")
        if not self._ready_printed:
            self._ready_printed = True
            print(f"sigbridge run: READY connected to {client.uri} as {own}", file=sys.stderr, flush=True)
            if not is_bridge_data(client.connection.data):
                log.warning("session: the token's connection data is %r, not 'bridge' or 'bridge:NAME': "
                            "consoles will not trust this bridge (mint its token with sigbridge token "
                            "SESSION --bridge NAME)", client.connection.data[:40])

    # ------------------------------------------------------------ devices and timers

    def _line_handler(self, device: str) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            self._execute(self.engine.device_line(device, line, time.monotonic()))
        return on_line

    def _bytes_handler(self, device: str) -> Callable[[bytes], None]:
        def on_bytes(data: bytes) -> None:
            self._execute(self.engine.device_bytes(device, data, time.monotonic()))
        return on_bytes

    def _message_handler(self, device: str) -> Callable[[str, bytes], None]:
        def on_message(topic: str, payload: bytes) -> None:
            self._execute(self.engine.mqtt_message(device, topic, payload, time.monotonic()))
        return on_message

    def _on_device(self, name: str, up: bool) -> None:
        log.info("device %s: %s", name, "up" if up else "down")
        self._execute(self.engine.device_event(DeviceState(name, up), time.monotonic()))

    def _on_expired(self, name: str, dropped: list[str]) -> None:
        """A link dropped queued writes whose deadline had passed (counted and audited by the engine)."""
        self._execute(self.engine.device_event(WritesExpired(name, tuple(dropped)), time.monotonic()))

    def _arm_timer(self) -> None:
        """Have ``engine.tick`` called at ``engine.next_deadline()``. Called after every batch of
        commands (cheap: a comparison): the timer is moved only when the deadline got earlier than the
        one it is set for; a later or vanished deadline leaves it, and its early firing re-arms."""
        deadline = self.engine.next_deadline()
        if deadline is None or self._stopped_timer:
            return
        at = self._timer_at
        if at is not None and at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        # The loop's clock is time.monotonic() (asyncio's default); call_later keeps that an assumption.
        self._timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()),
                                                            self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        try:
            now = time.monotonic()
            deadline = self.engine.next_deadline()
            if deadline is not None and now >= deadline:
                self._execute(self.engine.tick(now))    # re-arms for the next deadline
            else:
                self._arm_timer()
        except Exception:
            # Watchdogs would silently stop firing: stop as a crash would (on_shutdown actions, exit).
            log.exception("engine timer failed; stopping")
            self.stop()

    async def _heartbeat(self, device: Device) -> None:
        hb = device.heartbeat
        assert hb is not None
        link = self.links[device.name]
        interval = 1.0 / hb.hz
        frame = FrameEncoder(hb.frame, {}).encode({}) if hb.frame is not None else None
        while True:
            if link.up:
                if isinstance(link, SerialLink) and frame is not None:
                    link.write_frame(frame)
                elif isinstance(link, SerialLink) and hb.line is not None:
                    link.write_line(hb.line)
                elif isinstance(link, MqttLink) and hb.topic is not None:
                    link.publish(hb.topic, hb.payload.encode(), 0)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ reload (SIGHUP)

    async def _reloader(self) -> None:
        """Carry out SIGHUP reloads one at a time (a second SIGHUP during one triggers one more)."""
        while True:
            await self._reload_asked.wait()
            self._reload_asked.clear()
            self.notifier.reloading()
            outcome = await self._reload()
            self.reloads["applied" if outcome is None else "refused"] += 1
            self.notifier.ready(outcome or f"config reloaded from {self.config.source}")

    async def _reload(self) -> str | None:
        """Load the file again and swap it in. Returns None when applied, else why it was refused
        (logged as errors; the running config is kept)."""
        path = self.config.source
        if self._stop.is_set():
            return self._refuse("shutting down")
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            for issue in exc.errors:
                log.error("reload: %s", issue)
            return self._refuse(f"{path}: {len(exc.errors)} error(s)")
        if self._stop.is_set():     # shutdown began while the file was being read: it is final
            return self._refuse("shutting down")
        reasons = restart_needed(self.config, new, estopped=self.engine.estopped)
        if reasons:
            return self._refuse(f"{path}: {'; '.join(reasons)}")
        try:
            engine = Engine(new)
        except ValueError as exc:   # TemplateError too: the loader checks all this; the last guard
            return self._refuse(f"{path}: {exc}")
        if new.audit != self.config.audit and not self._swap_audit(new):
            return self._refuse(f"{path}: cannot open the audit log {new.audit and new.audit.path}")
        commands = engine.take_over(self.engine.hand_over(), time.monotonic())
        engine.gate = self._gate
        self.engine, self.config = engine, new
        self._execute(commands)
        log.warning("reload: %s: %d rule(s) applied; session link and devices kept", path, len(new.rules))
        return None

    def _refuse(self, why: str) -> str:
        log.error("reload refused, running config kept: %s", why)
        return f"reload refused: {why}"

    def _swap_audit(self, new: BridgeConfig) -> bool:
        """Open the new audit log (False when it cannot be opened: the reload is refused), close the old."""
        audit = None
        if self.audit is not None:
            self.audit.flush()      # the new log may be the same file: its size is read on opening
        if new.audit is not None:
            try:
                audit = AuditLog.from_config(new.audit)
            except OSError as exc:
                log.error("reload: cannot open the audit log %s: %s", new.audit.path, exc)
                return False
        if self._audit_task is not None:
            self._audit_task.cancel()
            self._audit_task = None
        if self.audit is not None:
            self.audit.close()
        self.audit = audit
        if audit is not None and self._tg is not None:
            self._audit_task = self._tg.create_task(flush_loop(audit), name="audit flush")
        return True

    # ------------------------------------------------------------ carrying out commands

    def _gate(self, cmd: WriteLine | WriteFrame | Publish) -> Verdict | None:
        """Would the device link take ``cmd`` now? (The engine asks before deciding a command.)"""
        link = self.links.get(cmd.device)
        if isinstance(cmd, WriteLine):
            why = link.refusal(len(cmd.line.encode())) if isinstance(link, SerialLink) else "down"
        elif isinstance(cmd, WriteFrame):
            why = link.refusal(len(cmd.data)) if isinstance(link, SerialLink) else "down"
        else:
            why = link.refusal(cmd.qos) if isinstance(link, MqttLink) else "down"
        if why is None:
            return None
        self._count(cmd, False)
        if why == "full":
            return Verdict(Decision.OVERLOADED, f"device {cmd.device}: queue full")
        return Verdict(Decision.DEVICE_DOWN, f"device {cmd.device} is down")

    def _execute(self, commands: Iterable[Command]) -> None:
        engine = self.engine
        for cmd in commands:
            if isinstance(cmd, WriteLine):
                link = self.links.get(cmd.device)
                taken = isinstance(link, SerialLink) and link.write_line(cmd.line, cmd.deadline)
            elif isinstance(cmd, WriteFrame):
                link = self.links.get(cmd.device)
                taken = isinstance(link, SerialLink) and link.write_frame(cmd.data, cmd.deadline)
            elif isinstance(cmd, Publish):
                link = self.links.get(cmd.device)
                taken = isinstance(link, MqttLink) and link.publish(cmd.topic, cmd.payload, cmd.qos,
                                                                   cmd.deadline)
            elif isinstance(cmd, SendSignal):
                self._send_signal(cmd)
                continue
            elif isinstance(cmd, Purge):
                purged = self.links.get(cmd.device)
                if purged is not None:
                    purged.purge()
                continue
            elif isinstance(cmd, Audit):
                if self.audit is not None:
                    self.audit.write(cmd.record)
                continue
            else:
                _log_notice(cmd)
                continue
            self._count(cmd, taken)
            if not taken:   # the link's answer goes back to the engine as an event
                self._execute(engine.device_event(WriteRefused(cmd), time.monotonic()))
        self._arm_timer()

    def _send_signal(self, cmd: SendSignal) -> None:
        client = self.client
        if client is None or not self.engine.linked:
            self.counters["signals_failed"] += 1
            return
        if not cmd.retry:
            # Telemetry, acks, status: the hub's ack serves no purpose, so nothing waits for it; but
            # a 429 would lose it, so they are paced under the hub's limit (bridge.core.engine.pacing).
            if self._pacer.offer(cmd, not cmd.optional, time.monotonic()):
                self._send_now(client, cmd)
            elif self._pacer_timer is None and (at := self._pacer.next_deadline()) is not None:
                self._pacer_timer = asyncio.get_running_loop().call_later(
                    max(0.0, at - time.monotonic()), self._paced)
            return
        if len(self._in_flight) >= MAX_SIGNALS_IN_FLIGHT:
            self.counters["signals_overflow"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._signal(client, cmd))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _send_now(self, client: SessionClient, cmd: SendSignal) -> None:
        try:
            if not client.send_nowait(cmd.type, cmd.data, cmd.to):
                self.counters["signals_failed"] += 1
        except SignalError as exc:
            self.counters["signals_failed"] += 1
            log.debug("signal %s not sent: %s", cmd.type, exc)

    def _paced(self) -> None:
        """The essential signals that waited for the pace: sent now that tokens are back, in order."""
        self._pacer_timer = None
        for cmd in self._pacer.due(time.monotonic()):
            client = self.client
            if client is None or not self.engine.linked:
                self.counters["signals_failed"] += 1
            else:
                self._send_now(client, cmd)
        if (at := self._pacer.next_deadline()) is not None:
            self._pacer_timer = asyncio.get_running_loop().call_later(max(0.0, at - time.monotonic()),
                                                                      self._paced)

    async def _signal(self, client: SessionClient, cmd: SendSignal) -> None:
        try:
            await client.signal(cmd.type, cmd.data, cmd.to, retry_after_reconnect=cmd.retry)
        except SignalError as exc:
            self.counters["signals_failed"] += 1
            log.debug("signal %s not sent: %s", cmd.type, exc)


def _log_notice(notice: Notice) -> None:
    """What the engine tells the operator: one log line per change, never per signal."""
    kind = notice.kind
    if kind is NoticeKind.ESTOP_LATCHED:
        log.warning("e-stop LATCHED")
    elif kind is NoticeKind.ESTOP_RESET:
        log.warning("e-stop reset")
    elif kind is NoticeKind.TELEMETRY_DROPPING:
        log.info("session: link down, dropping telemetry until it is back (never queued)")
    else:
        log.info("session: %d telemetry value(s) dropped while the link was down", notice.count)
