"""bridge.core.engine.params: every refusal rule, clamping, defaults, JSON decoding."""

from __future__ import annotations

import pytest

from bridge.core.engine.params import Checked, ParamChecker, ParamRefusal, decode_data
from bridge.core.model import ParamSpec


def check(specs: tuple[ParamSpec, ...], data: object) -> Checked | ParamRefusal:
    return ParamChecker(specs).check(data)


X = ParamSpec("x", "float", min=-1, max=1)
N = ParamSpec("n", "int", min=0, max=100)
B = ParamSpec("b", "bool")
MODE = ParamSpec("mode", "string", enum=("eco", "fast"))
NAME = ParamSpec("name", "string", pattern=r"[a-z]{1,8}")


def refused(result: Checked | ParamRefusal, *words: str) -> None:
    assert isinstance(result, ParamRefusal), result
    for w in words:
        assert w in result.reason, result.reason


def test_good_values_pass_with_types() -> None:
    r = check((X, N, B, MODE, NAME), {"x": 0.5, "n": 7, "b": True, "mode": "eco", "name": "abc"})
    assert r == Checked({"x": 0.5, "n": 7, "b": True, "mode": "eco", "name": "abc"}, False)


def test_int_for_float_is_converted() -> None:
    r = check((X,), {"x": 1})
    assert isinstance(r, Checked) and r.values["x"] == 1.0 and isinstance(r.values["x"], float)


@pytest.mark.parametrize("spec,value,word", [
    (N, 1.0, "must be an int"),
    (N, True, "must be an int"),
    (X, True, "must be a float"),
    (X, "0.5", "must be a float"),
    (B, 1, "must be a bool"),
    (B, "true", "must be a bool"),
    (MODE, 3, "must be a string"),
    (X, None, "null"),
    (X, [1], "array"),
    (X, float("nan"), "finite"),
    (X, float("inf"), "finite"),
])
def test_wrong_types_refused(spec: ParamSpec, value: object, word: str) -> None:
    refused(check((spec,), {spec.name: value}), spec.name, word)


def test_range_reject_and_clamp() -> None:
    refused(check((X,), {"x": 1.5}), "above max 1")
    refused(check((X,), {"x": -2}), "below min -1")
    clamp = ParamSpec("x", "float", min=-1, max=1, on_range="clamp")
    assert check((clamp,), {"x": 3}) == Checked({"x": 1.0}, True)
    assert check((clamp,), {"x": -3.5}) == Checked({"x": -1.0}, True)
    assert check((clamp,), {"x": 0.25}) == Checked({"x": 0.25}, False)
    iclamp = ParamSpec("n", "int", min=0.5, max=9.5, on_range="clamp")
    assert check((iclamp,), {"n": 20}) == Checked({"n": 9}, True)
    assert check((iclamp,), {"n": -20}) == Checked({"n": 1}, True)


def test_undeclared_missing_and_defaults() -> None:
    refused(check((X,), {"x": 0, "fire": 1}), "undeclared param 'fire'")
    refused(check((X,), {}), "missing param 'x'")
    opt = ParamSpec("speed", "int", required=False, default=5)
    none = ParamSpec("tag", "string", required=False, enum=("a",))
    assert check((opt, none), {}) == Checked({"speed": 5}, False)
    assert check((opt,), {"speed": 9}) == Checked({"speed": 9}, False)


def test_id_is_reserved_for_ack_correlation() -> None:
    assert check((X,), {"x": 0, "id": "abc"}) == Checked({"x": 0.0}, False)


def test_data_must_be_an_object() -> None:
    refused(check((X,), [1, 2]), "JSON object")
    refused(check((X,), 3), "JSON object")


@pytest.mark.parametrize("text", ["1\nFIRE", "a\rb", "\x00", "x\x1b[2J", "del\x7f", "l\u2028s", "p\u2029"])
def test_control_characters_refused_before_enum_or_pattern(text: str) -> None:
    any_ = ParamSpec("s", "string", pattern=r"(?s).*")
    refused(check((any_,), {"s": text}), "control character")


def test_enum_and_pattern_fullmatch() -> None:
    refused(check((MODE,), {"mode": "turbo"}), "one of eco, fast")
    refused(check((NAME,), {"name": "abc1"}), "does not match")
    refused(check((NAME,), {"name": "toolongname"}), "does not match")


def test_decode_data() -> None:
    assert decode_data("") == {}
    assert decode_data("  ") == {}
    assert decode_data('{"x":1}') == {"x": 1}
    for bad in ('{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}', "{", "nope"):
        with pytest.raises(ValueError):
            decode_data(bad)
