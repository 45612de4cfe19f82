"""bridge.core.jsontext answers the same with orjson (the ``fast`` extra) and with the stdlib alone.

Both codecs run in this process (``std_loads`` is the stdlib path, ``_fast_loads`` the orjson one), on
generated JSON and on hostile text: NaN / Infinity, numbers that overflow a double, integers beyond 64
bits, lone surrogate escapes, duplicate keys, nesting around MAX_DEPTH. "The same" is the same value of
the same types (repr: 1 is not 1.0, -0.0 is not 0.0), or a ValueError from both."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core import jsontext


def test_orjson_is_installed_here() -> None:
    """The comparisons below need both codecs: orjson is in the test extra (pyproject.toml)."""
    assert jsontext.FAST


def _outcome(fn: Any, arg: Any) -> tuple[str, str]:
    try:
        return "ok", repr(fn(arg))
    except ValueError:
        return "ValueError", ""
    except TypeError:
        return "TypeError", ""


def same_loads(text: str) -> tuple[str, str]:
    a, b = _outcome(jsontext.std_loads, text), _outcome(jsontext._fast_loads, text)
    assert a == b, (text[:200], a, b)
    return a


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(st.characters(codec="utf-8")))   # valid text: lone surrogates are HOSTILE's (refused)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20)
# Fragments an attacker would splice into JSON text.
HOSTILE = ["NaN", "-Infinity", "Infinity", "1e400", "-1e400", "1e-400", "123456789012345678901",
           "18446744073709551616", "-9223372036854775809", '"\\ud800"', '"\\udfff\\ud800"',
           '"\\ud83d\\ude00"', '"\\u0000"', "-0", "-0.0", "1E5", "[1,]", '{"a":1,"a":[2]}', "\ufeff1",
           '"\x01"', "01", ".5", "1.", "tru", "[", "{}", "[[]]"]


@settings(max_examples=200, deadline=None)
@given(values)
def test_generated_json_decodes_to_the_same_value(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value, indent=1)):
        assert same_loads(text)[0] == "ok"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(HOSTILE) | st.text(max_size=6), min_size=1, max_size=5), st.booleans())
def test_hostile_text_gets_the_same_answer(parts: list[str], as_array: bool) -> None:
    same_loads("[" + ",".join(parts) + "]" if as_array else "".join(parts))


@pytest.mark.parametrize("text", HOSTILE)
def test_each_hostile_fragment_alone(text: str) -> None:
    same_loads(text)
    same_loads('{"k":' + text + "}")


def test_nan_infinity_refused_and_overflow_kept_as_the_stdlib_does() -> None:
    for text in ("NaN", "[Infinity]", '{"x":-Infinity}'):
        assert same_loads(text)[0] == "ValueError"
    assert jsontext.loads("1e400") == math.inf          # the stdlib's answer; a range check refuses it
    assert jsontext.loads("123456789012345678901") == 123456789012345678901   # exact, not a float
    for text in ('"\\ud800"', '{"tag":"ok\\udfff"}', '{"\\udc00":1}', '["\ud800"]'):
        assert same_loads(text)[0] == "ValueError"
    assert jsontext.loads('"\\ud83d\\ude00"') == "\U0001f600"     # a proper pair is one character


def test_a_lone_surrogate_in_signal_data_is_refused_not_raised_when_the_line_is_encoded() -> None:
    """Before: the stdlib decoded "\\ud800" into a param a permissive pattern let through, and the
    executor's gate raised UnicodeEncodeError encoding the line (a crash in the session handler)."""
    from bridge.config import load_config
    from bridge.core.engine import Engine, WriteLine
    from bridge.core.events import Signal

    config = tmp_config()
    engine = Engine(load_config(str(config)))

    def gate(cmd: Any) -> None:
        cmd.line.encode()       # what the executor's gate does first (len of the encoded line)

    engine.gate = gate
    out = engine.signal(Signal("robot.say", '{"tag":"\\ud800"}', "op1", 1, 0), 1.0)
    assert not [c for c in out if isinstance(c, WriteLine)]
    ok = engine.signal(Signal("robot.say", '{"tag":"hi"}', "op1", 2, 0), 1.0)
    assert [c.line for c in ok if isinstance(c, WriteLine)] == ["S hi"]


def tmp_config() -> Path:
    path = Path(tempfile.mkdtemp()) / "bridge.yaml"
    path.write_text("""\
session: {url: "ws://127.0.0.1:9", session_id: s, token: x}
devices:
  base: {serial: {port: /dev/null}}
rules:
  - signal: robot.say
    params: {tag: {type: string, pattern: '.{1,8}'}}
    send: {device: base, line: "S {tag}"}
""")
    return path


@pytest.mark.parametrize("depth", [jsontext.MAX_DEPTH - 1, jsontext.MAX_DEPTH, jsontext.MAX_DEPTH + 1,
                                   1000, 1024, 1025, 4000])
@pytest.mark.parametrize("open_, close", [("[", "]"), ('{"a":', "}")])
def test_nesting_limit_is_the_same(depth: int, open_: str, close: str) -> None:
    got = same_loads(open_ * depth + "1" + close * depth)[0]
    assert got == ("ok" if depth <= jsontext.MAX_DEPTH else "ValueError")


def test_many_shallow_brackets_are_not_deep() -> None:
    text = "[" + ",".join(["[]"] * 2000) + "]"
    assert same_loads(text)[0] == "ok"


dump_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec=None)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(dump_values)
def test_dumps_same_refusals_and_same_values(value: Any) -> None:
    a, b = _outcome(jsontext.std_dumps, value), _outcome(jsontext.dumps, value)
    assert a[0] == b[0], (value, a, b)
    if a[0] == "ok":
        text_a, text_b = jsontext.std_dumps(value), jsontext.dumps(value)
        assert repr(json.loads(text_a)) == repr(json.loads(text_b))


@pytest.mark.parametrize("value", [math.nan, [1.0, math.inf], {"x": -math.inf}, {"a": [{"b": math.nan}]}])
def test_dumps_refuses_nan_and_infinities(value: Any) -> None:
    with pytest.raises(ValueError):
        jsontext.dumps(value)


def test_the_stdlib_is_used_when_orjson_is_absent() -> None:
    code = ("import sys; sys.modules['orjson'] = None\n"
            "from bridge.core import jsontext as j\n"
            "assert not j.FAST and 'orjson' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "assert j.loads('{\"x\": [1, 2.5]}') == {'x': [1, 2.5]}\n"
            "assert j.dumps({'x': 'é'}) == '{\"x\":\"é\"}'\n"
            "for bad in ('NaN', '[' * 4000 + ']' * 4000, '[1,]'):\n"
            "    try:\n        j.loads(bad)\n    except ValueError:\n        continue\n"
            "    raise SystemExit('accepted: ' + bad[:10])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- the wire's codec (frame_loads/dumps)

def same_frame_loads(text: str | bytes) -> tuple[str, str]:
    a, b = _outcome(jsontext.std_frame_loads, text), _outcome(jsontext._fast_frame_loads, text)
    assert a == b, (text[:200], a, b)
    return a


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(HOSTILE) | st.text(max_size=6), min_size=1, max_size=5), st.booleans())
def test_frames_get_the_same_answer_as_json_loads(parts: list[str], as_bytes: bool) -> None:
    text = '{"op":"signal","id":1,"type":"t","data":"x","extra":[' + ",".join(parts) + "]}"
    if as_bytes:
        with_surrogates = any("\ud800" <= c <= "\udfff" for c in text)
        same_frame_loads(text.encode("utf-8", "surrogatepass") if with_surrogates else text.encode())
    else:
        same_frame_loads(text)


@pytest.mark.parametrize("text", ["NaN", '{"id":NaN}', '{"id":Infinity}', "[1e400]",
                                  '{"id":123456789012345678901234}', '"\\udfff"'])
def test_frames_keep_json_loads_leniency(text: str) -> None:
    """The wire type-checks its fields after decoding: what json.loads decoded, it still does."""
    assert same_frame_loads(text)[0] == "ok"
    assert repr(jsontext.frame_loads(text)) == repr(json.loads(text))


def test_frames_in_utf16_bytes_decode_as_json_loads_does() -> None:
    assert same_frame_loads('{"op":"ping","id":1}'.encode("utf-16"))[0] == "ok"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.none() | st.booleans() | st.integers()
                       | st.text(st.characters(codec=None)), max_size=6))
def test_floatless_frames_encode_to_the_same_text(frame: dict[str, Any]) -> None:
    assert jsontext.frame_dumps_floatless(frame) == jsontext.std_frame_dumps(frame)
    assert jsontext.frame_dumps(frame) == jsontext.std_frame_dumps(frame)


@pytest.mark.parametrize("value", [{"x": math.nan}, [math.inf], {"a": [1.5, -math.inf]}])
def test_frame_dumps_writes_non_finite_floats_as_the_stdlib(value: Any) -> None:
    assert jsontext.frame_dumps(value) == jsontext.std_frame_dumps(value)
