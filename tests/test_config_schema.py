"""The one config schema (bridge.config.schema / keys): the docs and JSON Schemas generated from it are
committed up to date, the JSON Schemas accept the shipped examples and refuse what the loader refuses
by shape, every declared key is a field of its model dataclass, hub.yaml reports every error at once,
and `sigbridge check` and `sigbridge run` agree on a tab."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from bridge.config import camera, docs, hub, keys
from bridge.config.hub import HubConfigError, load_hub_config
from bridge.core.model import SerialAction
from bridge.daemon.runner import prepare
from tests.conftest import scaled

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {"bridge": ["bridge.example.yaml", "demo.yaml", "roboclaw.example.yaml"],
            "hub": ["hub.example.yaml"], "camera": ["camera.example.yaml", "demo-camera.yaml"]}


def test_generated_docs_and_schemas_are_committed_up_to_date() -> None:
    assert docs.stale() == [], "run: python -m bridge.config.docs --write"


def test_a_stale_table_is_found(tmp_path: Path) -> None:
    """The staleness check can fail: a hand edit inside a generated table is reported."""
    for path, text in docs.generated().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert docs.stale(tmp_path) == []
    md = tmp_path / docs.CONFIG_MD
    table_row = "| `baudrate` | int > 0 | `115200` |"
    md.write_text(md.read_text().replace(table_row, "| `baudrate` | int | `9600` |"))
    assert docs.stale(tmp_path) == [docs.CONFIG_MD]


def _schema(name: str) -> dict[str, object]:
    return dict(json.loads((ROOT / "docs" / "schema" / f"{name}.schema.json").read_text()))


@pytest.mark.parametrize("kind,file", [(k, f) for k, files in EXAMPLES.items() for f in files])
def test_the_json_schema_accepts_the_shipped_examples(kind: str, file: str) -> None:
    schema = _schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((ROOT / "config" / file).read_text()), schema)


@pytest.mark.parametrize("kind,doc", [
    ("bridge", {"session": {"url": "ws://h", "session_id": "s", "token": "t"}, "devices": {"b": {"serial": {
        "port": "/dev/x", "baudrat": 9600}}}}),                                     # a typo'd key
    ("bridge", {"session": {"url": "ws://h", "session_id": "s", "token": "t"}, "devices": {"b": {"serial": {
        "port": "/dev/x"}}}, "rules": [{"signal": "a", "send": {"device": "b", "line": "x",
                                                                   "retain": True}}]}),
    ("bridge", {"devices": {"b": {"serial": {"port": "/dev/x"}}}}),                 # no session
    ("hub", {"max_connections": -1}),
    ("camera", {"session": {"url": "ws://h", "session_id": "s", "token": "t"}, "camera": {"source": "usb"}}),
])
def test_the_json_schema_refuses_what_the_loader_refuses_by_shape(kind: str, doc: object) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, _schema(kind))


def test_every_declared_key_is_a_field_of_its_model() -> None:
    """Keys are declared once; a block tied to a dataclass takes its defaults from the field of the same
    name, so a key that is no field (beside the YAML-only ones) would lose its default silently."""
    blocks = [*keys.BLOCKS.values(), *camera.BLOCKS.values(), hub.TOP]
    for block in blocks:
        if block.model is None:
            continue
        fields = {f.name for f in dataclasses.fields(block.model)}
        extra = keys.YAML_ONLY.get(block.path, set()) | {"max", "listen", "tls", "applications"}
        assert {k.name for k in block.keys} - fields - extra == set(), block.path


def test_hub_yaml_reports_every_error_at_once_with_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "hub.yaml"
    cfg.write_text("listen: nowhere\nresume_buffer: 1.5\nrate_limit: {per_second: -1, burts: 3}\n"
                   "tls: {cert: /c.pem}\nmax_connections: ${NOT_SET}\nallowed_origins: https://a\n")
    with pytest.raises(HubConfigError) as e:
        load_hub_config(str(cfg), env={}, state_dir=str(tmp_path / "state"))
    assert str(e.value).splitlines() == [
        f"{cfg}:1: listen: expected HOST:PORT, e.g. 127.0.0.1:8765, got 'nowhere'",
        f"{cfg}:2: resume_buffer: expected an integer, got 1.5",
        f"{cfg}:3: rate_limit.burts: unknown key (did you mean 'burst'?); expected one of: per_second, burst",
        f"{cfg}:3: rate_limit.per_second: must be at least 0, got -1",
        f"{cfg}:4: tls: tls needs both 'cert' and 'key' (PEM file paths)",
        f"{cfg}:5: max_connections: environment variable 'NOT_SET' is not set (set it, or give a default: "
        "${NOT_SET:-...})",
        f"{cfg}:6: allowed_origins: expected a list, got a string 'https://a'",
    ]
    assert not (tmp_path / "state").exists()      # nothing generated for a file that is refused


def test_hub_yaml_takes_variables_and_an_empty_file(tmp_path: Path) -> None:
    cfg = tmp_path / "hub.yaml"
    cfg.write_text("# nothing set\n")
    env = {"SIGBRIDGE_API_KEY": "k", "SIGBRIDGE_API_SECRET": "s"}
    assert load_hub_config(str(cfg), env=env).port == 8765
    cfg.write_text("max_connections: ${MAX:-12}\nlisten: ${LISTEN}\n")
    c = load_hub_config(str(cfg), env={**env, "LISTEN": "0.0.0.0:9"})
    assert (c.max_connections, c.host, c.port) == (12, "0.0.0.0", 9)


# ---------------------------------------------------------------- a tab: check and run agree


_TAB = ("session: {url: ws://127.0.0.1:9, session_id: s, token: t}\n"
        "devices: {base: {serial: {port: /dev/null}}}\n"
        "rules:\n  - {signal: robot.say, params: {t: {type: string, enum: [hi]}}, "
        "send: {device: base, line: \"SAY\\t{t}\"%s}}\n"
        "safety: {on_shutdown: {device: base, line: \"S\\t0\"%s}}\n")


def _sigbridge(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, env=env,
                          timeout=scaled(60))


def test_a_tab_is_refused_by_check_and_by_run_alike(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(_TAB % ("", ""))
    checked, ran = _sigbridge("check", "-c", str(path)), _sigbridge("run", "-c", str(path))
    assert (checked.returncode, ran.returncode) == (2, 2), ran.stderr
    assert "Traceback" not in checked.stderr + ran.stderr
    errors = [f"{path}:4: rules[0].send.line: a line cannot hold control characters (found U+0009) "
              "(a tab needs allow_tab: true on this action): 'SAY\\t{t}'",
              f"{path}:5: safety.on_shutdown.line: a line cannot hold control characters (found U+0009) "
              "(a tab needs allow_tab: true on this action): 'S\\t0'"]
    assert checked.stderr.splitlines() == [*errors, f"{path}: 2 errors"]
    assert ran.stderr.splitlines()[-3:] == [*errors, f"{path}: 2 errors; not starting"]


def test_a_tab_allowed_by_the_action_is_accepted_by_check_and_run_alike(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(_TAB % ((", allow_tab: true",) * 2))
    checked = _sigbridge("check", "-c", str(path))
    assert checked.returncode == 0, checked.stderr
    daemon = prepare(str(path))          # what `sigbridge run` does before its event loop
    assert daemon is not None
    assert daemon.config.rules[0].send[0] == SerialAction("base", "SAY\t{t}", allow_tab=True)
