"""The bridge's Prometheus metrics (``metrics: {listen: HOST:PORT}`` in bridge.yaml), exposed with the
well-kept ``prometheus-client`` at ``GET /metrics`` on an aiohttp listener in the daemon's own loop (no
thread). Without ``metrics:`` nothing listens.

Most values are read from the engine when scraped (a collector: nothing is counted twice, nothing
costs the hot path): decisions by kind, engine counters, each device's link state, the session link,
the e-stop latch, whether the control lease is held. Counted by the daemon as it happens: writes handed
to each device link and refusals per device (the device down, or its queue full), and the command
latency histogram - from the hub's receive time (``ts``) to the write being handed to the link.

    sigbridge_decisions_total{decision="applied"} 12
    sigbridge_device_writes_total{device="base"} 12
    sigbridge_device_refusals_total{device="base"} 1
    sigbridge_device_up{device="base"} 1
    sigbridge_session_linked 1
    sigbridge_estopped 0
    sigbridge_lease_held 0
    sigbridge_command_latency_seconds_bucket{le="0.005"} 9 ...
    sigbridge_events_total{event="watchdog_fired"} 2
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.core.engine import Engine
from bridge.core.engine.decisions import Decision

#: Command latency buckets (seconds): a local hop is ~1-5 ms, a stale guard is usually 300-500 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _EngineCollector(Collector):
    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine      # the current engine (a reload swaps it)

    def collect(self) -> Iterator[Metric]:
        status = self._engine().status()
        decisions = CounterMetricFamily("sigbridge_decisions", "Command decisions by kind",
                                        labels=["decision"])
        for d in Decision:
            decisions.add_metric([d.value], status.decisions[d])
        yield decisions
        events = CounterMetricFamily("sigbridge_events", "Engine counters (bridge.status counters)",
                                     labels=["event"])
        for name, value in sorted(status.counters.items()):
            events.add_metric([name], value)
        yield events
        up = GaugeMetricFamily("sigbridge_device_up", "1 while the device link is up", labels=["device"])
        for name, is_up in status.devices.items():
            up.add_metric([name], 1 if is_up else 0)
        yield up
        yield GaugeMetricFamily("sigbridge_session_linked", "1 while the session link is up",
                                value=1 if status.linked else 0)
        yield GaugeMetricFamily("sigbridge_estopped", "1 while the e-stop is latched",
                                value=1 if status.estopped else 0)
        yield GaugeMetricFamily("sigbridge_lease_held", "1 while an operator holds the control lease",
                                value=1 if status.lease_holder is not None else 0)


class BridgeMetrics:
    """One registry per daemon (tests run several in one process)."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_EngineCollector(engine))
        self.writes = Counter("sigbridge_device_writes", "Writes handed to each device link", ["device"],
                              registry=self.registry)
        self.refusals = Counter("sigbridge_device_refusals",
                                "Writes a device link refused or would refuse (down, queue full)", ["device"],
                                registry=self.registry)
        self.latency = Histogram("sigbridge_command_latency_seconds",
                                 "Hub receive time to the write handed to the device link",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self._runner: web.AppRunner | None = None

    def text(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> None:
        """Listen on HOST:PORT (raises OSError when it cannot)."""
        async def page(_: web.Request) -> web.Response:
            return web.Response(body=self.text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
