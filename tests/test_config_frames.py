"""The ``framing: binary`` / ``frame:`` config keys: the RoboClaw example passes `sigbridge check`, a good
frame compiles to the bytes the engine writes, and every frame-spec mistake is reported as
``file:line: key.path: message`` like any other config error (all of them at once)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config
from bridge.core.engine import Engine, SendSignal, WriteFrame
from bridge.core.events import Signal
from bridge.core.model import SerialAction
from bridge.core.signal import Connection
from tests.helpers.cli import ROOT, check
from tests.helpers.frames import manual_crc16

BASE = """\
session: {url: ws://hub:8765, session_id: lab-1, token: abc}
devices:
  claw: {serial: {port: /dev/ttyACM0, framing: binary}}
  base: {serial: {port: /dev/ttyUSB0}}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def errors(text: str) -> list[str]:
    Path("bridge.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config("bridge.yaml", {})
    return [str(e) for e in info.value.errors]


def test_the_roboclaw_example_passes_sigbridge_check() -> None:
    out = check(ROOT / "config" / "roboclaw.example.yaml", {"SIGBRIDGE_TOKEN": "t"}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "devices: claw (serial, binary frames: /tmp/roboclaw)" in out.stdout
    assert "rules: 3 (claw.duty, claw.speed, claw.timeout)" in out.stdout
    assert "telemetry: 1 stream(s) (claw.battery)" in out.stdout


def test_a_binary_rule_writes_the_frame_and_refuses_what_does_not_fit() -> None:
    config = load_config(ROOT / "config" / "roboclaw.example.yaml", {"SIGBRIDGE_TOKEN": "t"})
    engine = Engine(config)
    engine.link_up("me", 0.0)
    engine.connection_created(Connection("op", "", "moderator", 0), 0.0)

    def send(type_: str, data: object) -> list[object]:
        sig = Signal(type=type_, data=json.dumps(data), from_id="op", seq=1, ts=0)
        return list(engine.signal(sig, 1.0))

    out = send("claw.duty", {"m1": 16384, "m2": -16384})
    assert WriteFrame("claw", bytes.fromhex("80 22 40 00 c0 00 e0 df")) in out
    for bad in ({"m1": 40000, "m2": 0}, {"m1": 0.5, "m2": 0}, {"m1": "1", "m2": 0}):
        assert not any(isinstance(c, WriteFrame) for c in send("claw.duty", bad)), bad
    estop = config.safety.estop
    assert estop is not None and isinstance(estop.send[0], SerialAction)
    stop = bytes.fromhex("80 22 00 00 00 00")
    assert [c for c in send("claw.estop", {}) if isinstance(c, WriteFrame)] == [
        WriteFrame("claw", stop + manual_crc16(stop).to_bytes(2, "big"))]


def test_frame_spec_errors_come_with_file_and_line() -> None:
    assert errors(BASE + """\
rules:
  - signal: a.b
    params: {x: {type: float, min: -1, max: 1}, n: {type: int, min: 0, max: 1000}}
    send:
      device: claw
      frame:
        fields:
          - 0x80
          - 300
          - {param: x, type: s16}
          - {param: n, type: u8}
          - {param: y, type: u8}
          - {type: u12, const: 1}
          - {const: 1}
        checksum: crc32
  - signal: c.d
    send: {device: claw, line: "M 1"}
  - signal: e.f
    send: {device: base, frame: {fields: [1]}}
telemetry:
  - {device: claw, match: '(?P<v>.)', signal: t.v}
  - device: claw
    signal: t.w
    frame: {fields: [{param: v, type: u8}], checksum: {type: sum8, skip: 3}}
""") == [
        "bridge.yaml:13: rules[0].send.frame.fields[1]: must be at most 255, got 300",
        "bridge.yaml:16: rules[0].send.frame.fields[4].param: 'y' is not a declared param (declared: x, n)",
        "bridge.yaml:17: rules[0].send.frame.fields[5].type: unknown field type 'u12' (did you mean 'u32'?) "
        "(types: u8, s8, u16, s16, u32, s32, f32, optionally with le or be: u16le)",
        "bridge.yaml:18: rules[0].send.frame.fields[6]: missing required key 'type'",
        "bridge.yaml:19: rules[0].send.frame.checksum: unknown checksum 'crc32' (did you mean 'crc8'?) "
        "(checksums: none, crc16-xmodem, crc8, crc8-dvb-s2, sum8, sum7, xor8)",
        "bridge.yaml:21: rules[1].send.line: 'line' does not apply to 'claw', a device with framing: binary "
        "(it takes frame:)",
        "bridge.yaml:21: rules[1].send: missing required key 'frame' (for the binary device 'claw')",
        "bridge.yaml:23: rules[2].send.frame: 'frame' is for serial devices with framing: binary; 'base' is "
        "a serial device",
        "bridge.yaml:23: rules[2].send: missing required key 'line' (for the serial device 'base')",
        "bridge.yaml:25: telemetry[0].match: 'match' does not apply to the binary serial device 'claw'",
        "bridge.yaml:25: telemetry[0]: missing required key 'frame' (for the binary serial device 'claw')",
        "bridge.yaml:28: telemetry[1].frame.fields[0].param: 'param' does not apply here (only a rule's "
        "action has params)",
    ]


def test_whole_frame_errors_point_at_the_frame() -> None:
    assert errors(BASE + """\
rules:
  - signal: a.b
    params: {x: {type: float, min: -1, max: 1}}
    send: {device: claw, frame: {fields: [1, {param: x, type: s16}]}}
  - signal: c.d
    params: {n: {type: int, min: 0, max: 1000}}
    send: {device: claw, frame: {fields: [{param: n, type: u8}]}}
  - signal: e.f
    send: {device: claw, frame: {fields: [1], checksum: {type: sum8, skip: 1}}}
""") == [
        "bridge.yaml:8: rules[0].send.frame: param 'x' is a float but its field is s16: declare it int (a "
        "value is never truncated to fit)",
        "bridge.yaml:11: rules[1].send.frame: the declared range of 'n': bound 1000 does not fit u8 [0, 255]",
        "bridge.yaml:13: rules[2].send.frame: checksum skip 1 must be less than the 1 bytes it would cover",
    ]


def test_binary_device_keys() -> None:
    assert errors("""\
session: {url: ws://hub:8765, session_id: lab-1, token: abc}
devices:
  claw:
    serial: {port: /dev/ttyACM0, framing: binary, newline: "\\r"}
    heartbeat: {hz: 2, line: K}
  other: {serial: {port: /dev/ttyACM1, framing: bytes}}
""") == [
        "bridge.yaml:4: devices.claw.serial.newline: 'newline' does not apply to a device with framing: "
        "binary (it has no lines)",
        "bridge.yaml:5: devices.claw.heartbeat.line: unknown key; expected one of: hz, frame",
        "bridge.yaml:5: devices.claw.heartbeat: missing required key 'frame'",
        "bridge.yaml:6: devices.other.serial.framing: expected text or binary, got 'bytes'",
    ]


def test_a_value_the_field_cannot_hold_is_rejected_with_a_reason_and_nothing_written() -> None:
    Path("bridge.yaml").write_text(BASE + """\
rules:
  - signal: set.n
    params: {n: {type: int}, f: {type: float, default: 0.5}}
    send:
      device: claw
      frame: {fields: [0x01, {param: n, type: u8}, {param: f, type: f32le}], checksum: xor8}
    ack: true
""")
    engine = Engine(load_config("bridge.yaml", {}))
    engine.link_up("me", 0.0)
    engine.connection_created(Connection("op", "", "publisher", 0), 0.0)

    def send(data: object) -> list[object]:
        return list(engine.signal(Signal("set.n", json.dumps(data), "op", 1, 0), 1.0))

    [write, _ack] = send({"n": 255})
    assert write == WriteFrame("claw", b"\x01\xff\x00\x00\x00\x3f" + bytes((0x01 ^ 0xFF ^ 0x3F,)))
    for bad, why in (({"n": 256}, "does not fit u8"), ({"n": -1}, "does not fit u8"),
                     ({"n": 1, "f": 1e39}, "does not fit f32")):
        out = send(bad)
        assert not any(isinstance(c, WriteFrame) for c in out), bad
        reply = json.loads(out[-1].data)            # type: ignore[attr-defined]
        assert reply["status"] == "rejected" and why in reply["reason"], reply


def test_binary_telemetry_becomes_signals_and_bad_checksums_are_counted_in_bridge_status() -> None:
    Path("bridge.yaml").write_text(BASE + """\
rules: [{signal: x.y, send: {device: base, line: X}}]
telemetry:
  - device: claw
    signal: claw.imu
    frame:
      byte_order: little
      fields: [0xAA, {length: u8}, {name: yaw, type: s16, scale: 0.01}, {name: ok, type: u8}]
      checksum: {type: sum8, skip: 1}
""")
    engine = Engine(load_config("bridge.yaml", {}))
    engine.link_up("me", 0.0)
    body = bytes.fromhex("aa 03 d2 fb 01")               # length 3, yaw -1070 -> -10.7, ok 1
    good = body + bytes((sum(body[1:]) & 0xFF,))
    bad = good[:-1] + bytes((good[-1] ^ 0x40,))
    # garbage, a frame with a bad checksum, half a good one; then the rest of it
    out = engine.device_bytes("claw", b"\x00\x13" + bad + good[:3], 1.0)
    out += engine.device_bytes("claw", good[3:], 1.1)
    assert [(c.type, json.loads(c.data)) for c in out if isinstance(c, SendSignal)] == [
        ("claw.imu", {"yaw": -10.7, "ok": 1})]
    replies = engine.signal(Signal("bridge.describe", "{}", "op", 2, 0), 2.0)
    [status] = [json.loads(c.data) for c in replies
                if isinstance(c, SendSignal) and c.type == "bridge.status"]
    assert status["counters"]["frames_bad_checksum"] == 1
