"""bridge.config: good files load into the model's dataclasses with the documented defaults."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge.config import ConfigError, ConfigIssue, load_config
from bridge.core.model import (
    Audit,
    Estop,
    Expect,
    Heartbeat,
    MqttAction,
    MqttTelemetry,
    ParamSpec,
    RateLimit,
    SerialAction,
    SerialTelemetry,
    TelemetryField,
    Watchdog,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO_ENV = {"SIGBRIDGE_ROVER_PORT": "/dev/pts/7", "SIGBRIDGE_URL": "ws://127.0.0.1:8765",
            "SIGBRIDGE_SESSION": "lab-1", "SIGBRIDGE_TOKEN": "T1"}
EXAMPLE_ENV = {"SIGBRIDGE_TOKEN": "tok", "MQTT_PASSWORD": "pw"}


def write(tmp_path: Path, text: str, name: str = "bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_example_loads_with_every_section() -> None:
    config = load_config(ROOT / "config" / "bridge.example.yaml", EXAMPLE_ENV)
    assert set(config.devices) == {"base", "arm"}
    assert config.devices["base"].kind == "serial"
    assert config.devices["arm"].kind == "mqtt"
    assert config.rules and config.telemetry and config.audit is not None
    assert config.safety.estop is not None and config.control.lease
    kinds = {type(t) for t in config.telemetry}
    assert kinds == {SerialTelemetry, MqttTelemetry}


def test_demo_loads_as_the_demo_runs_it() -> None:
    config = load_config(ROOT / "config" / "demo.yaml", DEMO_ENV)
    assert config.session.url == "ws://127.0.0.1:8765"
    assert config.session.session_id == "lab-1" and config.session.token == "T1"
    base = config.devices["base"]
    assert base.serial is not None and base.serial.port == "/dev/pts/7" and base.serial.newline == "\n"
    move = config.rules[0]
    assert move.signal == "robot.move" and move.max_age_ms == 500
    assert move.params == (ParamSpec("x", "float", min=-1, max=1), ParamSpec("y", "float", min=-1, max=1))
    assert move.send == (SerialAction("base", "M {x:.2f} {y:.2f}"),)
    assert move.watchdog == Watchdog(500, (SerialAction("base", "M 0.00 0.00"),))
    assert [r.signal for r in config.rules] == ["robot.move", "robot.stop"]
    assert config.safety.estop == Estop("robot.estop", "robot.estop_reset", (SerialAction("base", "S"),))
    assert config.safety.on_disconnect == (SerialAction("base", "S"),)
    (tele,) = config.telemetry
    assert tele == SerialTelemetry("base", r"^T (?P<battery>\d+) (?P<speed>-?[\d.]+)$", "robot.telemetry", 10,
                                   fields={"battery": TelemetryField("%", 0, 100, warn_below=20),
                                           "speed": TelemetryField("m/s", -1, 1)})


MINIMAL = """
    session: {url: ws://hub:8765, session_id: lab-1, token: abc}
    devices:
      base: {serial: {port: /dev/ttyUSB0}}
      arm: {mqtt: {}}
"""


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})
    base, arm = config.devices["base"], config.devices["arm"]
    assert base.serial is not None and base.serial.baudrate == 115200 and base.serial.newline == "\n"
    assert base.serial.max_line == 1024 and base.serial.low_latency is True
    assert arm.mqtt is not None and arm.mqtt.host == "127.0.0.1" and arm.mqtt.port == 1883
    assert arm.mqtt.client_id == "sigbridge-arm" and arm.mqtt.tls is False
    assert config.rules == () and config.telemetry == () and config.audit is None
    assert config.safety.estop is None and config.control.lease is False
    assert config.source == str(tmp_path / "bridge.yaml")


def test_full_rule_and_mqtt_payload_types(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + """
    rules:
      - signal: arm.grip
        params:
          force: {type: int, min: 0, max: 100, on_range: clamp, default: 10, slew_per_s: 50}
          mode: {type: string, enum: [soft, hard], default: soft}
          name: {type: string, pattern: '[a-z]{1,8}'}
          fast: {type: bool, default: false}
        send:
          - {device: arm, topic: "arm/{name}/set", payload: {force: "{force}", label: "f={force:03d}",
             fixed: [1, 2.5, true, null]}, qos: 1}
          - {device: base, line: "G {force:d} {mode}", expect: {pattern: 'OK (?P<n>\\d+)', timeout_ms: 200,
             reply: arm.done}}
        max_age_ms: 300
        ack: yes
        from_roles: [moderator, publisher]
        from_data: 'operator=\\w+'
        allow_rest: true
        rate_limit: {hz: 20, burst: 5}
      - signal: "arm.*"
        send: {device: arm, topic: arm/other, payload: "raw"}
    """)
    rule = load_config(path, {}).rules[0]
    force, mode, name, fast = rule.params
    assert force == ParamSpec("force", "int", required=False, default=10, min=0, max=100, on_range="clamp",
                              slew_per_s=50)
    assert mode.enum == ("soft", "hard") and mode.default == "soft" and not mode.required
    assert name.pattern == "[a-z]{1,8}" and name.required
    assert fast.default is False
    mqtt, serial = rule.send
    assert mqtt == MqttAction("arm", "arm/{name}/set", {"force": "{force}", "label": "f={force:03d}",
                                                         "fixed": [1, 2.5, True, None]}, 1)
    assert serial == SerialAction("base", "G {force:d} {mode}", Expect(r"OK (?P<n>\d+)", 200, "arm.done"))
    assert rule.ack and rule.allow_rest and rule.max_age_ms == 300
    assert rule.from_roles == frozenset({"moderator", "publisher"})
    assert rule.rate_limit == RateLimit(20.0, 5)
    assert rule.index == 0


def test_token_file_env_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("  the-token\n")
    (tmp_path / "ca.pem").write_text("x")
    path = write(tmp_path, """
        session: {url: "${HUB:-ws://127.0.0.1:8765}", session_id: "s-${ROBOT}", token_file: secret}
        devices:
          arm:
            mqtt: {host: "${BROKER}", port: "${MQTT_PORT:-1883}", tls: "${TLS:-true}", ca_file: ca.pem,
                   username: u, password: "p$${x}", keepalive: 10}
            heartbeat: {hz: 2, topic: arm/alive, payload: "1"}
        audit: {path: audit/log.jsonl}
    """)
    config = load_config(path, {"ROBOT": "r2", "BROKER": "broker.lan"})
    assert config.session.url == "ws://127.0.0.1:8765" and config.session.session_id == "s-r2"
    assert config.session.token == "the-token"
    mqtt = config.devices["arm"].mqtt
    assert mqtt is not None and mqtt.host == "broker.lan" and mqtt.port == 1883 and mqtt.tls is True
    assert mqtt.password == "p${x}" and mqtt.ca_file == str(tmp_path / "ca.pem")
    assert config.devices["arm"].heartbeat == Heartbeat(2, topic="arm/alive", payload="1")
    assert config.audit == Audit(str(tmp_path / "audit" / "log.jsonl"))


def test_safety_control_and_yaml_plain_strings(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + """
    rules:
      - {signal: robot.move, send: {device: base, line: "M 0 0"}}
    control: {lease: true, acquire: ctl.take, release: ctl.give}
    safety:
      on_disconnect: {device: arm, topic: arm/stop, payload: on}
      on_controller_lost: [{device: base, line: "S"}]
      on_shutdown: [{device: base, line: "S"}, {device: arm, topic: arm/stop}]
      estop: {signal: e.stop, reset: e.reset, reset_roles: [publisher]}
    """)
    config = load_config(path, {})
    assert config.safety.on_disconnect == (MqttAction("arm", "arm/stop", "on"),)   # `on` kept as text
    assert config.safety.on_shutdown[1] == MqttAction("arm", "arm/stop", "")
    assert config.safety.estop == Estop("e.stop", "e.reset", (), frozenset({"publisher"}))
    assert (config.control.acquire, config.control.release) == ("ctl.take", "ctl.give")


def test_config_error_str_is_one_line_per_issue() -> None:
    err = ConfigError([ConfigIssue("b.yaml", 3, "rules[0].send", "x"), ConfigIssue("b.yaml", None, "", "y")])
    assert str(err) == "b.yaml:3: rules[0].send: x\nb.yaml: y"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml", {})
    missing = tmp_path / "missing.yaml"
    assert str(info.value) == f"{missing}: cannot read the config: No such file or directory"


def test_env_interpolation_types_defaults_and_escapes(tmp_path: Path) -> None:
    path = write(tmp_path, """
        session: {url: "wss://${HOST}:${PORT:-443}/", session_id: "$${literal}-${EMPTY}x", token: "a:-${T}"}
        devices:
          base:
            serial:
              port: ${P}
              baudrate: "${BAUD}"
              low_latency: ${LOW:-off}
              max_line: ${ML:-512}
        rules:
          - signal: "${SIG:-robot.move}"
            params:
              x:
                type: float
                min: "${XMIN:--1}"
                max: 1
                default: ${XD:-0.5}
            send: {device: base, line: "M {x:.${DIGITS:-2}f}"}
    """)
    env = {"HOST": "hub.lan", "EMPTY": "", "T": "tok", "P": "socket://127.0.0.1:9", "BAUD": "9600"}
    config = load_config(path, env)
    assert config.session.url == "wss://hub.lan:443/"
    assert config.session.session_id == "${literal}-x" and config.session.token == "a:-tok"
    serial = config.devices["base"].serial
    assert serial is not None and serial.port == "socket://127.0.0.1:9" and serial.baudrate == 9600
    assert serial.low_latency is False and serial.max_line == 512
    rule = config.rules[0]
    assert rule.signal == "robot.move" and rule.params[0].min == -1 and rule.params[0].default == 0.5
    assert rule.send == (SerialAction("base", "M {x:.2f}"),)


def test_env_values_are_checked_like_literals(tmp_path: Path) -> None:
    path = write(tmp_path, """
        session: {url: ws://h, session_id: s, token: t}
        devices: {base: {serial: {port: p, baudrate: "${BAUD}", low_latency: "${LOW}"}}}
    """)
    with pytest.raises(ConfigError) as info:
        load_config(path, {"BAUD": "fast", "LOW": "maybe"})
    file = str(path)
    assert [str(e) for e in info.value.errors] == [
        f"{file}:2: devices.base.serial.baudrate: expected a number, got 'fast'",
        f"{file}:2: devices.base.serial.low_latency: expected true or false, got 'maybe'",
    ]


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGBRIDGE_TEST_SESSION", "from-env")
    path = write(tmp_path, MINIMAL.replace("session_id: lab-1", "session_id: '${SIGBRIDGE_TEST_SESSION}'"))
    assert load_config(path).session.session_id == "from-env"


def test_yaml_11_words_as_keys_and_strings(tmp_path: Path) -> None:
    # `on`/`yes` are booleans to YAML 1.1; as a key or where a string is expected they are the word.
    path = write(tmp_path, MINIMAL + """
    rules:
      - signal: lamp.set
        params:
          on: {type: string, enum: [on, off, yes]}
        send: {device: arm, topic: lamp, payload: {on: "{on}", fixed: on}}
    """)
    rule = load_config(path, {}).rules[0]
    assert rule.params[0].name == "on" and rule.params[0].enum == ("on", "off", "yes")
    assert rule.send == (MqttAction("arm", "lamp", {"on": "{on}", "fixed": True}),)


def test_the_engine_compiles_what_the_loader_accepts() -> None:
    # The loader's checks promise the engine a config it can compile (templates, regexes, actions).
    from bridge.core.engine import Engine

    Engine(load_config(ROOT / "config" / "bridge.example.yaml", EXAMPLE_ENV))
    Engine(load_config(ROOT / "config" / "demo.yaml", DEMO_ENV))


def test_docs_example_is_valid(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8").split("## Example")[1]
    block = text.split("```yaml\n")[1].split("```")[0]
    (tmp_path / "token").write_text("t\n")
    path = write(tmp_path, block.replace("/etc/sigbridge/token", "token"))
    config = load_config(path, {})
    assert [r.signal for r in config.rules] == ["robot.move", "arm.grip"]
