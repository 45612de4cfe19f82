"""Telemetry shaping: device lines and MQTT messages -> signal data, throttled latest-wins.

Contract: ``TelemetryShaper(streams)`` compiles every ``match`` regex and topic filter once. Feed it
``serial_line(device, line, now)`` and ``mqtt_message(device, topic, payload, now)``; each returns the
``Outgoing`` signals to send right away. A stream with ``max_rate_hz`` is paced by a token bucket
holding at most ``BURST`` tokens, refilled at ``SLACK * max_rate_hz`` a second: a value that finds a
token goes out at once, with no added delay, so a stream at or below ``max_rate_hz`` passes untouched
even when its values come unevenly (early, late, or several in one read after the bridge was held up
for a few intervals) or by a device clock a little fast. Only a faster stream waits: a value that finds
no token is held as the stream's single pending value (a newer one replaces it: latest wins, never a
queue) and comes out of ``due(now)`` as soon as a token is there; ``next_deadline()`` says when to call
``due``. Over any window of T seconds a stream sends at most ``BURST + SLACK * max_rate_hz * T``
values. ``now`` is any monotonic clock in seconds.

Shaping:
- serial: a line fully matching the stream's ``match`` becomes a JSON object of its named groups, each
  a number when it reads as one (``"87"`` -> 87, ``"0.50"`` -> 0.5), else a string; ``types`` overrides
  (int | float | bool | string); a value that does not convert is counted in ``bad`` and the line dropped.
- MQTT: ``{"topic": T, "payload": P}`` where P is the payload's JSON value, or its text when it is not
  JSON. Throttling is per stream and topic, so ``arm/state/#`` keeps the latest of each topic.
- binary (``framing: binary`` devices): ``serial_bytes(device, data, now)`` finds the frames of the
  device's ``frame:`` streams in the byte stream (`bridge.core.engine.frames.FrameStream`: resynchronising
  after garbage, counting bad checksums in ``frame_stats``); each becomes a JSON object of its named
  fields.
- data larger than the signal limit (8192 bytes) is dropped and counted in ``dropped_size``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.core import jsontext
from bridge.core.engine.frames import FrameDecoder, FrameStream
from bridge.core.model import FrameTelemetry, MqttTelemetry, ParamType, SerialTelemetry, TelemetryStream
from bridge.core.signal import MAX_DATA_BYTES

_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A telemetry signal to broadcast (always with retry disabled)."""

    type: str
    data: str


def convert(text: str) -> int | float | str:
    """``"87"`` -> 87, ``"0.50"`` -> 0.5, anything else (including overflow to inf) -> the text."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    return text


def convert_as(text: str, type_: ParamType) -> int | float | bool | str:
    """Convert to a declared type; raises ValueError when the text is not of that type."""
    if type_ == "string":
        return text
    if type_ == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(text)
    if type_ == "int":
        if _INT.fullmatch(text):
            return int(text)
        raise ValueError(text)
    if _INT.fullmatch(text) or _FLOAT.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    raise ValueError(text)


def topic_matches(filter_levels: tuple[str, ...], topic_levels: list[str]) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest; ``$`` topics need an explicit first
    level)."""
    if topic_levels and topic_levels[0].startswith("$") and filter_levels and filter_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(filter_levels):
        if f == "#":
            return True
        if i >= len(topic_levels):
            return False
        if f != "+" and f != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)


#: Tokens a throttled stream may save up: absorbs the jitter of a stream at its rate (why not 1: with
#: one token, every value that came a little early was held for the rest of the interval; a 10 Hz stream
#: under max_rate_hz 10 was 38-41 ms late at p50 and up to 100 ms, see docs/safety.md).
BURST = 4.0
#: The bucket refills this much faster than max_rate_hz. Why: a device's clock is never exactly the
#: Pi's, and a stream at exactly its rate never gives a token back; so without slack a device that sends
#: "10 Hz" by a clock 1 % fast, or that lost tokens to a stall longer than the burst, would have every
#: later value wait. A stream more than 10 % faster than max_rate_hz is thinned.
SLACK = 1.1
#: Float slack when a token is due exactly at the deadline next_deadline computed.
_EPS = 1e-9


class _Throttle:
    """Latest-wins token bucket of one stream (or one stream and topic)."""

    __slots__ = ("interval", "last", "pending", "tokens")

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval / SLACK      # between two refilled tokens
        self.tokens = BURST
        self.last = now           # when ``tokens`` was last brought up to date
        self.pending: str | None = None

    def take(self, now: float) -> bool:
        """Spend a token if there is one at ``now``."""
        tokens = min(BURST, self.tokens + (now - self.last) / self.interval)
        self.last = now
        if tokens < 1.0 - _EPS:
            self.tokens = tokens
            return False
        self.tokens = max(0.0, tokens - 1.0)
        return True

    def deadline(self) -> float:
        """When the next token is there."""
        return self.last + max(0.0, 1.0 - self.tokens) * self.interval


class TelemetryShaper:
    def __init__(self, streams: Iterable[TelemetryStream]) -> None:
        self._serial: dict[str, list[tuple[int, SerialTelemetry, re.Pattern[str]]]] = {}
        self._mqtt: dict[str, list[tuple[int, MqttTelemetry, tuple[str, ...]]]] = {}
        self._frames: dict[str, tuple[FrameStream, list[int]]] = {}   # device -> (parser, stream index)
        self._types: dict[int, str] = {}
        self._intervals: dict[int, float] = {}
        for index, stream in enumerate(streams):
            self._types[index] = stream.signal
            if stream.max_rate_hz:
                self._intervals[index] = 1.0 / stream.max_rate_hz
            if isinstance(stream, FrameTelemetry):
                parser, indexes = self._frames.setdefault(stream.device, (FrameStream([]), []))
                parser.add(FrameDecoder(stream.frame))
                indexes.append(index)
            elif isinstance(stream, SerialTelemetry):
                entry = (index, stream, re.compile(stream.match))
                self._serial.setdefault(stream.device, []).append(entry)
            else:
                levels = tuple(stream.topic.split("/"))
                self._mqtt.setdefault(stream.device, []).append((index, stream, levels))
        self._throttles: dict[tuple[int, str], _Throttle] = {}
        self.sent = 0
        self.replaced = 0        # held values replaced by a newer one (latest wins)
        self.dropped_size = 0    # over the 8 KB signal limit
        self.bad = 0             # a `types:` conversion failed
        self.unmatched = 0       # device lines/messages that no stream took
        self.frames_bad_checksum = 0   # binary frames whose constants matched but not their checksum

    # ------------------------------------------------------------ inputs

    def serial_line(self, device: str, line: str, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        matched = False
        for index, stream, pattern in self._serial.get(device, ()):
            m = pattern.fullmatch(line)
            if m is None:
                continue
            matched = True
            fields: dict[str, Any] = {}
            try:
                for name, text in m.groupdict().items():
                    if text is None:
                        fields[name] = None
                    elif name in stream.types:
                        fields[name] = convert_as(text, stream.types[name])
                    else:
                        fields[name] = convert(text)
            except ValueError:
                self.bad += 1
                continue
            self._offer(index, "", jsontext.dumps(fields), now, out)
        if not matched:
            self.unmatched += 1
        return out

    def serial_bytes(self, device: str, data: bytes, now: float) -> list[Outgoing]:
        entry = self._frames.get(device)
        out: list[Outgoing] = []
        if entry is None:
            self.unmatched += 1
            return out
        parser, indexes = entry
        before = parser.bad_checksum
        for which, fields in parser.feed(data):
            self._offer(indexes[which], "", jsontext.dumps(fields), now, out)
        self.frames_bad_checksum += parser.bad_checksum - before
        return out

    @property
    def frame_stats(self) -> dict[str, dict[str, int]]:
        """Per binary device: frames, skipped bytes, bad_checksum, bad_values."""
        return {device: {"frames": p.frames, "skipped": p.skipped, "bad_checksum": p.bad_checksum,
                         "bad_values": p.bad_values} for device, (p, _) in self._frames.items()}

    def mqtt_message(self, device: str, topic: str, payload: bytes, now: float) -> list[Outgoing]:
        streams = self._mqtt.get(device)
        out: list[Outgoing] = []
        if not streams:
            self.unmatched += 1
            return out
        levels = topic.split("/")
        data: str | None = None
        for index, _stream, filter_levels in streams:
            if not topic_matches(filter_levels, levels):
                continue
            if data is None:
                data = jsontext.dumps({"topic": topic, "payload": _payload_value(payload)})
            self._offer(index, topic, data, now, out)
        if data is None:
            self.unmatched += 1
        return out

    def due(self, now: float) -> list[Outgoing]:
        """The held values whose next token is there (call at ``next_deadline()``)."""
        out: list[Outgoing] = []
        for (index, _topic), t in self._throttles.items():
            if t.pending is not None and now >= t.deadline() - _EPS and t.take(now):
                data, t.pending = t.pending, None
                self._emit(index, data, out)
        return out

    def next_deadline(self) -> float | None:
        deadlines = [t.deadline() for t in self._throttles.values() if t.pending is not None]
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------ internals

    def _offer(self, index: int, topic: str, data: str, now: float, out: list[Outgoing]) -> None:
        if len(data) * 4 > MAX_DATA_BYTES and len(data.encode("utf-8")) > MAX_DATA_BYTES:
            self.dropped_size += 1
            return
        interval = self._intervals.get(index)
        if interval is None:
            self._emit(index, data, out)
            return
        key = (index, topic)
        t = self._throttles.get(key)
        if t is None:
            t = self._throttles[key] = _Throttle(interval, now)
        if t.pending is not None:
            self.replaced += 1                  # latest wins: the held value is replaced or superseded
            t.pending = None
        if t.take(now):
            self._emit(index, data, out)
        else:
            t.pending = data

    def _emit(self, index: int, data: str, out: list[Outgoing]) -> None:
        self.sent += 1
        out.append(Outgoing(self._types[index], data))


def _payload_value(payload: bytes) -> Any:
    text = payload.decode("utf-8", "replace")
    try:
        return jsontext.loads(text)
    except ValueError:
        return text

