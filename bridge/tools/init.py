"""`sigbridge init`: the first-run wizard for the robot's computer.

It finds what it can (serial ports under ``/dev/serial/by-id``, a local MQTT broker answering an MQTT
CONNECT on 127.0.0.1:1883), asks for the rest (hub URL, session id, token) unless ``--yes``, and writes:

- ``DIR/bridge.yaml``: the session, one device per port/broker and a starter rule set (move with a
  watchdog, stop, e-stop) - loaded with the same code as ``sigbridge check`` before anything is
  written, so it always passes ``check``;
- ``DIR/token`` (mode 0600, owned by the ``sigbridge`` user when it exists and init runs as root): a
  token whose role can send signals (publisher or moderator) and whose data marks a bridge
  (``bridge:NAME``, what consoles trust) - given (checked) or minted with ``--mint``;
- the systemd unit (``config/systemd/sigbridge.service`` with this ExecStart), printed, or written with
  ``--install``.

Exit 0 when done; 1 when a file exists (without ``--force``) or an answer is missing/invalid; 2 when the
written config would not pass ``check`` (a bug: nothing is written then).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import pwd
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bridge.config import load_config
from bridge.config.tree import ConfigError
from bridge.core.signal import is_bridge_data
from bridge.core.tokens import MAX_TOKEN_TTL_S, mint_client_token

#: Where udev puts stable serial port names (env SIGBRIDGE_SERIAL_BY_ID overrides it, for other layouts).
BY_ID = "/dev/serial/by-id"
UNIT = Path(__file__).resolve().parent.parent.parent / "config" / "systemd" / "sigbridge.service"
SENDING_ROLES = ("publisher", "moderator")


class InitError(Exception):
    """A missing or invalid answer (said to the user, exit 1)."""


def init_main(args: argparse.Namespace) -> int:
    try:
        return _init(args)
    except InitError as e:
        print(f"sigbridge init: {e}", file=sys.stderr)
        return 1


def _init(args: argparse.Namespace) -> int:
    ask = Asker(interactive=not args.yes)
    out = Path(args.dir)
    config_path, token_path = out / "bridge.yaml", out / "token"
    for path in (config_path, token_path):
        if path.exists() and not args.force:
            raise InitError(f"{path} exists (use --force to overwrite)")
    ports = _serial_ports(args, ask)
    broker = _broker(args, ask)
    if not ports and broker is None:
        raise InitError("no device: give --serial PORT and/or --mqtt HOST:PORT")
    url = args.url or os.environ.get("SIGBRIDGE_URL") or ask.text(
        "hub URL (ws://HOST:8765, or wss:// with TLS)", None)
    if not url.startswith(("ws://", "wss://")):
        raise InitError(f"hub URL must start with ws:// or wss://, got {url!r}")
    session = args.session or os.environ.get("SIGBRIDGE_SESSION") or ask.text(
        "session id (from whoever runs the hub: 'sigbridge token SESSION' there, or POST /session/create)",
        None)
    token = _token(args, ask, session)

    text = bridge_yaml(url, session, token_path.resolve(), ports, args.baudrate, broker)
    out.mkdir(parents=True, exist_ok=True)
    # The token first: the config check reads its token_file. A config that fails takes it back.
    _write(token_path, token + "\n", 0o600, args.force)
    try:
        _check(text, config_path)
    except BaseException:
        token_path.unlink()
        raise
    _write(config_path, text, 0o644, args.force)
    owner = _give_to_service_user(token_path)
    print(f"wrote {config_path} (passes sigbridge check)")
    print(f"wrote {token_path} (mode 0600{', owner ' + owner if owner else ''}; "
          f"{describe_token(token)})")
    print(f"try it without hardware: sigbridge try -c {config_path} robot.move '{{\"x\": 0.2, \"y\": 0}}'")
    unit = unit_text(config_path.resolve())
    if args.install:
        unit_path = Path(args.unit_dir) / "sigbridge.service"
        _write(unit_path, unit, 0o644, True)
        print(f"wrote {unit_path}; start it with: "
              "systemctl daemon-reload && systemctl enable --now sigbridge")
    else:
        print("systemd unit (sigbridge init --install writes it):")
        print(unit, end="")
    return 0


class Asker:
    """Questions on stdout, answers from stdin (a terminal or a pipe); with interactive False every
    question without a default is an InitError."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def text(self, question: str, default: str | None) -> str:
        if not self.interactive:
            if default is None:
                raise InitError(f"no answer for: {question} (give its flag, or run without --yes)")
            return default
        print(f"{question}{f' [{default}]' if default else ''}: ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            raise InitError(f"no answer for: {question} (end of input)")
        answer = line.strip() or default
        if not answer:
            raise InitError(f"no answer for: {question}")
        return answer


def _serial_ports(args: argparse.Namespace, ask: Asker) -> list[str]:
    if args.serial:
        return [] if args.serial == ["none"] else list(args.serial)
    by_id = Path(os.environ.get("SIGBRIDGE_SERIAL_BY_ID", BY_ID))
    found = sorted(str(p) for p in by_id.iterdir()) if by_id.is_dir() else []
    if not ask.interactive:
        return found[:1]
    if found:
        print("serial ports found:")
        for n, port in enumerate(found, 1):
            print(f"  {n}) {port}")
    else:
        print(f"no serial port under {by_id} (plug the adapter in, or type a path such as /dev/ttyAMA0)")
    answer = ask.text("serial port to drive (a number, a path, or none)", "1" if found else "none")
    if answer == "none":
        return []
    if answer.isdigit():
        if not 1 <= int(answer) <= len(found):
            raise InitError(f"no port number {answer}")
        return [found[int(answer) - 1]]
    return [answer]


def _broker(args: argparse.Namespace, ask: Asker) -> tuple[str, int] | None:
    if args.mqtt == "none":
        return None
    host, port = _host_port(args.mqtt or "127.0.0.1:1883")
    answering = probe_mqtt(host, port)
    if args.mqtt:
        if not answering:
            print(f"note: no MQTT broker answers on {host}:{port} now (the bridge retries until one does)")
        return host, port
    if not answering:
        print(f"no MQTT broker answers on {host}:{port} (give --mqtt HOST:PORT to use one elsewhere)")
        return None
    drive = ask.text(f"an MQTT broker answers on {host}:{port}; drive devices through it? (y/n)", "y")
    return (host, port) if drive.lower().startswith("y") else None


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InitError(f"--mqtt wants HOST:PORT, got {text!r}")
    return host, int(port)


def probe_mqtt(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when an MQTT broker accepts a clean MQTT 3.1.1 CONNECT (answers CONNACK 0)."""
    client_id = b"sigbridge-init"
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(bytes([0x10, len(body)]) + body)
            answer = s.recv(4)
            s.sendall(b"\xe0\x00")    # DISCONNECT
    except OSError:
        return False
    return len(answer) == 4 and answer[0] == 0x20 and answer[3] == 0


def _token(args: argparse.Namespace, ask: Asker, session: str) -> str:
    if args.mint:
        from bridge.config.hub import HubConfigError, load_hub_config
        try:
            cfg = load_hub_config(None, state_dir=args.state_dir, create_credentials=False)
        except HubConfigError as e:
            raise InitError(f"--mint: {e}") from None
        return mint_client_token(api_key=cfg.api_key, api_secret=cfg.api_secret, session_id=session,
                                 role="publisher", data=f"bridge:{args.name}", ttl_s=MAX_TOKEN_TTL_S,
                                 now=time.time())
    token = args.token or os.environ.get("SIGBRIDGE_TOKEN") or ask.text(
        f"the bridge's token (on the hub: sigbridge token {session} --bridge {args.name}), or run "
        "init with --mint", None)
    claims = token_claims(token)
    if claims is not None:
        problems = []
        if claims.get("role") not in SENDING_ROLES:
            problems.append(f"its role is {claims.get('role')!r}: the bridge needs publisher or moderator "
                            "to send signals")
        if claims.get("session_id") not in (None, session):
            problems.append(f"it is for session {claims.get('session_id')!r}, not {session!r}")
        if not is_bridge_data(str(claims.get("connection_data", ""))):
            problems.append("its connection data is not bridge or bridge:NAME, so consoles would ignore "
                            "the robot (mint it with --bridge NAME)")
        if problems:
            raise InitError("this token cannot serve the bridge: " + "; ".join(problems))
    return token


def token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without verifying it (only the hub can), or None when not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def describe_token(token: str) -> str:
    claims = token_claims(token)
    if claims is None:
        return "not a JWT: its role could not be checked"
    expires = time.strftime("%Y-%m-%d", time.gmtime(int(claims.get("exp", 0))))
    return f"role {claims.get('role')}, data {claims.get('connection_data', '')!r}, expires {expires}"


def bridge_yaml(url: str, session: str, token_file: Path, ports: list[str], baudrate: int,
                broker: tuple[str, int] | None) -> str:
    """The starter config. Names: the first serial device is ``base`` (the rover's), then ``serial2``..."""
    q = json.dumps   # JSON strings are YAML strings: any path or URL is quoted safely
    lines = ["# Written by sigbridge init. Reference: docs/config.md; try changes with sigbridge try/replay.",
             f"session: {{url: {q(url)}, session_id: {q(session)}, token_file: {q(str(token_file))}}}",
             "", "devices:"]
    names = ["base" if i == 0 else f"serial{i + 1}" for i in range(len(ports))]
    for name, port in zip(names, ports, strict=True):
        lines.append(f"  {name}:")
        lines.append(f"    serial: {{port: {q(port)}, baudrate: {baudrate}, newline: \"\\n\"}}")
    if broker is not None:
        lines.append("  broker:")
        lines.append(f"    mqtt: {{host: {q(broker[0])}, port: {broker[1]}, client_id: sigbridge}}")
    lines += ["", "rules:"]
    if ports:
        lines += ["  - signal: robot.move",
                  "    params:",
                  "      x: {type: float, min: -1, max: 1, on_range: clamp}",
                  "      y: {type: float, min: -1, max: 1, on_range: clamp}",
                  '    send: {device: base, line: "M {x:.2f} {y:.2f}"}',
                  "    max_age_ms: 500",
                  '    watchdog: {timeout_ms: 500, send: {device: base, line: "M 0 0"}}',
                  "    ack: true",
                  "  - signal: robot.stop",
                  '    send: {device: base, line: "S"}']
    if broker is not None:
        lines += ["  - signal: robot.led",
                  "    params: {on: {type: bool}}",
                  '    send: {device: broker, topic: "robot/led/set", payload: {on: "{on}"}, qos: 1}',
                  "    ack: true",
                  "", "telemetry:",
                  '  - {device: broker, topic: "robot/state/#", signal: robot.state, max_rate_hz: 10}']
    if ports:
        stop = '{device: base, line: "S"}'
        lines += ["", "safety:", f"  on_disconnect: [{stop}]", f"  on_shutdown: [{stop}]",
                  f"  estop: {{signal: robot.estop, reset: robot.estop_reset, send: [{stop}]}}"]
    return "\n".join(lines) + "\n"


def _check(text: str, final: Path) -> None:
    """The config passes ``sigbridge check`` (the same loader) before anything is written."""
    probe = final.with_name(f".{final.name}.init-check")
    probe.write_text(text)
    try:
        load_config(str(probe))
    except ConfigError as e:
        for issue in e.errors:
            print(issue, file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        probe.unlink()


def _write(path: Path, text: str, mode: int, force: bool) -> None:
    """Create ``path`` with ``mode`` from the start (a secret is never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise InitError(f"{path} exists (use --force to overwrite)") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), mode)
        f.write(text)


def _give_to_service_user(path: Path) -> str | None:
    """As root, hand the token to the ``sigbridge`` user the unit runs as (0600 root-owned would be
    unreadable to it). Returns the owner's name when changed."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("sigbridge")
    except KeyError:
        return None
    os.chown(path, user.pw_uid, user.pw_gid)
    return "sigbridge"


def unit_text(config: Path) -> str:
    """The shipped unit with ExecStart pointing at this sigbridge and this config."""
    try:
        shipped = UNIT.read_text()
    except OSError:
        raise InitError(f"the systemd unit template is not installed ({UNIT})") from None
    exe = shutil.which("sigbridge") or str(Path(sys.executable).with_name("sigbridge"))
    lines = [f"ExecStart={exe} run -c {config}" if line.startswith("ExecStart=") else line
             for line in shipped.splitlines()]
    return "\n".join(lines) + "\n"
