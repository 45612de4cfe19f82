"""bridge.config: every validation error, with its exact ``file:line: key.path: message`` text, and all of
a file's errors at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config

# Lines 1-4 of every case below that starts from it.
BASE = """\
session: {url: ws://hub:8765, session_id: lab-1, token: abc}
devices:
  base: {serial: {port: /dev/ttyUSB0}}
  arm: {mqtt: {host: 127.0.0.1}}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)      # so that messages read "bridge.yaml:LINE: ..."


def errors(text: str, environ: dict[str, str] | None = None) -> list[str]:
    Path("bridge.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config("bridge.yaml", environ or {})
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)
    return [str(e) for e in info.value.errors]


def test_unknown_device_names_the_known_ones() -> None:
    assert errors(BASE + "rules:\n  - signal: a.b\n    send: {device: bsae, line: X}\n") == [
        "bridge.yaml:7: rules[0].send.device: unknown device 'bsae' (known: base, arm)"]


def test_unknown_key_suggests_the_close_match() -> None:
    assert errors(BASE + "rules:\n  - signal: a.b\n    parms: {}\n    send: {device: base, line: X}\n") == [
        "bridge.yaml:7: rules[0].parms: unknown key (did you mean 'params'?); expected one of: signal, "
        "params, send, max_age_ms, watchdog, ack, from_roles, from_data, allow_rest, rate_limit"]


def test_wrong_types_and_non_positive_numbers() -> None:
    assert errors(BASE + """\
rules:
  - signal: a.b
    send: {device: base, line: X}
    ack: maybe
    max_age_ms: -5
    rate_limit: {hz: 0}
    watchdog: {timeout_ms: fast, send: {device: base, line: S}}
telemetry:
  - {device: base, match: '(?P<v>.)', signal: t.v, max_rate_hz: 0}
""") == [
        "bridge.yaml:8: rules[0].ack: expected true or false, got 'maybe'",
        "bridge.yaml:9: rules[0].max_age_ms: must be greater than 0, got -5",
        "bridge.yaml:10: rules[0].rate_limit.hz: must be greater than 0, got 0",
        "bridge.yaml:11: rules[0].watchdog.timeout_ms: expected a number, got 'fast'",
        "bridge.yaml:13: telemetry[0].max_rate_hz: must be greater than 0, got 0",
    ]


def test_device_settings() -> None:
    (Path("ca.pem")).write_text("x")
    assert errors("""\
session: {url: 'http://hub', session_id: '', token: a, token_file: t}
devices:
  'b a': {serial: {port: p}}
  c: {serial: {port: p, baudrate: 0}, mqtt: {}}
  d: {serial: {port: '${NOPE}', newline: ''}, heartbeat: {hz: 1, topic: x}}
  d: {}
  e: {serial: {port: /dev/ttyS0, baudrate: 9600.5, reopen_min_s: 9, reopen_max_s: 1}}
  f: {serial: {port: /dev/ttyS0, low_latency: maybe}}
  g: {mqtt: {port: 70000, password: x, ca_file: ca.pem, keepalive: 0, availability_topic: 'a/#'}}
  h: {mqtt: {client_id: sigbridge-i}}
  i: {mqtt: {}, heartbeat: {hz: -1, line: K}}
""") == [
        "bridge.yaml:1: session.url: expected a ws:// or wss:// URL with a host, got 'http://hub'",
        "bridge.yaml:1: session.session_id: must not be empty",
        "bridge.yaml:1: session: give exactly one of token or token_file (token_file keeps the secret "
        "out of the config)",
        "bridge.yaml:3: devices.b a: a device name may only hold A-Z a-z 0-9 _ -",
        "bridge.yaml:4: devices.c: give exactly one of serial: or mqtt:",
        "bridge.yaml:5: devices.d.serial.port: environment variable 'NOPE' is not set (set it, or give a "
        "default: ${NOPE:-...})",
        "bridge.yaml:5: devices.d.serial.newline: must not be empty",
        "bridge.yaml:5: devices.d.heartbeat.topic: unknown key; expected one of: hz, line",
        "bridge.yaml:5: devices.d.heartbeat: missing required key 'line'",
        "bridge.yaml:6: devices.d: duplicate key (first at line 5)",
        "bridge.yaml:7: devices.e.serial.baudrate: expected an integer, got 9600.5",
        "bridge.yaml:7: devices.e.serial.reopen_min_s: must not exceed reopen_max_s (9 > 1)",
        "bridge.yaml:8: devices.f.serial.low_latency: expected true or false, got 'maybe'",
        "bridge.yaml:9: devices.g.mqtt.port: must be at most 65535, got 70000",
        "bridge.yaml:9: devices.g.mqtt.keepalive: must be greater than 0, got 0",
        "bridge.yaml:9: devices.g.mqtt.availability_topic: a topic to publish to cannot hold the wildcards "
        "+ or #: 'a/#'",
        "bridge.yaml:9: devices.g.mqtt.password: a password needs a username",
        "bridge.yaml:9: devices.g.mqtt.ca_file: ca_file is only used with tls: true",
        "bridge.yaml:11: devices.i.heartbeat.line: unknown key; expected one of: hz, topic, payload",
        "bridge.yaml:11: devices.i.heartbeat: missing required key 'topic'",
        "bridge.yaml:11: devices.i.heartbeat.hz: must be greater than 0, got -1",
        # h took the client id that i gets by default (sigbridge-NAME): they would kick each other off.
        "bridge.yaml:11: devices.i: same MQTT client_id on the same broker as device 'h'",
    ]


def test_same_serial_port_or_mqtt_client_twice() -> None:
    assert errors("""\
session: {url: ws://hub, session_id: s, token: t}
devices:
  a: {serial: {port: /dev/ttyUSB0}}
  b: {serial: {port: /dev/ttyUSB0}}
  c: {mqtt: {client_id: x}}
  d: {mqtt: {client_id: x}}
  e: {mqtt: {client_id: x, port: 1884}}
""") == [
        "bridge.yaml:4: devices.b: same serial port as device 'a'",
        "bridge.yaml:6: devices.d: same MQTT client_id on the same broker as device 'c'",
    ]


def test_templates_name_only_declared_params_with_fitting_specs() -> None:
    assert errors(BASE + """\
rules:
  - signal: a.b
    params: {x: {type: float}, n: {type: int}}
    send:
      - {device: base, line: 'M {y}'}
      - {device: base, line: 'M {}'}
      - {device: base, line: 'M {x.real}'}
      - {device: base, line: 'M {x!r}'}
      - {device: base, line: 'M {x:d}'}
      - {device: base, line: 'M {x'}
      - {device: arm, topic: 'a/{z}', payload: {v: '{x}', w: ['{q}']}}
      - {device: arm, topic: 'a', payload: '{n:q}'}
      - {device: base, line: 'M {n:{x}}'}
      - {device: arm, topic: a, payload: "{n:\\x01>4}"}
""") == [
        "bridge.yaml:9: rules[0].send[0].line: template 'M {y}': {y} is not a declared param "
        "(declared: x, n)",
        "bridge.yaml:10: rules[0].send[1].line: template 'M {}': {} needs a param name, e.g. {x}",
        "bridge.yaml:11: rules[0].send[2].line: template 'M {x.real}': {x.real} must be a plain param name "
        "(no attribute or index access)",
        "bridge.yaml:12: rules[0].send[3].line: template 'M {x!r}': conversions like !r are not allowed",
        "bridge.yaml:13: rules[0].send[4].line: template 'M {x:d}': format spec {x:d} does not fit float "
        "param 'x': Unknown format code 'd' for object of type 'float'",
        "bridge.yaml:14: rules[0].send[5].line: bad template 'M {x': expected '}' before end of string "
        "(write {{ and }} for literal braces)",
        "bridge.yaml:15: rules[0].send[6].topic: template 'a/{z}': {z} is not a declared param "
        "(declared: x, n)",
        "bridge.yaml:15: rules[0].send[6].payload.w[0]: template '{q}': {q} is not a declared param "
        "(declared: x, n)",
        "bridge.yaml:16: rules[0].send[7].payload: template '{n:q}': format spec {n:q} does not fit int "
        "param 'n': Unknown format code 'q' for object of type 'int'",
        "bridge.yaml:17: rules[0].send[8].line: template 'M {n:{x}}': nested fields in format specs are "
        "not allowed",
        "bridge.yaml:18: rules[0].send[9].payload: template '{n:\\x01>4}': format spec {n:\\x01>4} would "
        "write a control character",
    ]


def test_regexes_compile_and_match_has_named_groups() -> None:
    assert errors(BASE + """\
rules:
  - signal: a.b
    params: {s: {type: string, pattern: '(['}}
    from_data: '*x'
    send: {device: base, line: 'M {s}', expect: {pattern: 'a)'}}
telemetry:
  - {device: base, match: '^T (\\d+)$', signal: t.x}
""") == [
        "bridge.yaml:7: rules[0].params.s.pattern: invalid regular expression '([': unterminated "
        "character set at position 1",
        "bridge.yaml:8: rules[0].from_data: invalid regular expression '*x': nothing to repeat at position 0",
        "bridge.yaml:9: rules[0].send.expect.pattern: invalid regular expression 'a)': unbalanced "
        "parenthesis at position 1",
        "bridge.yaml:11: telemetry[0].match: '^T (\\d+)$' has no named group; name each field, "
        "e.g. (?P<battery>\\d+)",
    ]


def test_param_specs() -> None:
    assert errors(BASE + """\
rules:
  - signal: a.b
    params:
      s: {type: string}
      n: {type: int, min: 5, max: 1}
      d: {type: float, min: 0, max: 1, default: 2}
      e: {type: int, default: 1.5}
      b: {type: bool, min: 0}
      t: {type: text}
      u: {type: string, enum: [a, b], default: c}
      v: {type: string, pattern: '[a-z]+', default: '1'}
      w: {type: int, min: 0.5}
      x: {type: float, on_range: clamp}
      y: {type: int, enum: [1]}
      z: {type: bool, default: 1}
      1a: {type: int}
      s2: {type: string, enum: [a], pattern: a}
      f: {type: float, on_range: wrap, max: 1, slew_per_s: 0}
    send: {device: base, line: X}
""") == [
        "bridge.yaml:8: rules[0].params.s: a string param needs exactly one of enum (the allowed values) "
        "or pattern (a regex)",
        "bridge.yaml:9: rules[0].params.n.min: min 5 is greater than max 1",
        "bridge.yaml:10: rules[0].params.d.default: default 2.0 is outside [0, 1]",
        "bridge.yaml:11: rules[0].params.e.default: an int param needs an integer default, got 1.5",
        "bridge.yaml:12: rules[0].params.b.min: 'min' does not apply to a bool param",
        "bridge.yaml:13: rules[0].params.t.type: unknown param type 'text' (types: int, float, bool, string)",
        "bridge.yaml:14: rules[0].params.u.default: default 'c' is not in enum ['a', 'b']",
        "bridge.yaml:15: rules[0].params.v.default: default '1' does not match pattern '[a-z]+'",
        "bridge.yaml:16: rules[0].params.w.min: an int param needs an integer min, got 0.5",
        "bridge.yaml:17: rules[0].params.x.on_range: on_range needs a min or a max",
        "bridge.yaml:18: rules[0].params.y.enum: 'enum' does not apply to a int param",
        "bridge.yaml:19: rules[0].params.z.default: expected true or false, got an integer '1'",
        "bridge.yaml:20: rules[0].params.1a: a param name is a plain identifier (A-Z a-z 0-9 _, not "
        "starting with a digit)",
        "bridge.yaml:21: rules[0].params.s2: a string param needs exactly one of enum (the allowed values) "
        "or pattern (a regex)",
        "bridge.yaml:22: rules[0].params.f.on_range: expected reject or clamp, got 'wrap'",
        "bridge.yaml:22: rules[0].params.f.slew_per_s: must be greater than 0, got 0",
    ]


def test_signal_types_roles_and_rules_that_can_never_match() -> None:
    assert errors(BASE + """\
rules:
  - signal: robot move
    send: {device: base, line: X}
  - signal: 'robot.*'
    send: {device: base, line: X}
  - signal: robot.stop
    send: {device: base, line: X}
  - signal: robot.*
    send: {device: base, line: X}
  - signal: a.b
    send: {device: base, line: X}
  - signal: a.c
    send: {device: base, line: X}
    from_roles: [admin, subscriber]
  - signal: a.d
    send: {device: base, line: X, expect: {pattern: x, reply: 'a b'}}
""") == [
        "bridge.yaml:6: rules[0].signal: invalid signal type 'robot move': signal type may only hold "
        "A-Z a-z 0-9 . _ ~ - (globs may use * ? [ ])",
        "bridge.yaml:10: rules[2].signal: 'robot.stop' is already matched by rules[1] ('robot.*'); first "
        "match wins, so this rule can never match",
        "bridge.yaml:12: rules[3].signal: 'robot.*' is already matched by rules[1] ('robot.*'); first "
        "match wins, so this rule can never match",
        "bridge.yaml:18: rules[5].from_roles[0]: unknown role 'admin' (roles: moderator, publisher, "
        "publisheronly, subscriber)",
        "bridge.yaml:18: rules[5].from_roles[1]: role 'subscriber' cannot send signals (signalling roles: "
        "moderator, publisher)",
        "bridge.yaml:20: rules[6].send.expect.reply: invalid signal type 'a b': signal type may only hold "
        "A-Z a-z 0-9 . _ ~ -",
    ]


def test_duplicate_exact_rule_signal() -> None:
    assert errors(BASE + """\
rules:
  - {signal: a.b, send: {device: base, line: X}}
  - {signal: a.b, send: {device: base, line: Y}}
""") == ["bridge.yaml:7: rules[1].signal: 'a.b' is already matched by rules[0] ('a.b'); first match wins, "
         "so this rule can never match"]


def test_estop_and_lease_signal_types_are_distinct_and_not_rule_signals() -> None:
    assert errors(BASE + """\
rules:
  - {signal: a.b, send: {device: base, line: X}}
safety:
  estop: {signal: a.b, reset: e.r, reset_roles: [moderater]}
control: {lease: true, acquire: e.r, release: c.r}
""") == [
        "bridge.yaml:8: safety.estop.reset_roles[0]: unknown role 'moderater' (did you mean 'moderator'?) "
        "(roles: moderator, publisher, publisheronly, subscriber)",
        "bridge.yaml:8: safety.estop.signal: 'a.b' is also the signal of rules[0]",
        "bridge.yaml:9: control.acquire: 'e.r' is also safety.estop.reset; these signal types must differ",
    ]


def test_action_kind_must_match_the_device_and_retain_is_refused() -> None:
    assert errors(BASE + """\
rules:
  - signal: a.b
    send:
      - {device: arm, line: X}
      - {device: base, topic: x/y}
      - {device: arm, topic: x/y, retain: true}
      - {device: base, line: "A\\nB"}
      - {device: arm, topic: 'x/+', qos: 3}
      - {device: arm, topic: x, expect: {pattern: a}}
""") == [
        "bridge.yaml:8: rules[0].send[0].line: 'line' is for serial devices; 'arm' is an MQTT device",
        "bridge.yaml:8: rules[0].send[0]: missing required key 'topic' (for the MQTT device 'arm')",
        "bridge.yaml:9: rules[0].send[1].topic: 'topic' is for MQTT devices; 'base' is a serial device",
        "bridge.yaml:9: rules[0].send[1]: missing required key 'line' (for the serial device 'base')",
        "bridge.yaml:10: rules[0].send[2].retain: commands are never retained (a retained command would be "
        "replayed to the device by the broker)",
        "bridge.yaml:11: rules[0].send[3].line: a line cannot hold the device's newline (the newline "
        "'\\n' is added when it is written): 'A\\nB'",
        "bridge.yaml:12: rules[0].send[4].topic: a topic to publish to cannot hold the wildcards + or #: "
        "'x/+'",
        "bridge.yaml:12: rules[0].send[4].qos: must be at most 2, got 3",
        "bridge.yaml:13: rules[0].send[5].expect: 'expect' is for serial devices; 'arm' is an MQTT device",
    ]


def test_telemetry_streams() -> None:
    assert errors(BASE + """\
telemetry:
  - {device: arm, topic: 'a/#/b', signal: a.s}
  - {device: base, match: '(?P<v>\\d+)', types: {w: int, v: number}, signal: 'a.*'}
  - {device: arm, match: 'x', signal: a.t}
  - {device: nope, topic: x, signal: a.u}
""") == [
        "bridge.yaml:6: telemetry[0].topic: bad topic filter 'a/#/b': + must be a whole level and # a whole "
        "last level (e.g. arm/+/state, arm/#)",
        "bridge.yaml:7: telemetry[1].signal: invalid signal type 'a.*': signal type may only hold A-Z a-z "
        "0-9 . _ ~ -",
        "bridge.yaml:7: telemetry[1].types.w: 'w' is not a named group of match",
        "bridge.yaml:7: telemetry[1].types.v: expected one of int, float, bool, string, got 'number'",
        "bridge.yaml:8: telemetry[2].match: 'match' does not apply to the MQTT device 'arm'",
        "bridge.yaml:8: telemetry[2]: missing required key 'topic' (for the MQTT device 'arm')",
        "bridge.yaml:9: telemetry[3].device: unknown device 'nope' (known: base, arm)",
    ]


def test_safety_actions() -> None:
    assert errors(BASE + """\
safety:
  on_disconnect: {device: base, line: 'M {x}'}
  on_controller_lost: []
  estop: {signal: e.s}
""") == [
        "bridge.yaml:6: safety.on_disconnect.line: template 'M {x}': {x}: actions outside a rule have no "
        "params (write {{ }} for a literal brace)",
        "bridge.yaml:7: safety.on_controller_lost: list at least one action",
        "bridge.yaml:7: safety.on_controller_lost: needs control: {lease: true} (the controller is the "
        "lease holder)",
        "bridge.yaml:8: safety.estop: missing required key 'reset'",
    ]


def test_bad_yaml_syntax_is_one_error_with_its_line() -> None:
    assert errors(BASE + "rules:\n  - signal: a.b\n    send: {device: base, line: X\n  - x\n") == [
        "bridge.yaml:9: YAML syntax error: expected ',' or '}', but got '<stream end>' (while parsing a "
        "flow mapping at line 7)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "bridge.yaml:1: the file is empty (expected a mapping with session:, devices:, rules: ...)"),
    ("- a\n", "bridge.yaml:1: expected a mapping, got a list"),
    ("session: {url: ws://h, session_id: s, token: t}\ndevices: {a: {serial: {port: p}}}\nsession: {}\n",
     "bridge.yaml:3: session: duplicate key (first at line 1)"),
    (BASE + "x: &a {k: v}\n", "bridge.yaml:5: x: unknown key; expected one of: session, devices, rules, "
                              "telemetry, safety, control, audit, metrics"),
    (BASE + "audit: {backups: 1}\n", "bridge.yaml:5: audit: missing required key 'path'"),
    (BASE + "control: {lease: true, acquire: a, release: a}\n",
     "bridge.yaml:5: control.release: 'a' is also control.acquire; these signal types must differ"),
    ("session: {url: ws://h, session_id: '${A', token: t}\ndevices: {a: {serial: {port: p}}}\n",
     "bridge.yaml:1: session.session_id: malformed variable reference '${' (write ${NAME} or "
     "${NAME:-default}; $$ for a literal $)"),
    ("session: {url: ws://h, session_id: s, token_file: nofile}\ndevices: {a: {serial: {port: p}}}\n",
     "bridge.yaml:1: session.token_file: cannot read 'nofile': No such file or directory"),
])
def test_single_errors(text: str, expected: str) -> None:
    assert errors(text) == [expected]


@pytest.mark.parametrize(("text", "expected"), [
    ("[" * 5000 + "]" * 5000, "bridge.yaml:1: YAML syntax error: nested more than 100 levels"),
    ("a: \x00\n", 'bridge.yaml: YAML error: unacceptable character #x0000: special characters are not '
                   'allowed in "<unicode string>", position 3'),
    ("a: &x b\nc: *y\n", "bridge.yaml:2: YAML syntax error: found undefined alias 'y'"),
    ('session: {url: "ws://[::1", session_id: s, token: t}\ndevices: {a: {serial: {port: p}}}\n',
     "bridge.yaml:1: session.url: expected a ws:// or wss:// URL with a host, got 'ws://[::1'"),
])
def test_hostile_input_is_an_error_not_a_crash(text: str, expected: str) -> None:
    assert errors(text) == [expected]


def test_missing_required_sections_all_reported() -> None:
    assert errors("devices: {}\nrules: {}\n") == [
        "bridge.yaml:1: missing required key 'session'",
        "bridge.yaml:1: devices: declare at least one device",
        "bridge.yaml:2: rules: expected a list, got a mapping",
    ]


def test_empty_token_file(tmp_path: Path) -> None:
    Path("token").write_text("\n  \n")
    assert errors("session: {url: ws://h, session_id: s, token_file: token}\n"
                  "devices: {a: {serial: {port: p}}}\n") == [
        "bridge.yaml:1: session.token_file: 'token' is empty"]


def test_alias_bomb_in_a_payload_is_refused_not_expanded() -> None:
    # A few hundred bytes describing 4**11 (4 million) values through aliases.
    anchors = "".join(f"          l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]\n"
                      for i in range(1, 12))
    text = BASE + ("rules:\n  - signal: a.b\n    send:\n      device: arm\n      topic: t\n"
                   "      payload:\n        defs:\n          l0: &l0 [1]\n" + anchors + "        p: *l11\n")
    assert errors(text) == ["bridge.yaml:11: rules[0].send.payload: too large or too deeply nested (at most "
                            "2000 values, 32 levels)"]


def test_self_referencing_payload_is_refused() -> None:
    text = BASE + "rules:\n  - signal: a.b\n    send: {device: arm, topic: t, payload: &p {me: [*p]}}\n"
    assert errors(text) == ["bridge.yaml:7: rules[0].send.payload: too large or too deeply nested (at most "
                            "2000 values, 32 levels)"]


def test_session_link_timing() -> None:
    devices = BASE.split("\n", 1)[1]
    good = "session: {url: ws://h:1, session_id: s, token: t, keepalive_ms: 250, link_timeout_ms: 1000}\n"
    Path("bridge.yaml").write_text(good + devices, encoding="utf-8")
    session = load_config("bridge.yaml", {}).session
    assert (session.keepalive_ms, session.link_timeout_ms) == (250, 1000)
    assert errors("session: {url: ws://h:1, session_id: s, token: t, keepalive_ms: 500, "
                  "link_timeout_ms: 400}\n" + devices) == [
        "bridge.yaml:1: session.link_timeout_ms: must be longer than keepalive_ms (500), got 400"]
    assert errors("session: {url: ws://h:1, session_id: s, token: t, keepalive_ms: 10}\n" + devices) == [
        "bridge.yaml:1: session.keepalive_ms: must be at least 50, got 10"]


def test_session_signal_rate() -> None:
    devices = BASE.split("\n", 1)[1]
    head = "session: {url: ws://h:1, session_id: s, token: t"
    for extra, want in (("", (500.0, 1000)), (", signal_rate: {hz: 20}", (20.0, 20)),
                        (", signal_rate: {hz: 0.5, burst: 3}", (0.5, 3))):
        Path("bridge.yaml").write_text(head + extra + "}\n" + devices, encoding="utf-8")
        session = load_config("bridge.yaml", {}).session
        assert (session.signal_rate_hz, session.signal_burst) == want
    assert errors(head + ", signal_rate: {hz: 0, burst: 0}}\n" + devices) == [
        "bridge.yaml:1: session.signal_rate.hz: must be greater than 0, got 0",
        "bridge.yaml:1: session.signal_rate.burst: must be at least 1, got 0"]
    assert errors(head + ", signal_rate: {burst: 5}}\n" + devices)[0].startswith(
        "bridge.yaml:1: session.signal_rate")
