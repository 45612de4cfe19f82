"""bridge.core.engine.telemetry: regex shaping, numbers, types, MQTT payloads, throttle, size limit."""

from __future__ import annotations

import itertools
import json

import pytest

from bridge.core.engine.telemetry import BURST, SLACK, Outgoing, TelemetryShaper, convert, topic_matches
from bridge.core.model import MqttTelemetry, SerialTelemetry

SER = SerialTelemetry("base", r"T (?P<battery>\d+) (?P<speed>-?[\d.]+) (?P<mode>\w+)", "robot.telemetry")


def data(out: list[Outgoing]) -> list[object]:
    return [json.loads(o.data) for o in out]


def test_convert() -> None:
    assert convert("87") == 87 and convert("-3") == -3
    assert convert("0.50") == 0.5 and convert("1e3") == 1000.0 and convert(".5") == 0.5
    assert convert("eco") == "eco" and convert("1_000") == "1_000" and convert("1e999") == "1e999"
    assert convert("nan") == "nan" and convert(" 1") == " 1"


def test_serial_line_fullmatch_to_json() -> None:
    s = TelemetryShaper([SER])
    out = s.serial_line("base", "T 87 0.50 eco", 0.0)
    assert [o.type for o in out] == ["robot.telemetry"]
    assert data(out) == [{"battery": 87, "speed": 0.5, "mode": "eco"}]
    assert s.serial_line("base", "T 87 0.50 eco extra", 0.0) == []
    assert s.serial_line("other", "T 87 0.50 eco", 0.0) == []
    assert s.unmatched == 2


def test_types_override_and_bad_conversion() -> None:
    st = SerialTelemetry("base", r"S (?P<id>\d+) (?P<ok>\w+) (?P<v>\S+)", "s",
                         types={"id": "string", "ok": "bool", "v": "float"})
    s = TelemetryShaper([st])
    assert data(s.serial_line("base", "S 007 on 3", 0.0)) == [{"id": "007", "ok": True, "v": 3.0}]
    assert s.serial_line("base", "S 1 maybe 3", 0.0) == []
    assert s.serial_line("base", "S 1 off x", 0.0) == []
    assert s.bad == 2


def test_mqtt_payload_json_or_text() -> None:
    s = TelemetryShaper([MqttTelemetry("arm", "arm/state/#", "arm.state")])
    assert data(s.mqtt_message("arm", "arm/state/grip", b'{"force": 3}', 0.0)) == [
        {"topic": "arm/state/grip", "payload": {"force": 3}}]
    assert data(s.mqtt_message("arm", "arm/state", b"open", 0.0)) == [
        {"topic": "arm/state", "payload": "open"}]
    assert data(s.mqtt_message("arm", "arm/state/x", b"NaN", 0.0)) == [
        {"topic": "arm/state/x", "payload": "NaN"}]
    assert s.mqtt_message("arm", "arm/other", b"1", 0.0) == []


def test_topic_matching() -> None:
    def m(f: str, t: str) -> bool:
        return topic_matches(tuple(f.split("/")), t.split("/"))
    assert m("a/+/c", "a/b/c") and not m("a/+/c", "a/b/d") and not m("a/+", "a/b/c")
    assert m("a/#", "a") and m("a/#", "a/b/c") and m("#", "x/y")
    assert not m("#", "$SYS/x") and m("$SYS/#", "$SYS/x") and not m("+/x", "$SYS/x")


def test_throttle_latest_wins_never_queues() -> None:
    st = SerialTelemetry("base", r"V (?P<v>\d+)", "v", max_rate_hz=10)
    s = TelemetryShaper([st])
    burst = int(BURST)
    for i in range(1, burst + 1):                                       # the burst passes at once
        assert data(s.serial_line("base", f"V {i}", 0.0)) == [{"v": i}]
    for i in range(burst + 1, 1000):
        assert s.serial_line("base", f"V {i}", 0.01) == []
    assert s.replaced == 998 - burst
    assert s.next_deadline() == pytest.approx(0.1 / SLACK)
    assert s.due(0.05) == []
    assert data(s.due(0.1)) == [{"v": 999}]
    assert s.next_deadline() is None and s.due(1.0) == []
    assert data(s.serial_line("base", "V 5", 0.25)) == [{"v": 5}]


def test_a_stream_at_the_rate_is_never_delayed_even_with_jitter() -> None:
    """10 Hz under max_rate_hz 10, each value up to 40 ms early or late: every one goes out at once
    (with the old one-slot throttle, every early value was held for the rest of its interval)."""
    s = TelemetryShaper([SerialTelemetry("base", r"V (?P<v>\d+)", "v", max_rate_hz=10)])
    jitter = [0.0, -0.04, 0.03, -0.02, 0.04, -0.04, 0.0, 0.01, -0.03, 0.02] * 30
    for i, j in enumerate(jitter):
        assert data(s.serial_line("base", f"V {i}", i * 0.1 + j)) == [{"v": i}], i
    assert s.next_deadline() is None


def test_a_stream_at_the_rate_recovers_from_stalls_never_delayed() -> None:
    """Jitter of up to 30 ms, and every 5 s the bridge held up for 200 ms: the two lines it missed
    arrive with the next one, read together. Still none waits, however long it goes on (without the
    slack, the tokens a burst spent never came back, and from then on every early value waited)."""
    s = TelemetryShaper([SerialTelemetry("base", r"V (?P<v>\d+)", "v", max_rate_hz=10)])
    jitter = [0.0, -0.03, 0.02, -0.01, 0.03, -0.03, 0.0, 0.01, -0.02, 0.01]
    for i in range(1000):
        now = i * 0.1 + jitter[i % 10]
        if i % 50 in (47, 48):
            now = (i // 50 * 50 + 49) * 0.1 + jitter[9]
        assert data(s.serial_line("base", f"V {i}", now)) == [{"v": i}], i


@pytest.mark.parametrize(("hz", "thinned"), [(10.2, False), (9.0, False), (12.0, True)])
def test_a_device_clock_a_little_fast_is_not_thinned_a_faster_stream_is(hz: float, thinned: bool) -> None:
    """'10 Hz' by a device clock 2 % fast, for 100 s: not one value waits (a bucket refilled at
    exactly max_rate_hz ran dry after 2 s of it and then held every value). 12 Hz is thinned."""
    s = TelemetryShaper([SerialTelemetry("base", r"V (?P<v>\d+)", "v", max_rate_hz=10)])
    passed = sum(len(s.serial_line("base", f"V {i}", i / hz)) for i in range(int(100 * hz)))
    assert (passed < int(100 * hz)) is thinned, passed


def test_a_faster_stream_is_thinned_to_the_rate_latest_wins() -> None:
    s = TelemetryShaper([SerialTelemetry("base", r"V (?P<v>\d+)", "v", max_rate_hz=10)])
    sent: list[tuple[float, object]] = []
    for i in range(1000):                      # 100 Hz for 10 s, the timer called when due
        now = i / 100
        while (deadline := s.next_deadline()) is not None and deadline <= now:
            sent += [(deadline, o) for o in data(s.due(deadline))]
        sent += [(now, o) for o in data(s.serial_line("base", f"V {i}", now))]
    assert 100 <= len(sent) <= BURST + SLACK * 10 * 10      # BURST + SLACK * rate * T
    assert all(b - a >= 0.1 / SLACK - 1e-6 for (a, _), (b, _) in itertools.pairwise(sent[int(BURST):]))
    assert s.replaced > 800


def test_mqtt_throttle_is_per_topic() -> None:
    s = TelemetryShaper([MqttTelemetry("arm", "arm/#", "arm.state", max_rate_hz=1)])
    assert len(s.mqtt_message("arm", "arm/a", b"1", 0.0)) == 1
    assert len(s.mqtt_message("arm", "arm/b", b"1", 0.0)) == 1
    for _ in range(int(BURST) - 1):                                 # the burst, each topic its own
        assert len(s.mqtt_message("arm", "arm/a", b"2", 0.0)) == 1
    assert s.mqtt_message("arm", "arm/a", b"3", 0.5) == []
    assert len(s.mqtt_message("arm", "arm/b", b"2", 0.5)) == 1


def test_oversize_dropped_and_counted() -> None:
    s = TelemetryShaper([MqttTelemetry("arm", "big", "big")])
    assert s.mqtt_message("arm", "big", b"x" * 9000, 0.0) == []
    assert s.dropped_size == 1
    assert len(s.mqtt_message("arm", "big", b"x" * 8000, 0.0)) == 1
