"""Check a signal's decoded JSON data against a rule's declared params.

Contract: ``ParamChecker(specs)`` is built once per rule at load (patterns compiled there);
``checker.check(data)`` is called per signal with the already-decoded JSON value and returns either
``Checked`` (the values to fill templates with, plus whether any was clamped) or ``ParamRefusal`` (a
reason a person can act on). Nothing is written to a device unless ``check`` returned ``Checked``.

Rules enforced, in this order for each declared param:
- undeclared keys are refused (the key ``id`` is reserved for ack correlation and ignored unless a
  param of that name is declared);
- missing required params are refused, missing optional ones take their ``default`` (absent when the
  default is null);
- types: ``bool`` is only true/false, ``int`` is an integer that is not a bool, ``float`` accepts an
  int or a float (an int is converted), ``string`` is a str; NaN and +-inf are refused;
- ``min``/``max`` with ``on_range: reject`` (refused) or ``clamp`` (pulled to the bound, ``clamped``);
- strings: no control character anywhere (``bridge.core.controls``: every Unicode Cc character, U+2028
  and U+2029; a tab too, always), then ``enum`` membership or ``pattern`` full match.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bridge.core import jsontext
from bridge.core.controls import first_control
from bridge.core.model import ParamSpec, Scalar

#: The data key that carries a client's correlation id for ``bridge.ack``.
ID_KEY = "id"


@dataclass(frozen=True, slots=True)
class Checked:
    values: dict[str, Scalar]
    clamped: bool


@dataclass(frozen=True, slots=True)
class ParamRefusal:
    reason: str


def decode_data(data: str) -> Any:
    """Decode signal data as JSON; empty (or blank) data means ``{}``. NaN/Infinity literals are refused.
    Raises ValueError (json.JSONDecodeError is one) on bad input."""
    if not data.strip():
        return {}
    return jsontext.loads(data)


class ParamChecker:
    """The compiled checks of one rule's params (see the module docstring)."""

    __slots__ = ("_names", "_patterns", "_specs")

    def __init__(self, specs: tuple[ParamSpec, ...]) -> None:
        self._specs = specs
        self._names = frozenset(s.name for s in specs)
        # Compiled once here: never per signal.
        self._patterns = {s.name: re.compile(s.pattern) for s in specs if s.pattern is not None}

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def check(self, data: object) -> Checked | ParamRefusal:
        if not isinstance(data, dict):
            return ParamRefusal("signal data must be a JSON object")
        for key in data:
            if key not in self._names and key != ID_KEY:
                return ParamRefusal(f"undeclared param {key!r} (declared: {_listing(self._names)})")
        values: dict[str, Scalar] = {}
        clamped = False
        for spec in self._specs:
            if spec.name not in data:
                if spec.required:
                    return ParamRefusal(f"missing param {spec.name!r}")
                if spec.default is not None:
                    values[spec.name] = spec.default
                continue
            result = self._check_one(spec, data[spec.name])
            if isinstance(result, ParamRefusal):
                return result
            value, was_clamped = result
            values[spec.name] = value
            clamped = clamped or was_clamped
        return Checked(values, clamped)

    def _check_one(self, spec: ParamSpec, value: object) -> tuple[Scalar, bool] | ParamRefusal:
        name = spec.name
        if spec.type == "bool":
            if isinstance(value, bool):
                return value, False
            return ParamRefusal(f"param {name!r} must be a bool, got {_kind(value)}")
        if spec.type == "string":
            if not isinstance(value, str):
                return ParamRefusal(f"param {name!r} must be a string, got {_kind(value)}")
            return self._check_string(spec, value)
        # int / float
        if isinstance(value, bool) or not isinstance(value, int | float):
            return ParamRefusal(f"param {name!r} must be {_article(spec.type)}, got {_kind(value)}")
        if spec.type == "int" and not isinstance(value, int):
            return ParamRefusal(f"param {name!r} must be an int, got a float")
        if isinstance(value, float) and not math.isfinite(value):
            return ParamRefusal(f"param {name!r} must be finite")
        number: int | float = float(value) if spec.type == "float" else value
        return _check_range(spec, number)

    def _check_string(self, spec: ParamSpec, value: str) -> tuple[Scalar, bool] | ParamRefusal:
        control = first_control(value)
        if control is not None:
            return ParamRefusal(f"param {spec.name!r} contains a control character ({control})")
        if spec.enum is not None and value not in spec.enum:
            return ParamRefusal(f"param {spec.name!r} must be one of {_listing(spec.enum)}")
        pattern = self._patterns.get(spec.name)
        if pattern is not None and pattern.fullmatch(value) is None:
            return ParamRefusal(f"param {spec.name!r} does not match {spec.pattern!r}")
        return value, False


def _check_range(spec: ParamSpec, number: int | float) -> tuple[Scalar, bool] | ParamRefusal:
    low, high = spec.min, spec.max
    if low is not None and number < low:
        if spec.on_range == "reject":
            return ParamRefusal(f"param {spec.name!r} is {number}, below min {_num(low)}")
        return _bound(spec, low, up=True), True
    if high is not None and number > high:
        if spec.on_range == "reject":
            return ParamRefusal(f"param {spec.name!r} is {number}, above max {_num(high)}")
        return _bound(spec, high, up=False), True
    return number, False


def _bound(spec: ParamSpec, bound: float, *, up: bool) -> int | float:
    """The clamped value: for an int param the nearest integer inside the range."""
    if spec.type == "int":
        return math.ceil(bound) if up else math.floor(bound)
    return float(bound)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _article(type_: str) -> str:
    return "an int" if type_ == "int" else "a float"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an int"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _listing(names: frozenset[str] | tuple[str, ...]) -> str:
    items = sorted(names) if isinstance(names, frozenset) else list(names)
    return ", ".join(items) if items else "none"
