"""Applications in hub.yaml and the state dir: what loads, and the clear errors for what does not
(`sigbridge hub` exits 2 naming the file), and `sigbridge app create` never overwriting a key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridge.config.hub import HubConfigError, load_hub_config

ENV = {"SIGBRIDGE_API_KEY": "12345678", "SIGBRIDGE_API_SECRET": "s" * 40}
APP = "0b6ac3c4-8a4e-4f39-9d8e-0d5b4b7f3e21"


def _pem(tmp: Path, name: str, key: object) -> Path:
    path = tmp / name
    path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))  # type: ignore[attr-defined]
    return path


def test_applications_from_hub_yaml_and_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "applications").mkdir(parents=True)
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _pem(state / "applications", "second-app.pem", second)
    pem = _pem(tmp_path, "a.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    (tmp_path / "hub.yaml").write_text(f"applications: {{{APP}: {pem}}}\n")
    c = load_hub_config(str(tmp_path / "hub.yaml"), state_dir=str(state), env=ENV)
    assert sorted(a.id for a in c.applications) == sorted([APP, "second-app"])
    assert "PUBLIC" not in repr(c)  # keys stay out of repr, as the secret does


@pytest.mark.parametrize(("yaml_text", "words"), [
    ("applications: [a]\n", "map application ids"),
    ("applications: {'bad id': <pem>}\n", "application id"),
    ("applications: {'12345678': <pem>}\n", "not the API key"),
    ("applications: {x: /nonexistent.pem}\n", "cannot read"),
    ("applications: {x: <junk>}\n", "not a PEM public key"),
    ("applications: {x: <ec>}\n", "RSA public key"),
    ("applications: {x: <small>}\n", "2048"),
])
def test_bad_applications_are_clear_config_errors(tmp_path: Path, yaml_text: str, words: str) -> None:
    pem = _pem(tmp_path, "a.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_pem = _pem(tmp_path, "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    small = _pem(tmp_path, "small.pem", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    (tmp_path / "junk.pem").write_text("not a key")
    cfg = tmp_path / "hub.yaml"
    files = {"<pem>": pem, "<ec>": ec_pem, "<small>": small, "<junk>": tmp_path / "junk.pem"}
    for name, path in files.items():
        yaml_text = yaml_text.replace(name, str(path))
    cfg.write_text(yaml_text)
    with pytest.raises(HubConfigError) as e:
        load_hub_config(str(cfg), state_dir=str(tmp_path / "state"), env=ENV)
    assert words in str(e.value), str(e.value)
    out = subprocess.run([sys.executable, "-m", "bridge", "hub", "-c", str(cfg), "--state-dir",
                          str(tmp_path / "state"), "--listen", "127.0.0.1:0"], env={**os.environ, **ENV},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr


def test_the_same_application_twice_is_an_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "applications").mkdir(parents=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _pem(state / "applications", f"{APP}.pem", key)
    (tmp_path / "hub.yaml").write_text(f"applications: {{{APP}: {_pem(tmp_path, 'a.pem', key)}}}\n")
    with pytest.raises(HubConfigError) as e:
        load_hub_config(str(tmp_path / "hub.yaml"), state_dir=str(state), env=ENV)
    assert "also in" in str(e.value)


def test_app_create_never_overwrites_a_private_key(tmp_path: Path) -> None:
    key = tmp_path / "mine.key"
    key.write_text("precious")
    out = subprocess.run([sys.executable, "-m", "bridge", "app", "create", "--state-dir", str(tmp_path / "s"),
                          "--private-key", str(key)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "exists already" in out.stderr and out.stdout == ""
    assert key.read_text() == "precious"
    assert not list((tmp_path / "s" / "applications").glob("*.pem"))  # no orphan public key
