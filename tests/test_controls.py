"""One definition of "control character" (bridge.core.controls), used by the config checks, the
params checker and the templates; `sigbridge check` and `sigbridge run` give the same verdict on a
config (property-tested over generated configs), and a tab is allowed only where a config asks."""

from __future__ import annotations

import contextlib
import io
import json
import unicodedata
from argparse import Namespace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import ConfigError, check_main, load_config
from bridge.core.controls import CONTROL_CHARS, first_control
from bridge.core.engine import Engine, WriteLine
from bridge.core.engine.actions import CompiledRule
from bridge.core.engine.params import Checked, ParamChecker
from bridge.core.engine.templates import FillError
from bridge.core.model import ParamSpec, Rule, SerialAction
from bridge.daemon.runner import prepare


def is_control(ch: str) -> bool:
    """The oracle, from the Unicode database rather than from the regex under test."""
    return unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029"


def test_the_definition_is_every_cc_character_and_the_two_separators() -> None:
    for code in range(0x110000):
        ch = chr(code)
        assert (CONTROL_CHARS.search(ch) is not None) == is_control(ch), f"U+{code:04X}"
    assert first_control("a\tb") == "U+0009"
    assert first_control("a\tb", allow_tab=True) is None
    assert first_control("a\x85b", allow_tab=True) == "U+0085"


@pytest.mark.parametrize("text", ["a\x85b", "a\x9b[2J", "a\u2028b", "a\u2029b", "a\tb", "\x7f", "a\x00"])
def test_a_string_param_with_any_control_character_is_refused(text: str) -> None:
    checker = ParamChecker((ParamSpec("text", "string", pattern=".*"),))
    result = checker.check({"text": text})
    assert not isinstance(result, Checked)
    assert "control character" in result.reason


# ---------------------------------------------------------------- a tab in config text

HEAD = """\
session: {url: "ws://127.0.0.1:9", session_id: s, token: t}
devices: {base: {serial: {port: /dev/null}}}
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


def test_a_tab_in_a_safe_action_is_an_error_unless_the_action_allows_it(tmp_path: Path) -> None:
    path = write(tmp_path, 'safety: {on_disconnect: [{device: base, line: "S\\t0"}]}\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert [str(e) for e in exc.value.errors] == [
        f"{path}:3: safety.on_disconnect[0].line: a line cannot hold control characters (found U+0009) "
        "(a tab needs allow_tab: true on this action): 'S\\t0'"]
    path = write(tmp_path, 'safety: {on_disconnect: [{device: base, line: "S\\t0", allow_tab: true}]}\n')
    config = load_config(path)
    assert config.safety.on_disconnect == (SerialAction("base", "S\t0", allow_tab=True),)
    assert Engine(config).link_down(0.0) == [WriteLine("base", "S\t0")]


def test_allow_tab_lets_the_template_text_hold_a_tab_but_never_a_param_value(tmp_path: Path) -> None:
    path = write(tmp_path, 'rules: [{signal: say, params: {t: {type: string, pattern: ".*"}}, '
                           'send: {device: base, line: "SAY\\t{t}", allow_tab: true}}]\n')
    config = load_config(path)
    compiled = CompiledRule(config.rules[0], {"base": "\n"})
    assert compiled.actions[0].fill({"t": "hi"}) == WriteLine("base", "SAY\thi")
    assert not isinstance(compiled.checker.check({"t": "a\tb"}), Checked)
    # The C1 controls stay refused in the filled line even when a value got past the params.
    with pytest.raises(FillError):
        compiled.actions[0].fill({"t": "a\x85b"})


def test_other_c1_controls_in_config_text_are_errors(tmp_path: Path) -> None:
    for where in ('safety: {on_shutdown: {device: base, line: "S\\x85"}}\n',
                  'rules: [{signal: go, send: {device: base, line: "G\\u009b"}}]\n'):
        with pytest.raises(ConfigError, match="control characters"):
            load_config(write(tmp_path, where))


# ---------------------------------------------------------------- check and run agree

#: Line text made of what matters here: controls of every kind, tabs, the newline, braces, plain text.
LINE_CHARS = st.sampled_from(["a", "M", " ", "0", "\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\x85",
                              "\x9b", "\u2028", "\u2029", "\u00e9", "{", "}", "{x}", "{x:.1f}", "{y}",
                              "{x:d}", "{{", "}}"])


def verdicts(path: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    """(exit status, stderr) of `sigbridge check` and of `sigbridge run` up to its event loop."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        checked = check_main(Namespace(config=str(path)))
    check = (checked, err.getvalue())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        daemon = prepare(str(path))
    run = (2 if daemon is None else 0, err.getvalue().replace("; not starting", ""))
    return check, run


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(LINE_CHARS, max_size=6), allow_tab=st.sampled_from([None, True, False]),
       where=st.sampled_from(["on_disconnect", "watchdog", "rule", "estop", "topic"]))
def test_check_and_run_give_the_same_verdict(tmp_path: Path, parts: list[str], allow_tab: bool | None,
                                             where: str) -> None:
    text = json.dumps("".join(parts))      # a YAML double-quoted scalar: every escape survives
    extra = "" if allow_tab is None else f", allow_tab: {str(allow_tab).lower()}"
    action = f"{{device: base, line: {text}{extra}}}"
    body = {
        "on_disconnect": f"safety: {{on_disconnect: [{action}]}}\n",
        "watchdog": f"rules: [{{signal: go, send: {{device: base, line: G}}, "
                    f"watchdog: {{timeout_ms: 100, send: {action}}}}}]\n",
        "rule": f"rules: [{{signal: go, params: {{x: {{type: float}}}}, send: {action}}}]\n",
        "estop": f"safety: {{estop: {{signal: stop, reset: reset, send: {action}}}}}\n",
        "topic": "devices: {arm: {mqtt: {host: 127.0.0.1}}}\n"
                 f"rules: [{{signal: go, params: {{x: {{type: int}}}}, "
                 f"send: {{device: arm, topic: {text}}}}}]\n",
    }[where]
    path = tmp_path / "bridge.yaml"
    if where == "topic":
        path.write_text(HEAD.replace("devices: {base: {serial: {port: /dev/null}}}\n", "") + body)
    else:
        path.write_text(HEAD + body)
    check, run = verdicts(path)
    assert check == run
    assert "Traceback" not in check[1]
    if check[0] == 0:
        # Accepted: what the engine writes from it never holds a control character but an allowed tab.
        engine = Engine(load_config(path))
        for cmd in [*engine.link_down(0.0), *engine.shutdown()]:
            if isinstance(cmd, WriteLine):
                assert not any(is_control(c) and not (c == "\t" and allow_tab) for c in cmd.line)


@settings(max_examples=500, deadline=None)
@given(value=st.text(max_size=8), allow_tab=st.booleans())
def test_no_param_value_puts_a_control_character_on_the_line(value: str, allow_tab: bool) -> None:
    rule = Rule(0, "say", params=(ParamSpec("t", "string", pattern="(?s).*"),),
                send=(SerialAction("base", "SAY {t}", allow_tab=allow_tab),))
    compiled = CompiledRule(rule, {"base": "\n"})
    checked = compiled.checker.check({"t": value})
    if isinstance(checked, Checked):
        line = compiled.actions[0].fill(checked.values)
        assert isinstance(line, WriteLine)
        assert not any(is_control(c) for c in line.line)
    else:
        assert any(is_control(c) for c in value)
