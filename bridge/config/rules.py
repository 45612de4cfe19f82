"""The ``rules:``, ``telemetry:``, ``safety:`` and ``control:`` sections of the bridge config, and the
checks that span sections (a rule that can never match, e-stop and lease signal types that collide, a
lease role no rule lets drive).

Built on `bridge.config.checks.Checks` (actions, templates, signal types); every problem is recorded in
the shared `Reader` with its line and key path.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import yaml

from bridge.config import keys
from bridge.config.checks import KIND_LABEL, Checks, roles
from bridge.config.fields import telemetry_fields
from bridge.config.frames import read_frame
from bridge.config.schema import mapping
from bridge.config.tree import Reader, join, suggest
from bridge.core.engine.lease import driving_roles
from bridge.core.model import (
    Control,
    Estop,
    FrameTelemetry,
    MqttTelemetry,
    ParamSpec,
    RateLimit,
    Rule,
    Safety,
    SerialTelemetry,
    TelemetryStream,
    Watchdog,
)

_PARAM_TYPES = ("int", "float", "bool", "string")
_SAFE_ACTIONS = ("on_disconnect", "on_controller_lost", "on_shutdown")
#: The keys of a telemetry stream whatever its device's kind.
_COMMON = keys.TELEMETRY.names_for("")


class Sections(Checks):
    """Adds the rule, telemetry and safety sections to the value checks."""

    def __init__(self, reader: Reader) -> None:
        super().__init__(reader)
        self._signal_nodes: list[tuple[Rule, yaml.Node]] = []
        self._estop_nodes: list[tuple[str, str, yaml.Node]] = []

    # ------------------------------------------------------------ rules

    def rules(self, node: yaml.Node) -> tuple[Rule, ...]:
        items = self.r.sequence(node, "rules")
        built = [self._rule(i, n, join("rules", i)) for i, n in enumerate(items or [])]
        return tuple(rule for rule in built if rule is not None)

    def _rule(self, index: int, node: yaml.Node, path: str) -> Rule | None:
        r = self.r
        m = mapping(r, node, path, keys.RULE)
        if m is None:
            return None
        before = len(r.issues)
        kw: dict[str, Any] = {"index": index}
        if "signal" in m:
            kw["signal"] = self._signal_type(m["signal"], join(path, "signal"), glob=True)
        specs = self._params(m["params"], join(path, "params")) if "params" in m else {}
        kw["params"] = tuple(spec for spec in specs.values() if spec is not None)
        if "send" in m:
            kw["send"] = self.actions(m["send"], join(path, "send"), specs)
        if "max_age_ms" in m:
            kw["max_age_ms"] = r.integer(m["max_age_ms"], join(path, "max_age_ms"), positive=True)
        if "watchdog" in m:
            kw["watchdog"] = self._watchdog(m["watchdog"], join(path, "watchdog"))
        if "ack" in m:
            kw["ack"] = r.boolean(m["ack"], join(path, "ack"))
        if "from_roles" in m:
            kw["from_roles"] = roles(r, m["from_roles"], join(path, "from_roles"))
        if "from_data" in m:
            kw["from_data"] = self.regex(m["from_data"], join(path, "from_data"))
        if "allow_rest" in m:
            kw["allow_rest"] = r.boolean(m["allow_rest"], join(path, "allow_rest"))
        if "rate_limit" in m:
            kw["rate_limit"] = self._rate_limit(m["rate_limit"], join(path, "rate_limit"))
        if len(r.issues) > before or None in kw.values():
            return None
        rule = Rule(**kw)
        self._signal_nodes.append((rule, m["signal"]))
        return rule

    def _params(self, node: yaml.Node, path: str) -> dict[str, ParamSpec | None]:
        """Declared params by name; None for one with errors (reported), so that templates naming it
        are not reported again as naming an undeclared param."""
        m = self.r.mapping(node, path, None)
        specs: dict[str, ParamSpec | None] = {}
        for name, value in (m or {}).items():
            if not name.isascii() or not name.isidentifier():
                self.r.error(value, join(path, name), "a param name is a plain identifier (A-Z a-z 0-9 _, "
                                                      "not starting with a digit)")
                continue
            specs[name] = self._param(name, value, join(path, name))
        return specs

    def _param(self, name: str, node: yaml.Node, path: str) -> ParamSpec | None:
        r = self.r
        m = mapping(r, node, path, keys.PARAM)
        if m is None or "type" not in m:
            return None
        before = len(r.issues)
        type_ = r.string(m["type"], join(path, "type"))
        if type_ is None:
            return None
        if type_ not in _PARAM_TYPES:
            r.error(m["type"], join(path, "type"), f"unknown param type {type_!r}"
                    f"{suggest(type_, _PARAM_TYPES)} (types: {', '.join(_PARAM_TYPES)})")
            return None
        numeric = type_ in ("int", "float")
        allowed = {"min", "max", "on_range", "slew_per_s"} if numeric else {"enum", "pattern"}
        for key in m.keys() - {"type", "default"} - allowed:
            r.error(m[key], join(path, key), f"{key!r} does not apply to a {type_} param")
        kw: dict[str, Any] = {"name": name, "type": type_}
        for key in ("min", "max"):
            if key in m and key in allowed:
                value = r.number(m[key], join(path, key))
                if type_ == "int" and isinstance(value, float):
                    r.error(m[key], join(path, key), f"an int param needs an integer {key}, got {value}")
                kw[key] = value
        if kw.get("min") is not None and kw.get("max") is not None and kw["min"] > kw["max"]:
            r.error(m["min"], join(path, "min"), f"min {kw['min']} is greater than max {kw['max']}")
        if "on_range" in m and numeric:
            policy = r.string(m["on_range"], join(path, "on_range"))
            if policy is not None and policy not in ("reject", "clamp"):
                r.error(m["on_range"], join(path, "on_range"), f"expected reject or clamp, got {policy!r}")
            elif "min" not in m and "max" not in m:
                r.error(m["on_range"], join(path, "on_range"), "on_range needs a min or a max")
            kw["on_range"] = policy
        if "slew_per_s" in m and numeric:
            kw["slew_per_s"] = r.number(m["slew_per_s"], join(path, "slew_per_s"), positive=True)
        if type_ == "string":
            self._string_param(m, path, kw)
        if "default" in m and len(r.issues) == before:
            kw["default"] = self._default(m["default"], join(path, "default"), kw)
            kw["required"] = False
        if len(r.issues) > before:
            return None
        return ParamSpec(**kw)

    def _string_param(self, m: dict[str, yaml.Node], path: str, kw: dict[str, Any]) -> None:
        r = self.r
        if ("enum" in m) == ("pattern" in m):
            r.error(m.get("pattern", m["type"]), path,
                    "a string param needs exactly one of enum (the allowed values) or pattern (a regex)")
        if "pattern" in m:
            kw["pattern"] = self.regex(m["pattern"], join(path, "pattern"))
        if "enum" in m:
            items = r.sequence(m["enum"], join(path, "enum")) or []
            values = [r.string(n, join(join(path, "enum"), i)) for i, n in enumerate(items)]
            if not items and isinstance(m["enum"], yaml.SequenceNode):
                r.error(m["enum"], join(path, "enum"), "list at least one value")
            kw["enum"] = tuple(v for v in values if v is not None)

    def _default(self, node: yaml.Node, path: str, kw: dict[str, Any]) -> object:
        r, type_ = self.r, kw["type"]
        value: object
        if type_ == "bool":
            value = r.boolean(node, path)
        elif type_ == "string":
            value = r.string(node, path, allow_empty=True)
            if isinstance(value, str):
                if kw.get("enum") and value not in kw["enum"]:
                    r.error(node, path, f"default {value!r} is not in enum {list(kw['enum'])}")
                elif kw.get("pattern") and re.fullmatch(kw["pattern"], value) is None:
                    r.error(node, path, f"default {value!r} does not match pattern {kw['pattern']!r}")
        else:
            value = r.number(node, path)
            if type_ == "int" and isinstance(value, float):
                r.error(node, path, f"an int param needs an integer default, got {value}")
            elif value is not None:
                value = float(value) if type_ == "float" else value
                low, high = kw.get("min"), kw.get("max")
                if (low is not None and value < low) or (high is not None and value > high):
                    r.error(node, path, f"default {value} is outside [{low}, {high}]")
        return value

    def _watchdog(self, node: yaml.Node, path: str) -> Watchdog | None:
        m = mapping(self.r, node, path, keys.WATCHDOG)
        if m is None or "timeout_ms" not in m or "send" not in m:
            return None
        timeout = self.r.integer(m["timeout_ms"], join(path, "timeout_ms"), positive=True)
        send = self.actions(m["send"], join(path, "send"), None)
        return None if timeout is None or send is None else Watchdog(timeout_ms=timeout, send=send)

    def _rate_limit(self, node: yaml.Node, path: str) -> RateLimit | None:
        m = mapping(self.r, node, path, keys.RATE_LIMIT)
        if m is None or "hz" not in m:
            return None
        hz = self.r.number(m["hz"], join(path, "hz"), positive=True)
        burst = self.r.integer(m["burst"], join(path, "burst"), minimum=1) if "burst" in m else 1
        return None if hz is None or burst is None else RateLimit(hz=float(hz), burst=burst)

    # ------------------------------------------------------------ telemetry

    def telemetry(self, node: yaml.Node) -> tuple[TelemetryStream, ...]:
        items = self.r.sequence(node, "telemetry")
        built = [self._stream(n, join("telemetry", i)) for i, n in enumerate(items or [])]
        return tuple(s for s in built if s is not None)

    def _stream(self, node: yaml.Node, path: str) -> TelemetryStream | None:
        r = self.r
        m = mapping(r, node, path, keys.TELEMETRY)
        if m is None:
            return None
        before = len(r.issues)
        device = r.string(m["device"], join(path, "device")) if "device" in m else None
        if device is not None and device not in self.kinds:
            r.error(m["device"], join(path, "device"),
                    f"unknown device {device!r} (known: {', '.join(self.kinds) or 'none'})")
        kind = self.kinds.get(device or "") or ("mqtt" if "topic" in m else "serial")
        binary = self.framings.get(device or "") == "binary"
        label = "binary serial" if binary else KIND_LABEL[kind]
        own = tuple(k for k in keys.TELEMETRY.names_for("binary" if binary else kind) if k not in _COMMON)
        for key in m.keys() - set(own) - set(_COMMON):
            r.error(m[key], join(path, key), f"{key!r} does not apply to the {label} device {device!r}")
        if own[0] not in m:
            r.error(node, path, f"missing required key {own[0]!r} (for the {label} device {device!r})")
        kw: dict[str, Any] = {"device": device}
        if "signal" in m:
            kw["signal"] = self.exact_type(m["signal"], join(path, "signal"))
        if "max_rate_hz" in m:
            kw["max_rate_hz"] = r.number(m["max_rate_hz"], join(path, "max_rate_hz"), positive=True)
        if kind == "serial" and "match" in m:
            kw["match"] = self.regex(m["match"], join(path, "match"), named_groups=True)
            if "types" in m:
                kw["types"] = self._types(m["types"], join(path, "types"), kw["match"])
        if kind == "mqtt" and "topic" in m:
            kw["topic"] = self._topic_filter(m["topic"], join(path, "topic"))
        if binary and "frame" in m:
            kw["frame"] = read_frame(r, m["frame"], join(path, "frame"), "telemetry")
        if "fields" in m:
            kw["fields"] = telemetry_fields(r, m["fields"], join(path, "fields"), kw.get("match"))
        if len(r.issues) > before or None in kw.values():
            return None
        if binary:
            return FrameTelemetry(**kw)
        return SerialTelemetry(**kw) if kind == "serial" else MqttTelemetry(**kw)

    def _types(self, node: yaml.Node, path: str, match: str | None) -> dict[str, str]:
        groups = set(re.compile(match).groupindex) if match is not None else set()
        out: dict[str, str] = {}
        for group, value in (self.r.mapping(node, path, None) or {}).items():
            type_ = self.r.string(value, join(path, group))
            if match is not None and group not in groups:
                self.r.error(value, join(path, group), f"{group!r} is not a named group of match"
                                                       f"{suggest(group, groups)}")
            elif type_ is not None and type_ not in _PARAM_TYPES:
                self.r.error(value, join(path, group), f"expected one of {', '.join(_PARAM_TYPES)}, "
                                                       f"got {type_!r}")
            elif type_ is not None:
                out[group] = type_
        return out

    def _topic_filter(self, node: yaml.Node, path: str) -> str | None:
        text = self.r.string(node, path)
        if text is None:
            return None
        from bridge.devices.topics import filter_ok  # aiomqtt: imported only for a config with MQTT

        if not filter_ok(text):
            self.r.error(node, path, f"bad topic filter {text!r}: + must be a whole level and # a whole "
                                     f"last level (e.g. arm/+/state, arm/#)")
            return None
        return text

    # ------------------------------------------------------------ safety

    def safety(self, node: yaml.Node, control: Control) -> Safety | None:
        r = self.r
        m = mapping(r, node, "safety", keys.SAFETY)
        if m is None:
            return None
        kw: dict[str, Any] = {}
        for key in _SAFE_ACTIONS:
            if key in m:
                kw[key] = self.actions(m[key], join("safety", key), None)
        if "on_controller_lost" in m and not control.lease:
            r.error(m["on_controller_lost"], "safety.on_controller_lost",
                    "needs control: {lease: true} (the controller is the lease holder)")
        if "estop" in m:
            kw["estop"] = self._estop(m["estop"], "safety.estop")
        if None in kw.values():
            return None
        return Safety(**kw)

    def _estop(self, node: yaml.Node, path: str) -> Estop | None:
        m = mapping(self.r, node, path, keys.ESTOP)
        if m is None:
            return None
        kw: dict[str, Any] = {}
        for key in ("signal", "reset"):
            if key in m:
                kw[key] = self.exact_type(m[key], join(path, key))
                if kw[key] is not None:
                    self._estop_nodes.append((kw[key], join(path, key), m[key]))
        if "send" in m:
            kw["send"] = self.actions(m["send"], join(path, "send"), None)
        if "reset_roles" in m:
            kw["reset_roles"] = roles(self.r, m["reset_roles"], join(path, "reset_roles"))
        if None in kw.values() or "signal" not in kw or "reset" not in kw:
            return None
        return Estop(**kw)

    # ------------------------------------------------------------ control

    def control(self, node: yaml.Node, rules: tuple[Rule, ...]) -> Control:
        """``control:``; ``rules`` (already read) tell which roles may drive: a lease role that no rule
        lets drive could only hold the lease to block the others, so it is an error."""
        r = self.r
        m = mapping(r, node, "control", keys.CONTROL)
        if m is None:
            return Control()
        kw: dict[str, Any] = {}
        if "lease" in m:
            kw["lease"] = r.boolean(m["lease"], "control.lease")
        for key in ("acquire", "release"):
            if key in m:
                kw[key] = self.exact_type(m[key], join("control", key))
        if "roles" in m:
            kw["roles"] = roles(r, m["roles"], "control.roles")
        if "idle_timeout_ms" in m:
            kw["idle_timeout_ms"] = r.integer(m["idle_timeout_ms"], "control.idle_timeout_ms", positive=True)
        for key in ("roles", "idle_timeout_ms"):
            if key in m and not kw.get("lease"):
                r.error(m[key], join("control", key), f"{key} is only used with lease: true")
        control = Control(**{k: v for k, v in kw.items() if v is not None})
        if control.roles is not None and rules:
            driving = driving_roles(rules)
            for role in sorted(control.roles - driving):
                r.error(m["roles"], "control.roles", f"no rule lets {role!r} drive (rules allow: "
                        f"{', '.join(sorted(driving)) or 'none'}); holding the lease it could only block "
                        f"the others")
        return control

    # ------------------------------------------------------------ across sections

    def cross_check(self, control: Control, control_node: yaml.Node | None) -> None:
        """Rules that can never match; e-stop / lease signal types that collide with each other or with
        a rule (they are handled before any rule, so such a rule would be dead or, worse, confusing)."""
        earlier: list[Rule] = []
        for rule, node in self._signal_nodes:
            for prev in earlier:
                if prev.signal == rule.signal or (prev.is_glob and fnmatch.fnmatchcase(rule.signal,
                                                                                       prev.signal)):
                    self.r.error(node, join(join("rules", rule.index), "signal"),
                                 f"{rule.signal!r} is already matched by rules[{prev.index}] "
                                 f"({prev.signal!r}); first match wins, so this rule can never match")
                    break
            earlier.append(rule)
        special = list(self._estop_nodes)
        if control.lease and isinstance(control_node, yaml.MappingNode):
            values = {k.value: v for k, v in control_node.value if isinstance(k, yaml.ScalarNode)}
            for key in ("acquire", "release"):
                special.append((getattr(control, key), f"control.{key}", values.get(key, control_node)))
        seen: dict[str, str] = {}
        for type_, path, node in special:
            if type_ in seen:
                self.r.error(node, path, f"{type_!r} is also {seen[type_]}; these signal types must differ")
            seen.setdefault(type_, path)
            for rule, _ in self._signal_nodes:
                if rule.signal == type_:
                    self.r.error(node, path, f"{type_!r} is also the signal of rules[{rule.index}]")
