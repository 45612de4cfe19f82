"""`sigbridge try` and `sigbridge replay` through the real entry point: decisions, exact bytes and
messages, exit statuses; a replay of a real `sigbridge listen` recording gives the very lines the
real bridge wrote to its pty; --expect catches a difference; audit logs replay too."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.cli import SID, Rig, sigbridge, until_others

CONFIG = """\
session: {url: "ws://127.0.0.1:9", session_id: s, token: "t"}
devices:
  base: {serial: {port: "/nonexistent/tty-never-opened", newline: "\\r\\n"}}
  arm: {mqtt: {host: 127.0.0.1, port: 9}}
rules:
  - signal: robot.move
    params: {x: {type: float, min: -1, max: 1, on_range: clamp}, y: {type: float, min: -1, max: 1}}
    send: {device: base, line: "M {x:.2f} {y:.2f}"}
    watchdog: {timeout_ms: 500, send: {device: base, line: "M 0 0"}}
  - signal: robot.say
    params: {text: {type: string, pattern: '.{1,20}'}}
    send: {device: base, line: "SAY {text}"}
  - signal: arm.grip
    params: {force: {type: int, min: 0, max: 100}}
    send: {device: arm, topic: "arm/grip/set", payload: {force: "{force}"}, qos: 1}
    from_roles: [moderator]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG)
    return path


async def test_try_prints_the_exact_bytes_and_exits_0_without_opening_the_port(config: Path) -> None:
    code, out, err = await sigbridge("try", "-c", str(config), "robot.move", '{"x": 3, "y": 0.5}')
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "decision: clamped",
        'values: {"x": 1.0, "y": 0.5} (clamped: x)',
        "write base (serial): 13 bytes",
        "  hex:  4d 20 31 2e 30 30 20 30 2e 35 30 0d 0a",
        "  text: M 1.00 0.50\\r\\n",
    ]


async def test_try_mqtt_as_json_topic_payload_qos_retain(config: Path) -> None:
    code, out, _ = await sigbridge("try", "-c", str(config), "arm.grip", '{"force": 42}', "--json")
    assert code == 0
    report = json.loads(out)
    assert report["decision"] == "applied" and report["values"] == {"force": 42}
    assert report["writes"] == [{"device": "arm", "topic": "arm/grip/set", "payload": '{"force":42}',
                                 "qos": 1, "retain": False}]


@pytest.mark.parametrize(("args", "words"), [
    (["arm.grip", '{"force": 42}', "--role", "publisher"], "decision: unauthorised (role publisher"),
    (["robot.move", '{"x": 0, "y": 0}', "--from-rest"], "decision: unauthorised"),
    (["robot.say", '{"text": "hi\\nFIRE"}'], "decision: rejected (param 'text'"),
    (["robot.move", '{"x": 0, "y": 0, "z": 1}'], "decision: rejected (undeclared param 'z'"),
    (["robot.fly"], "decision: unmatched (no rule matches 'robot.fly'"),
])
async def test_try_refused_exits_1_and_says_why(config: Path, args: list[str], words: str) -> None:
    code, out, _ = await sigbridge("try", "-c", str(config), *args)
    assert code == 1, out
    assert out.startswith(words), out
    assert "nothing would be written" in out


async def test_try_with_a_bad_config_exits_2_with_file_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("on_range: clamp", "on_range: maybe"))
    code, out, err = await sigbridge("try", "-c", str(bad), "robot.move", "{}")
    assert code == 2 and out == "" and f"{bad}:7: rules[0].params.x.on_range" in err


async def test_replay_of_a_listen_recording_writes_what_the_real_bridge_wrote(rig: Rig,
                                                                            tmp_path: Path) -> None:
    recording = tmp_path / "session.jsonl"
    commands = [('{"x": 0.5, "y": 0}', "moderator"), ('{"x": 9, "y": -0.25}', "moderator"),
                ('{"x": 0, "y": 5}', "moderator"), ('{"x": -0.1, "y": 0.1}', "publisher")]
    listen = asyncio.create_task(sigbridge("listen", "--count", str(2 + len(commands) + 1), env=rig.env()))
    async with SessionClient(rig.hub.url, SID, rig.hub.token(SID, "moderator")) as mod, \
            SessionClient(rig.hub.url, SID, rig.hub.token(SID, "publisher")) as pub:
        await until_others(mod, 3)    # the bridge, the listener, pub
        for data, role in commands:
            await (mod if role == "moderator" else pub).signal("robot.move", data)
        await mod.signal("end", "")
        code, out, _ = await listen
    assert code == 0
    recording.write_text(out)
    real = [await rig.pty.read_until(b"\n", scaled(10)) for _ in range(3)]   # one was out of range
    assert real == [b"M 0.50 0.00\n", b"M 1.00 -0.25\n", b"M -0.10 0.10\n"]

    code, out, err = await sigbridge("replay", "-c", str(rig.config), str(recording), "--fast")
    assert code == 0, err
    replayed = [json.loads(line) for line in out.splitlines()]
    assert [(w["device"], w["line"] + "\n") for w in replayed] == [("base", r.decode()) for r in real]
    expect = tmp_path / "expected.jsonl"
    expect.write_text(out)
    assert (await sigbridge("replay", "-c", str(rig.config), str(recording), "--fast",
                            "--expect", str(expect)))[0] == 0
    # A config change that changes a write is caught, naming the first difference.
    changed = tmp_path / "changed.yaml"
    changed.write_text(rig.config.read_text().replace("M {x:.2f} {y:.2f}", "M {x:.1f} {y:.1f}"))
    code, _, err = await sigbridge("replay", "-c", str(changed), str(recording), "--fast",
                                   "--expect", str(expect))
    assert code == 1
    assert 'write 1 differs: expected {"device": "base", "line": "M 0.50 0.00"}, got ' \
           '{"device": "base", "line": "M 0.5 0.0"}' in err


def audit_line(t: float, type_: str, data: str, decision: str, written: list[dict[str, str]]) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
    return json.dumps({"time": stamp, "from": "op", "from_data": "ann", "type": type_, "data": data,
                       "decision": decision, "written": written}) + "\n"


async def test_replay_of_an_audit_log_keeps_time_and_compares_with_its_written(config: Path,
                                                                                tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    t0 = 1_795_000_000.0
    log.write_text(audit_line(t0, "robot.move", '{"x":0.5,"y":0}', "applied",
                              [{"device": "base", "line": "M 0.50 0.00"}])
                   + audit_line(t0 + 0.8, "robot.move", '{"x":0.25,"y":0}', "applied",
                                [{"device": "base", "line": "M 0.25 0.00"}]))
    start = time.monotonic()
    code, out, err = await sigbridge("replay", "-c", str(config), str(log), "--expect", str(log))
    assert code == 0, err
    assert time.monotonic() - start >= 0.8     # original timing: the second signal 0.8 s after the first
    # The watchdog (500 ms) fired in between, and after the last one: timer writes are printed, and
    # not compared with an audit log (which records decisions only).
    assert [(w["t"], w["line"]) for w in map(json.loads, out.splitlines())] == [
        (0.0, "M 0.50 0.00"), (0.5, "M 0 0"), (0.8, "M 0.25 0.00"), (1.3, "M 0 0")]

    log.write_text(log.read_text().replace('"M 0.25 0.00"', '"M 0.30 0.00"'))
    code, _, err = await sigbridge("replay", "-c", str(config), str(log), "--fast", "--expect", str(log))
    assert code == 1 and "write 2 differs" in err


@pytest.mark.parametrize(("line", "words"), [
    ('{"time":"2026-01-01T00:00:00.000Z","from":"op","type":"robot.move","decision":"applied","written":[]}',
     "line 1: an audit record without 'data' cannot be replayed"),
    ("not json", "line 1: not JSON"),
    ('{"type": "robot.move", "data": "{}", "from": "op", "ts": "soon"}', "line 1: expected an integer"),
])
async def test_replay_of_a_bad_recording_exits_2_naming_the_line(config: Path, tmp_path: Path, line: str,
                                                                 words: str) -> None:
    rec = tmp_path / "rec.jsonl"
    rec.write_text(line + "\n")
    code, out, err = await sigbridge("replay", "-c", str(config), str(rec))
    assert (code, out) == (2, "") and words in err, err
