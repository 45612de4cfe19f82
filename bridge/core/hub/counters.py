"""The hub's counters (one :class:`Metrics` per hub process) and the /metrics samples built from them
as data (:func:`metric_rows`); the adapter renders them with prometheus-client."""

from __future__ import annotations

from dataclasses import dataclass, field

#: One /metrics sample: (name without the sigbridge_ prefix, "counter" | "gauge", labels, value).
MetricRow = tuple[str, str, tuple[tuple[str, str], ...], int | float]


@dataclass(slots=True)
class Metrics:
    """Counters shown on /metrics. Mutated in place by the hub state and its engine; read by the adapter."""

    signals_in: int = 0
    signals_delivered: int = 0
    rest_signals: int = 0
    nacks: dict[int, int] = field(default_factory=dict)
    buffered: int = 0  # retry frames numbered while their receiver had no link
    dropped: int = 0  # frames lost: retry:false to a member without link, or pushed out of its buffer
    resumes: int = 0
    auth_failures: int = 0
    resume_refused: int = 0  # wrong or malformed secret, other token grant, or throttled
    slow_receivers: int = 0  # links closed because their outbox went past its bound (or the budget)
    flood_disconnects: int = 0  # links closed for sending frames far over their rate limit
    frames_refused: int = 0  # frames over the rate limit (signals nacked 429, the rest dropped)
    refused_frames: dict[str, int] = field(default_factory=dict)  # malformed frames by kind
    caps_refused: dict[str, int] = field(default_factory=dict)  # connections refused by which cap
    accept_errors: int = 0  # accept() failures (EMFILE...) the event loop reported
    bad_http_requests: int = 0  # requests aiohttp could not parse or serve (answered with a bare status)

    def nack(self, code: int) -> None:
        self.nacks[code] = self.nacks.get(code, 0) + 1

    def refused_cap(self, cap: str) -> None:
        self.caps_refused[cap] = self.caps_refused.get(cap, 0) + 1


def metric_rows(m: Metrics, *, connections: int, sessions: int, links: int,
                buffered_bytes: int) -> list[MetricRow]:
    """What /metrics shows: one ``(name, kind, labels, value)`` per sample, ``name`` without the
    ``sigbridge_`` prefix, counters named with ``_total``."""
    values: list[tuple[str, str, int | float]] = [
        ("connections", "gauge", connections), ("links", "gauge", links),
        ("sessions", "gauge", sessions), ("signals_received_total", "counter", m.signals_in),
        ("signals_rest_total", "counter", m.rest_signals),
        ("signals_delivered_total", "counter", m.signals_delivered),
        ("signals_buffered_total", "counter", m.buffered),
        ("signals_dropped_total", "counter", m.dropped),
        ("resumes_total", "counter", m.resumes), ("auth_failures_total", "counter", m.auth_failures),
        ("resume_refused_total", "counter", m.resume_refused),
        ("slow_receivers_total", "counter", m.slow_receivers),
        ("flood_disconnects_total", "counter", m.flood_disconnects),
        ("frames_refused_total", "counter", m.frames_refused),
        ("accept_errors_total", "counter", m.accept_errors),
        ("bad_http_requests_total", "counter", m.bad_http_requests),
        ("buffered_bytes", "gauge", buffered_bytes),
    ]
    rows: list[MetricRow] = [(name, kind, (), value) for name, kind, value in values]
    for name, label, counts in (("nacks_total", "code", m.nacks),
                                ("malformed_frames_total", "kind", m.refused_frames),
                                ("connections_refused_total", "cap", m.caps_refused)):
        rows += [(name, "counter", ((label, str(k)),), n) for k, n in sorted(counts.items())]
    return rows
