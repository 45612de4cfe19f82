"""``telemetry[i].fields``: how consoles show each telemetry field (unit, plot range, warnings).

    telemetry:
      - device: base
        match: '^T (?P<battery>\\d+) (?P<speed>-?[\\d.]+)$'
        signal: robot.telemetry
        fields:
          battery: {unit: "%", min: 0, max: 100, warn_below: 20}
          speed: {unit: m/s, min: -1, max: 1}

Optional; nothing the bridge sends depends on it (it rides in ``bridge.capabilities``). A serial
stream's field names must be named groups of its ``match``; an MQTT stream's are the keys of its JSON
payloads (not checkable here). ``min <= max``; a unit is at most 16 characters.
"""

from __future__ import annotations

import re

import yaml

from bridge.config import keys
from bridge.config.tree import Reader, join, suggest
from bridge.core.model import TelemetryField

_KEYS = keys.FIELD.names


def telemetry_fields(r: Reader, node: yaml.Node, path: str, match: str | None) -> dict[str, TelemetryField]:
    """The fields of one stream (errors recorded in ``r``); ``match`` the serial regex, None for MQTT."""
    groups = set(re.compile(match).groupindex) if match is not None else None
    out: dict[str, TelemetryField] = {}
    for name, value in (r.mapping(node, path, None) or {}).items():
        where = join(path, name)
        if groups is not None and name not in groups:
            r.error(value, where, f"{name!r} is not a named group of match{suggest(name, groups)}")
            continue
        m = r.mapping(value, where, _KEYS)
        if m is None:
            continue
        numbers = {k: r.number(m[k], join(where, k)) for k in _KEYS[1:] if k in m}
        unit = r.string(m["unit"], join(where, "unit")) if "unit" in m else None
        if unit is not None and len(unit) > 16:
            r.error(m["unit"], join(where, "unit"), f"a unit is at most 16 characters, got {len(unit)}")
        lo, hi = numbers.get("min"), numbers.get("max")
        if lo is not None and hi is not None and lo > hi:
            r.error(m["min"], join(where, "min"), f"min {lo} is greater than max {hi}")
        out[name] = TelemetryField(unit=unit, **{k: float(v) for k, v in numbers.items() if v is not None})
    return out
