"""The hub's ``GET /metrics`` page rendered with prometheus-client (the exposition format is theirs,
not hand-written): the samples come from ``HubState.metric_rows`` (pure data,
:mod:`bridge.core.hub.counters`) plus the configured bounds as ``sigbridge_limit{key}`` gauges. A
fresh registry per scrape: the hub's counters live in its state, prometheus-client only formats them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.core.hub.counters import MetricRow

__all__ = ["CONTENT_TYPE_LATEST", "render"]


class _Rows(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def render(rows: Iterable[MetricRow], limits: Mapping[str, float]) -> bytes:
    """The Prometheus text page for ``rows`` (in order, one family per name) and ``limits``."""
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
    for name, kind, labels, value in rows:
        family = families.get(name)
        if family is None:
            full = f"sigbridge_{name}"
            help_text = f"hub {name.removesuffix('_total').replace('_', ' ')}"
            keys = [k for k, _ in labels]
            family = families[name] = (CounterMetricFamily(full, help_text, labels=keys) if kind == "counter"
                                       else GaugeMetricFamily(full, help_text, labels=keys))
        family.add_metric([v for _, v in labels], value)
    limit = GaugeMetricFamily("sigbridge_limit", "hub configured bounds", labels=["key"])
    for key, value in limits.items():
        limit.add_metric([key], float(value))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Rows([*families.values(), limit]))
    return generate_latest(registry)
