"""telemetry[i].fields: display hints for consoles, checked with file:line like every key, and carried
in bridge.capabilities (telemetry_info) with each stream's max_rate_hz."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config
from bridge.core.engine.capabilities import capabilities

HEAD = """\
session: {url: "ws://127.0.0.1:1", session_id: s, token: t}
devices: {base: {serial: {port: /dev/null}}, arm: {mqtt: {host: 127.0.0.1}}}
rules: [{signal: go, send: {device: base, line: GO}}]
telemetry:
  - device: base
    match: '^T (?P<battery>\\d+) (?P<speed>-?[\\d.]+)$'
    signal: robot.telemetry
    max_rate_hz: 10
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return load_config(str(path))


def test_fields_reach_the_capabilities(tmp_path: Path) -> None:
    config = load(tmp_path, HEAD + """\
    fields:
      battery: {unit: "%", min: 0, max: 100, warn_below: 20}
  - {device: arm, topic: "arm/state/#", signal: arm.state, fields: {angle: {unit: deg, warn_above: 170}}}
""")
    info = capabilities(config)["telemetry_info"]  # type: ignore[arg-type]
    assert info == {
        "robot.telemetry": {"max_rate_hz": 10, "fields": {"battery": {"unit": "%", "min": 0.0, "max": 100.0,
                                                                      "warn_below": 20.0}}},
        "arm.state": {"max_rate_hz": None, "fields": {"angle": {"unit": "deg", "warn_above": 170.0}}},
    }


@pytest.mark.parametrize(("fields", "words"), [
    ("batery: {unit: V}", "10: telemetry[0].fields.batery: 'batery' is not a named group of match"),
    ("speed: {min: 2, max: 1}", "10: telemetry[0].fields.speed.min: min 2 is greater than max 1"),
    ("speed: {colour: red}", "10: telemetry[0].fields.speed.colour: unknown key"),
    ("speed: {unit: abcdefghijklmnopq}", "10: telemetry[0].fields.speed.unit: a unit is at most 16"),
    ("speed: {warn_below: low}", "10: telemetry[0].fields.speed.warn_below: expected a number"),
])
def test_bad_fields_are_errors_with_file_and_line(tmp_path: Path, fields: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, HEAD + f"    fields:\n      {fields}\n")
    assert any(words in str(issue) for issue in e.value.errors), [str(i) for i in e.value.errors]
