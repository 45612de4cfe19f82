"""The README's worked example is true: its config and signals give exactly the bytes it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.core.engine import Engine, Publish, WriteLine
from bridge.core.events import Signal
from bridge.core.signal import Connection

README = (Path(__file__).parent.parent / "README.md").read_text()
OPERATOR = Connection("op-1", "alice", "publisher", 0)
NOW_MS = 1_800_000_000_000


def _block(marker: str) -> str:
    m = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", README, re.S)
    assert m, f"README lost its {marker} block"
    return m.group(1)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    path = tmp_path / "bridge.yaml"
    path.write_text(_block("readme-example-config"))
    e = Engine(load_config(path))
    e.link_up("bridge-1", 0.0)
    return e


def _send(engine: Engine, data: object, *, type_: str = "robot.move", age_ms: int = 5, seq: int = 1) -> list:
    sig = Signal(type_, json.dumps(data), OPERATOR.id, seq, NOW_MS - age_ms, age_ms)
    engine.connection_created(OPERATOR, 1.0)
    return [c for c in engine.signal(sig, 1.0) if isinstance(c, WriteLine | Publish)]


def test_the_serial_bytes_shown_are_the_bytes_written(engine: Engine) -> None:
    hex_part = _block("readme-example-serial").split('"')[0].split()
    shown = bytes(int(h, 16) for h in hex_part)
    [write] = _send(engine, {"x": 0.5, "y": -0.25})
    newline = engine.config.devices[write.device].serial.newline  # type: ignore[union-attr]
    assert write.device == "base"
    assert (write.line + newline).encode() == shown


def test_the_mqtt_payload_keeps_the_int(engine: Engine) -> None:
    [pub] = _send(engine, {"force": 42}, type_="arm.grip")
    assert (pub.topic, pub.payload, pub.qos) == ("arm/grip/set", b'{"force":42}', 1)


@pytest.mark.parametrize("data", [{"x": 2, "y": 0}, {"x": "1\nFIRE", "y": 0}, {"x": 0.5},
                                  {"x": 0.5, "y": 0, "z": 1}])
def test_the_refused_commands_write_nothing(engine: Engine, data: object) -> None:
    assert _send(engine, data) == []


def test_a_two_second_old_command_writes_nothing(engine: Engine) -> None:
    assert _send(engine, {"x": 0.5, "y": 0}, age_ms=2000) == []
    assert _send(engine, {"x": 0.5, "y": 0}, age_ms=5, seq=2) != []
