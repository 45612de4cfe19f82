"""Action templates, compiled once at load and filled per signal without parsing.

A template is a str.format-style string: ``"M {x:.2f} {y:.2f}"``. Fields name declared params only,
with an optional format spec; conversions (``!r``), attribute/index access (``{x.real}``, ``{x[0]}``)
and nested fields in specs are refused at compile time (``TemplateError``) so that nothing in a
template can reach beyond a param's value.

Contract:
- ``Template(text, params)`` compiles (raises TemplateError); ``.fill(values)`` returns the text or
  raises ``FillError`` (a missing optional param, a spec that does not fit the value).
- ``LineTemplate`` adds the serial rule: the filled line must contain neither the device's newline
  nor any control character (``bridge.core.controls``; a tab only with ``allow_tab``), else
  ``FillError``; the terminator is added by the serial link.
- ``PayloadTemplate`` is a string template (UTF-8 bytes) or a JSON mapping in which a value that is
  exactly ``"{param}"`` keeps the param's JSON type and any other string is a template.
- ``TopicTemplate`` refuses an empty topic, wildcards (``+``, ``#``) and control characters.
"""

from __future__ import annotations

import json
import string
from collections.abc import Collection, Mapping
from typing import Any

from bridge.core.controls import CONTROL_CHARS, control_chars
from bridge.core.model import Scalar


class TemplateError(ValueError):
    """A template that cannot be compiled (a config error)."""


class FillError(ValueError):
    """A template that cannot be filled with these values (the command is refused)."""


_FORMATTER = string.Formatter()


class Template:
    """A compiled str.format template: a tuple of (literal, field name or None, format spec)."""

    __slots__ = ("_parts", "fields", "text")

    def __init__(self, text: str, params: Collection[str]) -> None:
        self.text = text
        parts: list[tuple[str, str | None, str]] = []
        try:
            parsed = list(_FORMATTER.parse(text))
        except ValueError as e:
            raise TemplateError(f"bad template {text!r}: {e}") from None
        for literal, name, spec, conversion in parsed:
            if name is None:
                parts.append((literal, None, ""))
                continue
            if conversion is not None:
                raise TemplateError(f"template {text!r}: conversions like !{conversion} are not allowed")
            if not name.isidentifier():
                raise TemplateError(f"template {text!r}: field {{{name}}} must be a plain param name")
            if name not in params:
                raise TemplateError(f"template {text!r}: {{{name}}} is not a declared param")
            if spec and ("{" in spec or "}" in spec):
                raise TemplateError(f"template {text!r}: nested fields in format specs are not allowed")
            parts.append((literal, name, spec or ""))
        self._parts = tuple(parts)
        self.fields = frozenset(n for _, n, _ in parts if n is not None)

    def fill(self, values: Mapping[str, Scalar]) -> str:
        out: list[str] = []
        for literal, name, spec in self._parts:
            out.append(literal)
            if name is None:
                continue
            try:
                value = values[name]
            except KeyError:
                raise FillError(f"param {name!r} has no value and no default") from None
            try:
                out.append(format(value, spec))
            except (ValueError, TypeError) as e:
                raise FillError(f"cannot format {name!r}={value!r} with {{:{spec}}}: {e}") from None
        return "".join(out)


class LineTemplate:
    """A serial ``line:`` template for a device with the given newline."""

    __slots__ = ("_controls", "_newline", "_template")

    def __init__(self, text: str, params: Collection[str], newline: str, *, allow_tab: bool = False) -> None:
        self._template = Template(text, params)
        self._newline = newline
        # allow_tab: the params checker has already refused a tab in any value, so a tab here can
        # only come from the config's own template text.
        self._controls = control_chars(allow_tab=allow_tab)

    def fill(self, values: Mapping[str, Scalar]) -> str:
        line = self._template.fill(values)
        if self._newline and self._newline in line:
            raise FillError("the line would contain the device's newline")
        if self._controls.search(line) is not None:
            raise FillError("the line would contain a control character")
        return line


class TopicTemplate:
    """An MQTT publish ``topic:`` template."""

    __slots__ = ("_template",)

    def __init__(self, text: str, params: Collection[str]) -> None:
        self._template = Template(text, params)

    def fill(self, values: Mapping[str, Scalar]) -> str:
        topic = self._template.fill(values)
        if not topic:
            raise FillError("the topic would be empty")
        if "+" in topic or "#" in topic:
            raise FillError(f"the topic {topic!r} would contain an MQTT wildcard")
        if CONTROL_CHARS.search(topic) is not None:
            raise FillError("the topic would contain a control character")
        return topic


class _Field:
    """A JSON value that is exactly ``"{param}"``: the param's value with its type kept."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _compile_json(value: object, params: Collection[str]) -> Any:
    if isinstance(value, str):
        t = Template(value, params)
        parts = t._parts
        if len(parts) == 1 and parts[0][0] == "" and parts[0][1] is not None and parts[0][2] == "":
            return _Field(parts[0][1])
        return t if t.fields else value
    if isinstance(value, Mapping):
        return {str(k): _compile_json(v, params) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_compile_json(v, params) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TemplateError(f"payload value {value!r} is not JSON")


def _fill_json(node: Any, values: Mapping[str, Scalar]) -> Any:
    if isinstance(node, _Field):
        try:
            return values[node.name]
        except KeyError:
            raise FillError(f"param {node.name!r} has no value and no default") from None
    if isinstance(node, Template):
        return node.fill(values)
    if isinstance(node, dict):
        return {k: _fill_json(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill_json(v, values) for v in node]
    return node


class PayloadTemplate:
    """An MQTT ``payload:``: a string template, or a mapping serialised as compact JSON."""

    __slots__ = ("_json", "_text")

    def __init__(self, payload: str | Mapping[str, object], params: Collection[str]) -> None:
        self._text: Template | None = None
        self._json: Any = None
        if isinstance(payload, str):
            self._text = Template(payload, params)
        else:
            self._json = _compile_json(payload, params)

    def fill(self, values: Mapping[str, Scalar]) -> bytes:
        if self._text is not None:
            return self._text.fill(values).encode("utf-8")
        return json.dumps(_fill_json(self._json, values), separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode("utf-8")
