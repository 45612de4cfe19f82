"""The daemon's executor: carries out the engine's commands, at once and in order, and holds what they
go to (the running config, engine and audit log, the session client of the moment, the device links).

- lines, frames and publishes are handed to the links without blocking; a write a link refuses goes
  back to the engine as an event (``WriteRefused``), so a safe action the device missed is written first
  when it comes back;
- signals with retry disabled (all the engine makes today) are paced under the hub's rate limit
  (``bridge.core.engine.pacing``) and written at once with ``SessionClient.send_nowait`` (no ack
  awaited; while the link is down or its write buffer is full they fail at once and are counted, never
  queued); the others are sent as background tasks, at most ``MAX_SIGNALS_IN_FLIGHT``;
- audit records go to the audit log (its writer thread does the I/O); notices become log lines.

Before deciding a command the engine asks :meth:`Executor.gate` whether its device link would take it
now (``device_down`` / ``overloaded`` otherwise).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bridge.client import SignalError
from bridge.core.engine import Audit, Command, Engine, Publish, Purge, SendSignal, WriteFrame, WriteLine
from bridge.core.engine.actions import Notice, NoticeKind
from bridge.core.engine.decisions import Decision, Verdict
from bridge.core.engine.outcomes import WriteRefused
from bridge.core.engine.pacing import Pacer
from bridge.core.model import BridgeConfig
from bridge.daemon.port import SessionPort

if TYPE_CHECKING:   # imported by the daemon only when its config has them (aiohttp, paho: memory, start-up)
    from bridge.adapters.audit import AuditLog
    from bridge.adapters.metrics import BridgeMetrics
    from bridge.devices.mqtt_link import MqttLink
    from bridge.devices.serial_link import SerialLink

log = logging.getLogger(__name__)

#: Retry signals being sent at once (each waits for the hub's ack); beyond this, new ones are dropped+counted.
MAX_SIGNALS_IN_FLIGHT = 256
#: The share of the hub's announced rate limit (and burst) the bridge's own signals use at most.
HUB_RATE_MARGIN = 0.9


class Executor:
    """Carries out commands; ``after_batch`` is called at the end of every batch (the engine timer's
    re-arm). ``engine``, ``config`` and ``audit`` are swapped by a reload through :meth:`adopt`."""

    def __init__(self, config: BridgeConfig, links: dict[str, SerialLink | MqttLink],
                 metrics: BridgeMetrics | None, after_batch: Callable[[], None]) -> None:
        self.config = config
        self.engine = Engine(config)
        self.engine.gate = self.gate
        self.links = links
        self.metrics = metrics
        self.audit: AuditLog | None = None
        #: The session client while one is joined (set by the session loop).
        self.client: SessionPort | None = None
        self.counters: dict[str, int] = {"signals_failed": 0, "signals_overflow": 0, "sessions": 0}
        self._after_batch = after_batch
        self._in_flight: set[asyncio.Task[None]] = set()
        # The bridge's own signals, paced under the hub's rate limit (acks wait, telemetry may drop).
        s = config.session
        self._pacer: Pacer[SendSignal] = Pacer(s.signal_rate_hz, s.signal_burst, time.monotonic())
        self._pacer_timer: asyncio.TimerHandle | None = None

    def adopt(self, config: BridgeConfig, engine: Engine) -> None:
        """Commands go to ``engine`` (which took over the old one's state) from now on."""
        engine.gate = self.gate
        self.engine, self.config = engine, config

    def close(self) -> None:
        if self._pacer_timer is not None:
            self._pacer_timer.cancel()

    # ------------------------------------------------------------ the session link

    def link_down(self, now: float) -> None:
        self._pacer.clear()        # acks and status still waiting would be stale after the outage
        self.execute(self.engine.link_down(now))

    def pace(self, client: SessionPort) -> None:
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

    # ------------------------------------------------------------ devices

    def gate(self, cmd: WriteLine | WriteFrame | Publish) -> Verdict | None:
        """Would the device link take ``cmd`` now? (The engine asks before deciding a command.)"""
        link = self.links.get(cmd.device)
        if isinstance(cmd, WriteLine):
            why = "down" if link is None or link.kind != "serial" else link.refusal(len(cmd.line.encode()))
        elif isinstance(cmd, WriteFrame):
            why = "down" if link is None or link.kind != "serial" else link.refusal(len(cmd.data))
        else:
            why = "down" if link is None or link.kind != "mqtt" else link.refusal(cmd.qos)
        if why is None:
            return None
        self._count(cmd, False)
        if why == "full":
            return Verdict(Decision.OVERLOADED, f"device {cmd.device}: queue full")
        return Verdict(Decision.DEVICE_DOWN, f"device {cmd.device} is down")

    def _count(self, cmd: WriteLine | WriteFrame | Publish, taken: bool) -> None:
        if self.metrics is not None:
            (self.metrics.writes if taken else self.metrics.refusals).labels(cmd.device).inc()

    def execute(self, commands: Iterable[Command]) -> None:
        engine = self.engine
        for cmd in commands:
            if isinstance(cmd, WriteLine):
                link = self.links.get(cmd.device)
                taken = link is not None and link.kind == "serial" and link.write_line(cmd.line, cmd.deadline)
            elif isinstance(cmd, WriteFrame):
                link = self.links.get(cmd.device)
                taken = (link is not None and link.kind == "serial"
                         and link.write_frame(cmd.data, cmd.deadline))
            elif isinstance(cmd, Publish):
                link = self.links.get(cmd.device)
                taken = link is not None and link.kind == "mqtt" and link.publish(cmd.topic, cmd.payload,
                                                                                   cmd.qos, cmd.deadline)
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
                log_notice(cmd)
                continue
            self._count(cmd, taken)
            if not taken:   # the link's answer goes back to the engine as an event
                self.execute(engine.device_event(WriteRefused(cmd), time.monotonic()))
        self._after_batch()

    # ------------------------------------------------------------ signals

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

    def _send_now(self, client: SessionPort, cmd: SendSignal) -> None:
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

    async def _signal(self, client: SessionPort, cmd: SendSignal) -> None:
        try:
            await client.signal(cmd.type, cmd.data, cmd.to, retry_after_reconnect=cmd.retry)
        except SignalError as exc:
            self.counters["signals_failed"] += 1
            log.debug("signal %s not sent: %s", cmd.type, exc)


def log_notice(notice: Notice) -> None:
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
