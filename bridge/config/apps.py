"""Vonage-style applications of the hub: an application id and its RSA public key, beside the
project's API key and secret. The ``vonage`` server SDKs sign their REST calls and client tokens with
the application's private key (RS256); the hub only ever holds the public key.

Where they come from (both, merged; the same id twice is an error):

* ``applications: {ID: PUBLIC_KEY_PEM_FILE}`` in hub.yaml;
* ``applications/ID.pem`` in the state directory, written by ``sigbridge app create``.

RS256 needs the ``cryptography`` package: ``pip install 'signal-bridge[apps]'``. It is imported only
when the hub has applications (or ``sigbridge app create`` runs), so a bridge on a Pi never loads it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_NEEDS_CRYPTOGRAPHY = "applications need the 'cryptography' package: pip install 'signal-bridge[apps]'"


class AppError(ValueError):
    """An application's id or key file is unusable; the message names the file."""


@dataclass(frozen=True, slots=True)
class Application:
    """One application: ``public_key`` is a loaded RSA public key; ``source`` the file it came from."""

    id: str
    public_key: Any = field(repr=False, compare=False)
    source: str = ""


def load_public_key(path: Path) -> Any:
    """The RSA public key in the PEM file ``path``; :class:`AppError` when it is not one."""
    try:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        raise AppError(_NEEDS_CRYPTOGRAPHY) from None
    try:
        key = load_pem_public_key(path.read_bytes())
    except OSError as e:
        raise AppError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError:
        raise AppError(f"{path}: not a PEM public key") from None
    if not isinstance(key, RSAPublicKey) or key.key_size < 2048:
        raise AppError(f"{path}: must be an RSA public key of at least 2048 bits (RS256)")
    return key


def load_applications(configured: object, where: str, state_dir: Path, api_key: str,
                      ) -> tuple[Application, ...]:
    """The applications of hub.yaml's ``applications`` mapping and of ``state_dir/applications``."""
    if configured is None:
        configured = {}
    if not isinstance(configured, Mapping) or not all(isinstance(v, str) for v in configured.values()):
        raise AppError(f"{where}: applications must map application ids to public key files (PEM)")
    found: dict[str, Path] = {str(k): Path(v) for k, v in configured.items()}
    app_dir = state_dir / "applications"
    try:
        names = sorted(n for n in os.listdir(app_dir) if n.endswith(".pem")) if app_dir.is_dir() else []
    except OSError as e:  # never skipped in silence: the hub would start without its applications
        raise AppError(f"{app_dir}: cannot read ({e.strerror})") from None
    for pem in (app_dir / n for n in names):
        if pem.stem in found:
            raise AppError(f"{pem}: application {pem.stem} is also in {where}")
        found[pem.stem] = pem
    apps = []
    for app_id, path in found.items():
        if APP_ID.fullmatch(app_id) is None or app_id == api_key:
            raise AppError(f"{where}: application id {app_id!r} must be 1-64 letters, digits and '-' "
                           "(a UUID), and not the API key")
        apps.append(Application(app_id, load_public_key(path), str(path)))
    return tuple(apps)


def create_application(state_dir: Path, private_key: Path | None = None) -> tuple[str, Path, Path]:
    """Generate an RSA-2048 key pair for a new application: the public key goes to
    ``state_dir/applications/ID.pem``, the private key to ``private_key`` (default ``./ID.key``),
    created 0600 and never overwritten. Returns (id, public key path, private key path)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise AppError(_NEEDS_CRYPTOGRAPHY) from None
    app_id = str(uuid.uuid4())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path = private_key or Path(f"{app_id}.key")
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    app_dir = state_dir / "applications"
    # 0755: public keys only, and readable by the hub's user when another one (root) runs this.
    app_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    public_path = app_dir / f"{app_id}.pem"
    _write_new(private_path, private_pem, 0o600)  # first: a failure here leaves no orphan public key
    _write_new(public_path, public_pem, 0o644)
    return app_id, public_path, private_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        # O_EXCL + the mode from the start: never readable by others, never over an existing file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise AppError(f"{path}: exists already (not overwritten)") from None
    except OSError as e:
        raise AppError(f"{path}: cannot create ({e.strerror})") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def app_main(args: argparse.Namespace) -> int:
    """``sigbridge app create``: print only the new application id on stdout (errors: exit 2)."""
    from bridge.config.hub import default_state_dir

    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir(os.environ)
    try:
        app_id, public, private = create_application(state_dir, Path(args.private_key)
                                                     if args.private_key else None)
    except AppError as e:
        print(f"sigbridge app: {e}", file=sys.stderr)
        return 2
    print(f"sigbridge app: public key {public} (the hub reads it at start), private key {private} "
          "(mode 0600: give it to your application server, the hub never needs it)", file=sys.stderr)
    print(app_id)
    return 0
