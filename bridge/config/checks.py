"""The checks of the bridge config that go beyond one value's type: rules and their params, device
actions and their templates, telemetry streams, safety, and the cross-references between them.

Templates follow `bridge.core.engine.templates` (str.format fields that name declared params, no conversions,
no attribute or index access, no nested specs); here each field's format spec is also tried on a sample
value of the param's type, so ``{x:d}`` on a float param is a config error, not a refused command.
Every action is then compiled by the engine's own code (`bridge.core.engine.actions.CompiledAction`), and a
param-less one (a safe action) filled as the engine fills it at start, so that whatever the engine
would refuse at start is an error here with its line: `sigbridge check` and `sigbridge run` load a
config through this same code and cannot disagree. Control characters: `bridge.core.controls`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

import yaml

from bridge.config import keys
from bridge.config.frames import Use, read_frame
from bridge.config.schema import mapping
from bridge.config.tree import Reader, join, suggest
from bridge.core.controls import control_chars, first_control
from bridge.core.engine.actions import CompiledAction
from bridge.core.engine.templates import FillError, TemplateError
from bridge.core.model import Action, Expect, MqttAction, ParamSpec, SerialAction
from bridge.core.signal import ROLES, SIGNALLING_ROLES, check_signal

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GLOB_CHARS = re.compile(r"[*?\[\]!]")
_SERIAL_ACTION_KEYS = keys.ACTION.names_for("serial")
_BINARY_ACTION_KEYS = keys.ACTION.names_for("binary")
_MQTT_ACTION_KEYS = keys.ACTION.names_for("mqtt")
_FORMATTER = string.Formatter()
KIND_LABEL = {"serial": "serial", "mqtt": "MQTT"}


class Checks:
    """Value checks shared by the sections: signal types, topics, lines, templates, regexes and device
    actions. ``kinds`` and ``newlines`` are filled in while the devices are read, before any action."""

    def __init__(self, reader: Reader) -> None:
        self.r = reader
        self.kinds: dict[str, str] = {}        # device name -> "serial" | "mqtt", even if it had errors
        self.newlines: dict[str, str] = {}
        self.framings: dict[str, str] = {}     # device name -> "binary" (framing: binary serial ones)

    # ------------------------------------------------------------ signal types, topics, lines

    def exact_type(self, node: yaml.Node, path: str) -> str | None:
        return self._signal_type(node, path, glob=False)

    def _signal_type(self, node: yaml.Node, path: str, *, glob: bool) -> str | None:
        text = self.r.string(node, path)
        if text is None:
            return None
        probe = _GLOB_CHARS.sub("x", text) if glob else text
        refusal = check_signal(probe, "")
        if refusal is not None:
            extra = " (globs may use * ? [ ])" if glob else ""
            self.r.error(node, path, f"invalid signal type {text!r}: {refusal.message}{extra}")
            return None
        return text

    def publish_topic(self, node: yaml.Node, path: str) -> str | None:
        topic = self.r.string(node, path)
        if topic is not None and not self._topic_text_ok(node, path, topic):
            return None
        return topic

    def _topic_text_ok(self, node: yaml.Node, path: str, text: str) -> bool:
        from bridge.devices.topics import topic_ok  # aiomqtt: imported only for a config with MQTT

        if not topic_ok(text) and "\x00" not in text:      # a NUL is reported as a control character
            self.r.error(node, path, f"a topic to publish to cannot hold the wildcards + or #: {text!r}")
            return False
        control = first_control(text)
        if control is not None:
            self.r.error(node, path, f"a topic cannot hold control characters (found {control}): {text!r}")
            return False
        return True

    def literal_line(self, node: yaml.Node, path: str, newline: str) -> str | None:
        """A fixed serial line (a heartbeat): no control character (not even a tab), no terminator."""
        line = self.r.string(node, path)
        if line is not None and not self._line_text_ok(node, path, line, newline, allow_tab=False):
            return None
        return line

    def _line_text_ok(self, node: yaml.Node, path: str, text: str, newline: str, *, allow_tab: bool) -> bool:
        if newline and newline in text:
            self.r.error(node, path, f"a line cannot hold the device's newline (the newline {newline!r} "
                                     f"is added when it is written): {text!r}")
            return False
        control = first_control(text, allow_tab=allow_tab)
        if control is not None:
            hint = " (a tab needs allow_tab: true on this action)" if control == "U+0009" else ""
            self.r.error(node, path, f"a line cannot hold control characters (found {control}){hint}: "
                                     f"{text!r}")
            return False
        return True

    # ------------------------------------------------------------ templates

    def template(self, node: yaml.Node, path: str, text: str,
                 params: Mapping[str, ParamSpec | None] | None, *, allow_tab: bool = False) -> bool:
        """Check a str.format template against the params in scope (None: an action outside a rule,
        which can name no param). Returns False when a problem was recorded."""
        try:
            parts = list(_FORMATTER.parse(text))
        except ValueError as exc:
            self.r.error(node, path, f"bad template {text!r}: {exc} (write {{{{ and }}}} for literal braces)")
            return False
        ok = True
        for _literal, name, spec, conversion in parts:
            if name is None:
                continue
            problem = self._field_problem(name, spec or "", conversion, params, allow_tab)
            if problem is not None:
                self.r.error(node, path, f"template {text!r}: {problem}")
                ok = False
        return ok

    def _field_problem(self, name: str, spec: str, conversion: str | None,
                       params: Mapping[str, ParamSpec | None] | None, allow_tab: bool) -> str | None:
        if not name:
            return "{} needs a param name, e.g. {x}"
        if not _PARAM_NAME.fullmatch(name):
            return f"{{{name}}} must be a plain param name (no attribute or index access)"
        if params is None:
            return f"{{{name}}}: actions outside a rule have no params (write {{{{ }}}} for a literal brace)"
        if name not in params:
            declared = ", ".join(params) or "none"
            return f"{{{name}}} is not a declared param{suggest(name, params)} (declared: {declared})"
        if conversion is not None:
            return f"conversions like !{conversion} are not allowed"
        if "{" in spec or "}" in spec:
            return "nested fields in format specs are not allowed"
        param = params[name]
        if param is None:       # declared, but its own errors are already reported
            return None
        try:
            out = format(_sample(param), spec)
        except (ValueError, TypeError) as exc:
            return f"format spec {{{name}:{spec}}} does not fit {param.type} param {name!r}: {exc}"
        if control_chars(allow_tab=allow_tab).search(out):
            return f"format spec {{{name}:{spec}}} would write a control character"
        return None

    # ------------------------------------------------------------ actions

    def actions(self, node: yaml.Node, path: str,
                params: Mapping[str, ParamSpec | None] | None) -> tuple[Action, ...] | None:
        """An action or a list of actions; None when any is bad."""
        items = self.r.one_or_many(node, path)
        if not items and isinstance(node, yaml.SequenceNode):
            self.r.error(node, path, "list at least one action")
        built = [self.action(n, p, params) for n, p in items]
        good = [a for a in built if a is not None]
        return tuple(good) if len(good) == len(built) and good else None

    def action(self, node: yaml.Node, path: str,
               params: Mapping[str, ParamSpec | None] | None) -> Action | None:
        r = self.r
        if isinstance(node, yaml.MappingNode):
            for key, _value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == "retain":
                    r.error(key, join(path, "retain"), "commands are never retained (a retained command "
                                                       "would be replayed to the device by the broker)")
            node = _without(node, "retain")
        m = mapping(r, node, path, keys.ACTION)
        if m is None:
            return None
        device = r.string(m["device"], join(path, "device")) if "device" in m else None
        if device is not None and device not in self.kinds:
            r.error(m["device"], join(path, "device"),
                    f"unknown device {device!r} (known: {', '.join(self.kinds) or 'none'})")
        # For an unknown device, guess the kind from the keys so that the rest is still checked.
        kind = self.kinds.get(device or "") or ("mqtt" if "topic" in m or "payload" in m else "serial")
        if self.framings.get(device or "") == "binary":
            framed = self._frame_action(m, node, path, device or "", params)
            return None if framed is None else self._compiled(framed, node, path, params)
        own = _SERIAL_ACTION_KEYS if kind == "serial" else _MQTT_ACTION_KEYS
        this, other = ("a serial", "MQTT") if kind == "serial" else ("an MQTT", "serial")
        for key in m:
            if key == "frame":
                r.error(m[key], join(path, key), f"'frame' is for serial devices with framing: binary; "
                                                 f"{device!r} is {this} device")
            elif key not in own:
                r.error(m[key], join(path, key),
                        f"{key!r} is for {other} devices; {device!r} is {this} device")
        if own[1] not in m:
            r.error(node, path, f"missing required key {own[1]!r} (for the {KIND_LABEL[kind]} device "
                                f"{device!r})")
        built: Action | None
        if kind == "serial":
            built = self._serial_action(m, path, device, params)
        else:
            built = self._mqtt_action(m, path, device, params)
        return None if built is None else self._compiled(built, node, path, params)

    def _compiled(self, action: Action, node: yaml.Node, path: str,
                  params: Mapping[str, ParamSpec | None] | None) -> Action | None:
        """Compile ``action`` as the engine does at start and, for a param-less (safe) action, fill it
        as the engine does once at start: anything the engine would refuse is an error here."""
        try:
            specs = tuple(p for p in (params or {}).values() if p is not None)
            compiled = CompiledAction(action, frozenset(params or ()), self.newlines, specs)
            if params is None:
                compiled.fill({})
        except (TemplateError, FillError, ValueError) as exc:
            self.r.error(node, path, f"the engine cannot use this action: {exc}")
            return None
        return action

    def _serial_action(self, m: dict[str, yaml.Node], path: str, device: str | None,
                       params: Mapping[str, ParamSpec | None] | None) -> SerialAction | None:
        r = self.r
        newline = self.newlines.get(device or "", "\n")
        allow_tab = r.boolean(m["allow_tab"], join(path, "allow_tab")) if "allow_tab" in m else False
        line = r.string(m["line"], join(path, "line")) if "line" in m else None
        if line is not None and not (
                self._line_text_ok(m["line"], join(path, "line"), line, newline, allow_tab=bool(allow_tab))
                and self.template(m["line"], join(path, "line"), line, params, allow_tab=bool(allow_tab))):
            line = None
        expect = self._expect(m["expect"], join(path, "expect")) if "expect" in m else None
        if device is None or device not in self.kinds or line is None or ("expect" in m and expect is None) \
                or allow_tab is None:
            return None
        return SerialAction(device=device, line=line, expect=expect, allow_tab=allow_tab)

    def _frame_action(self, m: dict[str, yaml.Node], node: yaml.Node, path: str, device: str,
                      params: Mapping[str, ParamSpec | None] | None) -> SerialAction | None:
        """An action for a ``framing: binary`` device: a ``frame:`` (see bridge.config.frames)."""
        for key in m.keys() - set(_BINARY_ACTION_KEYS):
            self.r.error(m[key], join(path, key), f"{key!r} does not apply to {device!r}, a device with "
                                                  f"framing: binary (it takes frame:)")
        if "frame" not in m:
            self.r.error(node, path, f"missing required key 'frame' (for the binary device {device!r})")
            return None
        use: Use = "constant" if params is None else "action"
        frame = read_frame(self.r, m["frame"], join(path, "frame"), use, params)
        return None if frame is None or len(m) > 2 else SerialAction(device=device, line="", frame=frame)

    def _expect(self, node: yaml.Node, path: str) -> Expect | None:
        r = self.r
        m = mapping(r, node, path, keys.EXPECT)
        if m is None:
            return None
        kw: dict[str, Any] = {}
        if "pattern" in m:
            kw["pattern"] = self.regex(m["pattern"], join(path, "pattern"))
        if "timeout_ms" in m:
            kw["timeout_ms"] = r.integer(m["timeout_ms"], join(path, "timeout_ms"), positive=True)
        if "reply" in m:
            kw["reply"] = self.exact_type(m["reply"], join(path, "reply"))
        if None in kw.values() or "pattern" not in kw:
            return None
        return Expect(**kw)

    def _mqtt_action(self, m: dict[str, yaml.Node], path: str, device: str | None,
                     params: Mapping[str, ParamSpec | None] | None) -> MqttAction | None:
        r = self.r
        ok = True
        topic = r.string(m["topic"], join(path, "topic")) if "topic" in m else None
        if topic is not None and not (self._topic_text_ok(m["topic"], join(path, "topic"), topic)
                                      and self.template(m["topic"], join(path, "topic"), topic, params)):
            topic = None
        payload: str | dict[str, object] = ""
        if "payload" in m:
            pnode, ppath = m["payload"], join(path, "payload")
            if isinstance(pnode, yaml.MappingNode):
                before = len(r.issues)
                value = r.freeform(pnode, ppath, lambda n, p, t: self.template(n, p, t, params))
                ok = len(r.issues) == before and isinstance(value, dict)
                payload = value if isinstance(value, dict) else {}
            else:
                text = r.string(pnode, ppath, allow_empty=True)
                ok = text is not None and self.template(pnode, ppath, text, params)
                payload = text or ""
        qos = r.integer(m["qos"], join(path, "qos"), minimum=0, maximum=2) if "qos" in m else 0
        if device is None or device not in self.kinds or topic is None or not ok or qos is None:
            return None
        return MqttAction(device=device, topic=topic, payload=payload, qos=qos)

    # ------------------------------------------------------------ regexes

    def regex(self, node: yaml.Node, path: str, *, named_groups: bool = False) -> str | None:
        text = self.r.string(node, path)
        if text is None:
            return None
        try:
            compiled = re.compile(text)
        except re.error as exc:
            self.r.error(node, path, f"invalid regular expression '{text}': {exc}")
            return None
        if named_groups and not compiled.groupindex:
            self.r.error(node, path, f"'{text}' has no named group; name each field, e.g. (?P<battery>\\d+)")
            return None
        return text


def _sample(spec: ParamSpec) -> object:
    """A value of the param's type to try format specs on."""
    if spec.default is not None:
        return spec.default
    if spec.type == "string":
        return spec.enum[0] if spec.enum else "a"
    return {"int": 1, "float": 1.5, "bool": True}[spec.type]


def _without(node: yaml.Node, key: str) -> yaml.Node:
    """The mapping node minus one key (already reported), so it is not reported again as unknown."""
    if not isinstance(node, yaml.MappingNode):
        return node
    kept = [(k, v) for k, v in node.value if not (isinstance(k, yaml.ScalarNode) and k.value == key)]
    return yaml.MappingNode(node.tag, kept, node.start_mark, node.end_mark)


def roles(reader: Reader, node: yaml.Node, path: str) -> frozenset[str] | None:
    """A non-empty list of roles that may send signals."""
    items = reader.sequence(node, path)
    if items is None:
        return None
    if not items:
        reader.error(node, path, "list at least one role")
        return None
    found: set[str] = set()
    bad = False
    for i, item in enumerate(items):
        role = reader.string(item, join(path, i))
        if role is None:
            bad = True
        elif role not in ROLES:
            reader.error(item, join(path, i), f"unknown role {role!r}{suggest(role, ROLES)} "
                                              f"(roles: {', '.join(sorted(ROLES))})")
            bad = True
        elif role not in SIGNALLING_ROLES:
            reader.error(item, join(path, i), f"role {role!r} cannot send signals "
                                              f"(signalling roles: {', '.join(sorted(SIGNALLING_ROLES))})")
            bad = True
        else:
            found.add(role)
    return None if bad else frozenset(found)
