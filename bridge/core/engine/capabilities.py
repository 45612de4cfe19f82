"""The ``bridge.capabilities`` signal data: what an operator may send to this bridge and what comes back.

Sent by the engine on connect (broadcast) and, targeted, in answer to ``bridge.describe``. The console
renders its form from it. Format (version 1)::

    {"version": 1,
     "rules": [{"signal": "robot.move", "ack": false,
                "params": {"x": {"type": "float", "min": -1, "max": 1, "default": null, "required": true},
                           "mode": {"type": "string", "enum": ["eco", "fast"], ...}}}],
     "estop": {"signal": "robot.estop", "reset": "robot.estop_reset"} | null,
     "telemetry": ["robot.telemetry"],
     "telemetry_info": {"robot.telemetry": {"max_rate_hz": 10,
                                            "fields": {"battery": {"unit": "%", "min": 0, "max": 100,
                                                                   "warn_below": 20}}}},
     "control": {"lease": false, "acquire": "control.acquire", "release": "control.release",
                 "roles": ["moderator", "publisher"], "idle_timeout_ms": 60000}}

``min``/``max`` appear for numeric params, ``enum``/``pattern`` for strings when set; ``default`` and
``required`` always. ``control.roles`` are the roles that may acquire the lease (``control.roles`` of
the config, else the roles the rules let drive); ``idle_timeout_ms`` when an idle holder loses it.
``telemetry_info`` per telemetry signal: its ``max_rate_hz`` (null: unthrottled) and the display hints
of ``telemetry[i].fields`` (only the keys set), for consoles (units, scales, warnings, staleness).
``estop.reset_roles`` are the roles whose reset the bridge accepts.
"""

from __future__ import annotations

from typing import Any

from bridge.core.engine.lease import lease_roles
from bridge.core.model import BridgeConfig, ParamSpec, TelemetryField


def capabilities(config: BridgeConfig) -> dict[str, Any]:
    """The ``bridge.capabilities`` data: what an operator may send and what comes back."""
    estop = config.safety.estop
    return {
        "version": 1,
        "rules": [{"signal": r.signal, "params": {p.name: _param_caps(p) for p in r.params}, "ack": r.ack}
                  for r in config.rules],
        "estop": ({"signal": estop.signal, "reset": estop.reset, "reset_roles": sorted(estop.reset_roles)}
                  if estop is not None else None),
        "telemetry": list(dict.fromkeys(t.signal for t in config.telemetry)),
        "telemetry_info": _telemetry_info(config),
        "control": {"lease": config.control.lease, "acquire": config.control.acquire,
                    "release": config.control.release, "roles": sorted(lease_roles(config)),
                    "idle_timeout_ms": config.control.idle_timeout_ms},
    }


def _param_caps(p: ParamSpec) -> dict[str, Any]:
    caps: dict[str, Any] = {"type": p.type}
    if p.type in ("int", "float"):
        caps["min"], caps["max"] = p.min, p.max
    if p.enum is not None:
        caps["enum"] = list(p.enum)
    if p.pattern is not None:
        caps["pattern"] = p.pattern
    caps["default"] = p.default
    caps["required"] = p.required
    return caps


def _telemetry_info(config: BridgeConfig) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for t in config.telemetry:
        entry = info.setdefault(t.signal, {"max_rate_hz": t.max_rate_hz, "fields": {}})
        for name, f in t.fields.items():
            entry["fields"][name] = {k: getattr(f, k) for k in TelemetryField.__slots__
                                     if getattr(f, k) is not None}
    return info
