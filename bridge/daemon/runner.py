"""`sigbridge run -c FILE`: the bridge daemon, a thin pump around `bridge.core.engine.Engine`.

Everything that decides lives in the engine; the daemon only moves data between it and the sockets.
This module is its lifecycle (start, signals, shutdown order); its parts:

- ``bridge.daemon.session_loop``: the session client of the moment, its events to the engine in order;
- ``bridge.daemon.executor``: the engine's commands carried out at once and in order (device links,
  the bridge's own signals, the audit log), and what they go to;
- ``bridge.daemon.timer``: ``engine.tick`` at ``engine.next_deadline()`` (watchdogs, throttled telemetry);
- ``bridge.daemon.reload``: SIGHUP reloads;
- here: one ``SerialLink`` / ``MqttLink`` per device (their lines and messages go to the engine), the
  heartbeats (``devices.NAME.heartbeat``), the systemd notify/watchdog pings, metrics, the audit log.

SIGTERM/SIGINT -> shutdown, final from its first instant (``stop``): the engine is closed (no later
event is taken), the watchdog timer stopped, every device queue purged, the ``on_shutdown`` actions
handed to the links and the links sealed (they refuse every later write, the heartbeats included), so
those actions are the last bytes each device gets; then up to ``SHUTDOWN_GRACE_S`` for them to leave,
the session left, and a clean exit 0.

A token that can never work ends the daemon with exit status ``EXIT_AUTH`` (78), which the systemd
unit does not restart on (``RestartPreventExitStatus=``), after its on_shutdown actions and with the
reason on stderr: the hub refusing it (401: not a valid credential, e.g. expired or minted with other
API credentials; 403: valid but not for this session), or the hub granting a role that cannot send
signals (a subscriber token: every ack, status and telemetry signal would be refused). Such a bridge
never reports READY. A hub that cannot be reached is not that: it is retried for ever.

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
from typing import TYPE_CHECKING

from bridge.adapters.audit import AuditLog
from bridge.adapters.systemd import Notifier, watchdog_loop
from bridge.config import load_or_report
from bridge.core.engine import Command, Engine
from bridge.core.engine.frames import FrameEncoder
from bridge.core.engine.outcomes import DeviceState, WritesExpired
from bridge.core.model import BridgeConfig, Device, MqttTelemetry
from bridge.daemon.executor import Executor
from bridge.daemon.port import SessionPort
from bridge.daemon.reload import Reloader
from bridge.daemon.session_loop import SessionLoop
from bridge.daemon.timer import EngineTimer

if TYPE_CHECKING:
    # Imported when the config asks for them (see _make_link, __init__): the metrics adapter is aiohttp +
    # prometheus-client (~14 MB), the MQTT link aiomqtt + paho; a bridge that has no use for them pays
    # neither the memory nor the start-up time (tests/test_lazy_imports.py).
    from bridge.adapters.metrics import BridgeMetrics
    from bridge.devices.mqtt_link import MqttLink
    from bridge.devices.serial_link import SerialLink

if TYPE_CHECKING:
    from bridge.daemon.embedded import EmbeddedHub

log = logging.getLogger(__name__)

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
    if config is None:
        return None
    embedded = None
    if config.session.embedded is not None:     # the hub's code only for a bridge that hosts its session
        from bridge.daemon.embedded import EmbeddedHub, HubConfigError, hub_config
        try:
            embedded = EmbeddedHub(hub_config(config.session.embedded))
        except HubConfigError as exc:
            print(f"sigbridge run: session.embedded: {exc}; not starting", file=sys.stderr)
            return None
    return Daemon(config, embedded)


class Daemon:
    """One running bridge. ``run()`` returns 0 after SIGTERM/SIGINT (or ``stop()``), EXIT_AUTH when its
    token can never work."""

    def __init__(self, config: BridgeConfig, embedded: EmbeddedHub | None = None) -> None:
        #: The session this bridge hosts (session.embedded), else None: it joins session.url.
        self.embedded = embedded
        self.links: dict[str, SerialLink | MqttLink] = {}
        self.notifier = Notifier.from_env()
        self._stop = asyncio.Event()
        self.timer = EngineTimer(lambda: self.executor.engine, self._execute, self.stop)
        self.executor = Executor(config, self.links, None, self.timer.arm)
        #: metrics: in the config: served by run() (read from the current engine when scraped; the
        #: registry reads it once at once, so the executor comes first).
        self.metrics: BridgeMetrics | None = None
        if config.metrics is not None:
            from bridge.adapters.metrics import BridgeMetrics
            self.metrics = BridgeMetrics(lambda: self.engine)
        self.executor.metrics = self.metrics
        self.links.update((name, self._make_link(device)) for name, device in config.devices.items())
        self.session = SessionLoop(self.executor, self.notifier, self._stop, self.stop, self._give_up,
                                   embedded.client if embedded is not None else None)
        self.reloader = Reloader(self.executor, self.notifier, self._stop)
        #: What run() returns: 0, or EXIT_AUTH after _give_up().
        self._exit_status = 0

    # What is running now (a reload swaps config and engine, the session loop the client).
    @property
    def config(self) -> BridgeConfig:
        return self.executor.config

    @property
    def engine(self) -> Engine:
        return self.executor.engine

    @property
    def client(self) -> SessionPort | None:
        return self.executor.client

    @property
    def audit(self) -> AuditLog | None:
        """Opened by run() (an audit log that cannot be opened stops the start: the operator asked for it)."""
        return self.executor.audit

    @property
    def counters(self) -> dict[str, int]:
        return self.executor.counters

    @property
    def reloads(self) -> dict[str, int]:
        """Reloads applied / refused since start."""
        return self.reloader.counts

    def _execute(self, commands: Iterable[Command]) -> None:
        self.executor.execute(commands)

    def _make_link(self, device: Device) -> SerialLink | MqttLink:
        if device.serial is not None:
            from bridge.devices.serial_link import SerialLink
            return SerialLink(device.name, device.serial, self._line_handler(device.name), self._on_device,
                              self._bytes_handler(device.name), self._on_expired)
        assert device.mqtt is not None
        from bridge.devices.mqtt_link import MqttLink
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
        self.timer.stop()
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
        loop.add_signal_handler(signal.SIGHUP, self.reloader.ask)
        devices = ", ".join(f"{d.name} ({d.serial.port if d.serial else 'mqtt'})"
                            for d in self.config.devices.values())
        where = f"joining {', '.join(self.config.session.hub_urls)}" if self.embedded is None else "hosting"
        print(f"sigbridge run: {self.config.source}: {len(self.config.rules)} rule(s), devices: {devices}; "
              f"{where} session {self.config.session.session_id}", file=sys.stderr, flush=True)
        if self.embedded is not None and not await self._host():
            return 1
        if self.metrics is not None and self.config.metrics is not None:
            try:
                await self.metrics.serve(self.config.metrics.host, self.config.metrics.port)
            except OSError as exc:
                print(f"sigbridge run: cannot serve metrics on {self.config.metrics.host}:"
                      f"{self.config.metrics.port}: {exc}", file=sys.stderr)
                return 1
        if self.config.audit is not None:
            try:
                self.executor.audit = AuditLog.from_config(self.config.audit)
            except OSError as exc:
                print(f"sigbridge run: cannot open the audit log {self.config.audit.path}: {exc}",
                      file=sys.stderr)
                return 1
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(link.run(), name=f"device {name}")
                         for name, link in self.links.items()]
                tasks.append(tg.create_task(self.session.run(), name="session"))
                self.timer.arm()
                tasks.extend(tg.create_task(self._heartbeat(d), name=f"heartbeat {d.name}")
                             for d in self.config.devices.values() if d.heartbeat is not None)
                tasks.append(tg.create_task(watchdog_loop(self.notifier), name="systemd watchdog"))
                tasks.append(tg.create_task(self.reloader.run(), name="reloader"))
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
                if self.embedded is not None:   # after the bridge left: the operators saw it go
                    await self.embedded.close()
                for task in tasks:
                    task.cancel()
        finally:
            if self.embedded is not None:
                await self.embedded.close()
            self.timer.stop()
            self.executor.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self.notifier.close()
            if self.audit is not None:
                self.audit.close()      # what its writer still holds, at most CLOSE_TIMEOUT_S
            if self.metrics is not None:
                await self.metrics.close()
        print("sigbridge run: stopped", file=sys.stderr, flush=True)
        return self._exit_status

    async def _host(self) -> bool:
        """session.embedded: serve the session (WebSocket, REST, console) before joining it."""
        assert self.embedded is not None
        cfg = self.embedded.config
        try:
            hub = await self.embedded.start()
        except OSError as exc:
            print(f"sigbridge run: cannot serve the embedded session on {cfg.host}:{cfg.port}: {exc}",
                  file=sys.stderr, flush=True)
            return False
        print(f"sigbridge run: serving session {self.config.session.session_id} on {hub.url} (console "
              f"{hub.http_url}/); API credentials from {cfg.credentials_source}", file=sys.stderr, flush=True)
        for warning in self.embedded.warnings():
            print(f"sigbridge run: warning: {warning}", file=sys.stderr, flush=True)
        return True

    # ------------------------------------------------------------ devices

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

    async def _heartbeat(self, device: Device) -> None:
        hb = device.heartbeat
        assert hb is not None
        link = self.links[device.name]
        interval = 1.0 / hb.hz
        frame = FrameEncoder(hb.frame, {}).encode({}) if hb.frame is not None else None
        while True:
            if link.up:
                if link.kind == "serial" and frame is not None:
                    link.write_frame(frame)
                elif link.kind == "serial" and hb.line is not None:
                    link.write_line(hb.line)
                elif link.kind == "mqtt" and hb.topic is not None:
                    link.publish(hb.topic, hb.payload.encode(), 0)
            await asyncio.sleep(interval)
