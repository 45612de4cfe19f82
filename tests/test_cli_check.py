"""`sigbridge check -c FILE` as a user runs it: a real subprocess, exit codes 0 and 2."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import ROOT, check


def test_good_demo_config_exits_0_with_a_summary() -> None:
    out = check("config/demo.yaml", {"SIGBRIDGE_ROVER_PORT": "/dev/pts/9", "SIGBRIDGE_URL": "ws://h:1",
                                     "SIGBRIDGE_SESSION": "s", "SIGBRIDGE_TOKEN": "t"})
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert lines[0] == "config/demo.yaml: OK"
    assert "  devices: base (serial: /dev/pts/9)" in lines
    assert "  rules: 2 (robot.move, robot.stop)" in lines


def test_good_example_config_exits_0() -> None:
    out = check(ROOT / "config" / "bridge.example.yaml", {"SIGBRIDGE_TOKEN": "t", "MQTT_PASSWORD": "p"})
    assert out.returncode == 0, out.stderr


def test_bad_config_exits_2_with_every_error_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "bridge.yaml").write_text(
        "session: {url: ws://hub:8765, session_id: lab-1, token_file: missing-token}\n"
        "devices:\n"
        "  base: {serial: {port: /dev/ttyUSB0, baudrate: fast}}\n"
        "rules:\n"
        "  - signal: robot.move\n"
        "    parms: {}\n"
        "    send: {device: bsae, line: 'M {x}'}\n")
    out = check("bridge.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "bridge.yaml:1: session.token_file: cannot read 'missing-token': No such file or directory",
        "bridge.yaml:3: devices.base.serial.baudrate: expected a number, got 'fast'",
        "bridge.yaml:6: rules[0].parms: unknown key (did you mean 'params'?); expected one of: signal, "
        "params, send, max_age_ms, watchdog, ack, from_roles, from_data, allow_rest, rate_limit",
        "bridge.yaml:7: rules[0].send.device: unknown device 'bsae' (known: base)",
        "bridge.yaml:7: rules[0].send.line: template 'M {x}': {x} is not a declared param (declared: none)",
        "bridge.yaml: 5 errors",
    ]


def test_missing_variable_and_missing_file_exit_2(tmp_path: Path) -> None:
    out = check("config/demo.yaml")
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == ("config/demo.yaml:9: session.url: environment variable "
                                          "'SIGBRIDGE_URL' is not set (set it, or give a default: "
                                          "${SIGBRIDGE_URL:-...})")
    assert out.stderr.splitlines()[-1] == "config/demo.yaml: 4 errors"
    missing = tmp_path / "nope.yaml"
    out = check(missing)
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == f"{missing}: cannot read the config: No such file or directory"
