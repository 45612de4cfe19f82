"""bridge.core.engine.templates: compile-time refusals, filling, serial line and topic guards, JSON."""

from __future__ import annotations

import json

import pytest

from bridge.core.engine.templates import (
    FillError,
    LineTemplate,
    PayloadTemplate,
    Template,
    TemplateError,
    TopicTemplate,
)

P = {"x", "y", "mode", "force", "on"}


def test_fill_with_format_specs() -> None:
    t = Template("M {x:.2f} {y:+.1f} {mode}", P)
    assert t.fill({"x": 0.5, "y": -0.25, "mode": "eco"}) == "M 0.50 -0.2 eco"
    assert t.fields == {"x", "y", "mode"}
    assert Template("S", P).fill({}) == "S"
    assert Template("{{literal}} {x}", P).fill({"x": 1}) == "{literal} 1"


@pytest.mark.parametrize("text,word", [
    ("{z}", "not a declared param"),
    ("{x.real}", "plain param name"),
    ("{x[0]}", "plain param name"),
    ("{}", "plain param name"),
    ("{0}", "plain param name"),
    ("{x!r}", "conversions"),
    ("{x:{y}}", "nested"),
    ("{x", "bad template"),
    ("x}", "bad template"),
])
def test_compile_refusals(text: str, word: str) -> None:
    with pytest.raises(TemplateError, match=word):
        Template(text, P)


def test_fill_errors() -> None:
    with pytest.raises(FillError, match="no value"):
        Template("{x}", P).fill({})
    with pytest.raises(FillError, match="cannot format"):
        Template("{x:d}", P).fill({"x": 0.5})


def test_line_refuses_newline_and_control_characters() -> None:
    line = LineTemplate("M {mode}", P, "\n")
    assert line.fill({"mode": "ok"}) == "M ok"
    for bad in ("1\nFIRE", "a\rb", "\x00", "\u2028"):
        with pytest.raises(FillError):
            line.fill({"mode": bad})
    semi = LineTemplate("M {mode}", P, ";")
    with pytest.raises(FillError, match="newline"):
        semi.fill({"mode": "a;FIRE"})
    # A control character in the template itself is refused at fill too: nothing bad reaches a port.
    with pytest.raises(FillError):
        LineTemplate("A\tB", P, "\n").fill({})


def test_topic_guards() -> None:
    t = TopicTemplate("arm/{mode}/set", P)
    assert t.fill({"mode": "grip"}) == "arm/grip/set"
    for bad in ("+", "#", "a\x00b"):
        with pytest.raises(FillError):
            t.fill({"mode": bad})
    with pytest.raises(FillError, match="empty"):
        TopicTemplate("{mode}", P).fill({"mode": ""})


def test_payload_mapping_keeps_types() -> None:
    p = PayloadTemplate({"force": "{force}", "on": "{on}", "label": "f={force:03d}", "k": 1,
                         "nested": {"list": ["{x}", None, True]}}, P)
    out = json.loads(p.fill({"force": 7, "on": False, "x": 0.5}))
    assert out == {"force": 7, "on": False, "label": "f=007", "k": 1, "nested": {"list": [0.5, None, True]}}


def test_payload_string_template() -> None:
    assert PayloadTemplate("F{force}", P).fill({"force": 3}) == b"F3"
    assert PayloadTemplate("", P).fill({}) == b""


def test_payload_refuses_non_json_values() -> None:
    with pytest.raises(TemplateError):
        PayloadTemplate({"a": object()}, P)
