"""Bridge configuration: YAML -> the frozen dataclasses of `bridge.core.model`.

Contract: ``load_config(path, environ)`` reads the file once and returns a `BridgeConfig` in which
everything the engine relies on has been checked (devices exist and are of the right kind, templates
name only declared params with specs that fit, regexes compile, ranges are sane, safety signal types are
distinct), or raises `ConfigError` listing *every* problem as ``file:line: key.path: message``.
``check_main(args)`` is ``sigbridge check -c FILE``: exit 0 with a summary, or 2 with the errors on stderr.

Every key is declared once in `bridge.config.keys` (docs/config.md's tables and the JSON Schema are
generated from it). Reading is in `bridge.config.tree` (line numbers, typed values, ``${ENV}``);
`bridge.config.bridge` builds session, devices, audit and metrics; `bridge.config.rules` the rules,
telemetry, safety and control sections and the cross-section checks; `bridge.config.checks` actions,
templates, topics and signal types; then the engine compiles the result as `sigbridge run` will.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from bridge.config.bridge import BridgeBuilder
from bridge.config.tree import ConfigError, ConfigIssue, Reader
from bridge.core.model import BridgeConfig, Device

__all__ = ["ConfigError", "ConfigIssue", "check_main", "load_config", "load_or_report", "read_document",
           "summary"]


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> BridgeConfig:
    """Load and validate a bridge config. ``environ`` (default ``os.environ``) feeds ``${NAME}``.
    ``token_file`` and ``ca_file`` are read relative to the config file's folder. Raises ConfigError."""
    reader, root = read_document(path, environ)
    config = None if root is None else BridgeBuilder(reader, Path(path).parent).build(root)
    if reader.issues or config is None:
        raise ConfigError(sorted(reader.issues, key=lambda i: i.line or 0))
    _compiles(config)
    return config


def read_document(path: str | Path, environ: Mapping[str, str] | None = None, *,
                  empty_ok: bool = False) -> tuple[Reader, yaml.Node | None]:
    """Read and parse a YAML config file (any of the project's: bridge, camera): the Reader that collects
    its issues (``environ``, default ``os.environ``, feeds ``${NAME}``) and its root node, None with an
    issue on a syntax error or an empty file (``empty_ok``: None and no issue for an empty one).
    Raises ConfigError when the file cannot be read at all."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read the config: {reason}")]) from None
    reader = Reader(str(path), os.environ if environ is None else environ)
    return reader, reader.compose(text, empty_ok=empty_ok)


def _compiles(config: BridgeConfig) -> None:
    """Build the engine from ``config`` exactly as `sigbridge run` (and a reload) will: the last step
    of every load, so that what `sigbridge check` accepts the daemon starts with. The checks above
    report problems with their line; this only catches what they missed (a bug), still as an error
    and never as a traceback."""
    from bridge.core.engine import Engine  # the engine imports the model only; kept out of --help

    try:
        Engine(config)
    except Exception as exc:
        raise ConfigError([ConfigIssue(config.source, 1, "",
                                       f"the engine cannot use this config: {type(exc).__name__}: {exc}")],
                          ) from None


def load_or_report(path: str, *, consequence: str = "") -> BridgeConfig | None:
    """``load_config(path)``, or None after printing every error and a count line (ending with
    ``consequence``, e.g. "; not starting") on stderr. Shared by `sigbridge check` and `sigbridge run`
    so that both report a bad file the same way."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.errors:
            print(issue, file=sys.stderr)
        n = len(exc.errors)
        print(f"{path}: {n} error{'s' if n != 1 else ''}{consequence}", file=sys.stderr)
        return None


def check_main(args: argparse.Namespace) -> int:
    """``sigbridge check -c FILE``: 0 and a short summary on stdout, or 2 and every error on stderr."""
    config = load_or_report(args.config)
    if config is None:
        return 2
    print(summary(config))
    return 0


def summary(config: BridgeConfig) -> str:
    """A few lines describing a loaded config (what `sigbridge check` prints)."""
    e = config.session.embedded
    where = ", ".join(config.session.hub_urls) if e is None else f"hosted here (embedded) on {e.listen}"
    devices = ", ".join(f"{d.name} ({d.kind}{_framing(d)}: {d.serial.port if d.serial else _mqtt_where(d)})"
                        for d in config.devices.values())
    safety = config.safety
    lines = [
        f"{config.source}: OK",
        f"  session: {where} session {config.session.session_id}",
        f"  devices: {devices}",
        f"  rules: {len(config.rules)} ({', '.join(r.signal for r in config.rules) or 'none'})",
        f"  telemetry: {len(config.telemetry)} stream(s) "
        f"({', '.join(t.signal for t in config.telemetry) or 'none'})",
        f"  safety: on_disconnect {len(safety.on_disconnect)}, on_controller_lost "
        f"{len(safety.on_controller_lost)}, on_shutdown {len(safety.on_shutdown)} action(s); "
        f"estop {safety.estop.signal + '/' + safety.estop.reset if safety.estop else 'off'}; "
        f"lease {'on' if config.control.lease else 'off'}; "
        f"audit {config.audit.path if config.audit else 'off'}",
    ]
    return "\n".join(lines)


def _framing(device: Device) -> str:
    return ", binary frames" if device.serial is not None and device.serial.framing == "binary" else ""


def _mqtt_where(device: Device) -> str:
    assert device.mqtt is not None
    return f"{device.mqtt.host}:{device.mqtt.port}"


