"""Bridge configuration: YAML -> the frozen dataclasses of `bridge.core.model`.

Contract: ``load_config(path, environ)`` reads the file once and returns a `BridgeConfig` in which
everything the engine relies on has been checked (devices exist and are of the right kind, templates
name only declared params with specs that fit, regexes compile, ranges are sane, safety signal types are
distinct), or raises `ConfigError` listing *every* problem as ``file:line: key.path: message``.
``check_main(args)`` is ``sigbridge check -c FILE``: exit 0 with a summary, or 2 with the errors on stderr.

The keys are the dataclass field names; docs/config.md is the reference and config/bridge.example.yaml
shows every key. Reading is in `bridge.configtree` (line numbers, typed values, ``${ENV}``); this module
builds session, devices, control and audit; `bridge.configrules` the rules, telemetry and safety sections
and the cross-section checks; `bridge.configcheck` actions, templates, topics and signal types.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bridge.configframes import read_frame
from bridge.configrules import Sections
from bridge.configtree import ConfigError, ConfigIssue, Reader, join
from bridge.core.model import (
    Audit,
    BridgeConfig,
    Control,
    Device,
    Heartbeat,
    Metrics,
    MqttDeviceConfig,
    SerialDeviceConfig,
    SessionSettings,
)

__all__ = ["ConfigError", "ConfigIssue", "MqttDeviceConfig", "SerialDeviceConfig", "check_main",
           "load_config", "summary"]

_TOP_KEYS = ("session", "devices", "rules", "telemetry", "safety", "control", "audit", "metrics")
_DEVICE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> BridgeConfig:
    """Load and validate a bridge config. ``environ`` (default ``os.environ``) feeds ``${NAME}``.
    ``token_file`` and ``ca_file`` are read relative to the config file's folder. Raises ConfigError."""
    reader, root = read_document(path, environ)
    config = None if root is None else _Builder(reader, Path(path).parent).build(root)
    if reader.issues or config is None:
        raise ConfigError(sorted(reader.issues, key=lambda i: i.line or 0))
    _compiles(config)
    return config


def read_document(path: str | Path,
                  environ: Mapping[str, str] | None = None) -> tuple[Reader, yaml.Node | None]:
    """Read and parse a YAML config file (any of the project's: bridge, camera): the Reader that collects
    its issues (``environ``, default ``os.environ``, feeds ``${NAME}``) and its root node, None with an
    issue on a syntax error or an empty file. Raises ConfigError when the file cannot be read at all."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read the config: {reason}")]) from None
    reader = Reader(str(path), os.environ if environ is None else environ)
    return reader, reader.compose(text)


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
    devices = ", ".join(f"{d.name} ({d.kind}{_framing(d)}: {d.serial.port if d.serial else _mqtt_where(d)})"
                        for d in config.devices.values())
    safety = config.safety
    lines = [
        f"{config.source}: OK",
        f"  session: {config.session.url} session {config.session.session_id}",
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


class _Builder:
    """Builds one BridgeConfig from the root node; every problem goes to ``reader.issues``."""

    def __init__(self, reader: Reader, base: Path) -> None:
        self.r = reader
        self.base = base
        self.checks = Sections(reader)

    def build(self, root: yaml.Node) -> BridgeConfig | None:
        top = self.r.mapping(root, "", _TOP_KEYS, required=("session", "devices"))
        if top is None:
            return None
        session = self._session(top["session"]) if "session" in top else None
        devices = self._devices(top["devices"]) if "devices" in top else {}
        rules = self.checks.rules(top["rules"]) if "rules" in top else ()
        telemetry = self.checks.telemetry(top["telemetry"]) if "telemetry" in top else ()
        control = self.checks.control(top["control"], rules) if "control" in top else Control()
        safety = self.checks.safety(top["safety"], control) if "safety" in top else None
        audit = self._audit(top["audit"]) if "audit" in top else None
        metrics = self._metrics(top["metrics"]) if "metrics" in top else None
        self.checks.cross_check(control, top.get("control"))
        if session is None or self.r.issues:
            return None
        kw: dict[str, Any] = {"rules": rules, "telemetry": telemetry, "control": control, "audit": audit,
                              "metrics": metrics}
        if safety is not None:
            kw["safety"] = safety
        return BridgeConfig(source=self.r.file, session=session, devices=devices, **kw)

    # ------------------------------------------------------------ session

    def _session(self, node: yaml.Node) -> SessionSettings | None:
        path = "session"
        m = self.r.mapping(node, path, ("url", "session_id", "token", "token_file", "keepalive_ms",
                                        "link_timeout_ms", "signal_rate"), required=("url", "session_id"))
        if m is None:
            return None
        url = self.r.string(m["url"], "session.url") if "url" in m else None
        if url is not None:
            try:
                parts = urlsplit(url)
                good = parts.scheme in ("ws", "wss") and bool(parts.hostname)
            except ValueError:      # e.g. an unclosed IPv6 bracket
                good = False
            if not good:
                self.r.error(m["url"], "session.url",
                             f"expected a ws:// or wss:// URL with a host, got {url!r}")
                url = None
        session_id = self.r.string(m["session_id"], "session.session_id") if "session_id" in m else None
        token = self._token(m, node)
        timing = self._session_timing(m)
        pace = self._signal_rate(m["signal_rate"]) if "signal_rate" in m else (None, None)
        if url is None or session_id is None or token is None or timing is None or pace is None:
            return None
        defaults = SessionSettings("", "", "")
        return SessionSettings(url=url, session_id=session_id, token=token,
                               keepalive_ms=timing[0], link_timeout_ms=timing[1],
                               signal_rate_hz=pace[0] or defaults.signal_rate_hz,
                               signal_burst=pace[1] or defaults.signal_burst)

    def _signal_rate(self, node: yaml.Node) -> tuple[float, int | None] | None:
        path = "session.signal_rate"
        m = self.r.mapping(node, path, ("hz", "burst"), required=("hz",))
        if m is None or "hz" not in m:
            return None
        hz = self.r.number(m["hz"], f"{path}.hz", positive=True)
        burst = self.r.integer(m["burst"], f"{path}.burst", minimum=1) if "burst" in m else None
        if hz is None or ("burst" in m and burst is None):
            return None
        return float(hz), burst if burst is not None else max(1, int(hz))

    def _session_timing(self, m: dict[str, yaml.Node]) -> tuple[int, int] | None:
        defaults = SessionSettings("", "", "")
        keepalive: int | None = defaults.keepalive_ms
        timeout: int | None = defaults.link_timeout_ms
        if "keepalive_ms" in m:
            keepalive = self.r.integer(m["keepalive_ms"], "session.keepalive_ms", minimum=50)
        if "link_timeout_ms" in m:
            timeout = self.r.integer(m["link_timeout_ms"], "session.link_timeout_ms", minimum=100)
        if keepalive is None or timeout is None:
            return None
        if timeout <= keepalive:
            self.r.error(m.get("link_timeout_ms", m.get("keepalive_ms")), "session.link_timeout_ms",
                         f"must be longer than keepalive_ms ({keepalive}), got {timeout}")
            return None
        return keepalive, timeout

    def _token(self, m: dict[str, yaml.Node], node: yaml.Node) -> str | None:
        if ("token" in m) == ("token_file" in m):
            where = m.get("token_file", node)
            self.r.error(where, "session", "give exactly one of token or token_file (token_file keeps "
                                           "the secret out of the config)")
            return None
        if "token" in m:
            return self.r.string(m["token"], "session.token")
        name = self.r.string(m["token_file"], "session.token_file")
        if name is None:
            return None
        file = self.base / Path(name).expanduser()
        try:
            token = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.r.error(m["token_file"], "session.token_file", f"cannot read {str(file)!r}: {reason}")
            return None
        if not token:
            self.r.error(m["token_file"], "session.token_file", f"{str(file)!r} is empty")
            return None
        return token

    # ------------------------------------------------------------ devices

    def _devices(self, node: yaml.Node) -> dict[str, Device]:
        m = self.r.mapping(node, "devices", None)
        if m is None:
            return {}
        if not m:
            self.r.error(node, "devices", "declare at least one device")
        devices: dict[str, Device] = {}
        for name, value in m.items():
            path = join("devices", name)
            if not _DEVICE_NAME.fullmatch(name):
                self.r.error(value, path, "a device name may only hold A-Z a-z 0-9 _ -")
                continue
            device = self._device(name, value, path)
            if device is not None:
                devices[name] = device
        self._unique_endpoints(devices, m)
        return devices

    def _device(self, name: str, node: yaml.Node, path: str) -> Device | None:
        m = self.r.mapping(node, path, ("serial", "mqtt", "heartbeat"))
        if m is None:
            return None
        if ("serial" in m) == ("mqtt" in m):
            self.r.error(node, path, "give exactly one of serial: or mqtt:")
            return None
        kind = "serial" if "serial" in m else "mqtt"
        self.checks.kinds[name] = kind
        serial = self._serial(m["serial"], join(path, "serial")) if kind == "serial" else None
        mqtt = self._mqtt(name, m["mqtt"], join(path, "mqtt")) if kind == "mqtt" else None
        newline = serial.newline if serial is not None else "\n"
        if serial is not None and serial.framing == "binary":
            self.checks.framings[name] = "binary"
            kind = "binary"          # for the heartbeat's keys only: a binary device sends a frame
        heartbeat = (self._heartbeat(m["heartbeat"], join(path, "heartbeat"), kind, newline)
                     if "heartbeat" in m else None)
        if serial is None and mqtt is None:
            return None
        self.checks.newlines[name] = newline
        return Device(name=name, serial=serial, mqtt=mqtt, heartbeat=heartbeat)

    def _serial(self, node: yaml.Node, path: str) -> SerialDeviceConfig | None:
        r = self.r
        m = r.mapping(node, path, ("port", "baudrate", "newline", "max_line", "low_latency",
                                   "reopen_min_s", "reopen_max_s", "framing"), required=("port",))
        if m is None:
            return None
        kw = self._fields(m, path, {
            "port": r.string,
            "baudrate": lambda n, p: r.integer(n, p, positive=True),
            "newline": r.string,
            "max_line": lambda n, p: r.integer(n, p, positive=True),
            "low_latency": r.boolean,
            "reopen_min_s": lambda n, p: r.number(n, p, positive=True),
            "reopen_max_s": lambda n, p: r.number(n, p, positive=True),
            "framing": lambda n, p: self._framing(n, p, m),
        })
        self._ordered(kw, m, path, "reopen_min_s", "reopen_max_s")
        if "port" not in kw or len(kw) < len(m):
            return None
        return SerialDeviceConfig(**kw)

    def _mqtt(self, name: str, node: yaml.Node, path: str) -> MqttDeviceConfig | None:
        r = self.r
        m = r.mapping(node, path, ("host", "port", "client_id", "username", "password", "tls", "ca_file",
                                   "keepalive", "availability_topic", "reconnect_min_s",
                                   "reconnect_max_s"))
        if m is None:
            return None
        kw = self._fields(m, path, {
            "host": r.string,
            "port": lambda n, p: r.integer(n, p, minimum=1, maximum=65535),
            "client_id": r.string,
            "username": r.string,
            "password": lambda n, p: r.string(n, p, allow_empty=True),
            "tls": r.boolean,
            "ca_file": r.string,
            "keepalive": lambda n, p: r.integer(n, p, positive=True, maximum=65535),
            "availability_topic": self.checks.publish_topic,
            "reconnect_min_s": lambda n, p: r.number(n, p, positive=True),
            "reconnect_max_s": lambda n, p: r.number(n, p, positive=True),
        })
        if "password" in kw and "username" not in m:
            r.error(m["password"], join(path, "password"), "a password needs a username")
        if "ca_file" in kw:
            if not kw.get("tls", False):
                r.error(m["ca_file"], join(path, "ca_file"), "ca_file is only used with tls: true")
            ca = self.base / Path(str(kw["ca_file"])).expanduser()
            if not ca.is_file():
                r.error(m["ca_file"], join(path, "ca_file"), f"no such file: {str(ca)!r}")
            kw["ca_file"] = str(ca)
        self._ordered(kw, m, path, "reconnect_min_s", "reconnect_max_s")
        kw.setdefault("client_id", f"sigbridge-{name}")
        if len(kw) - ("client_id" not in m) < len(m):
            return None
        return MqttDeviceConfig(**kw)

    def _framing(self, node: yaml.Node, path: str, m: dict[str, yaml.Node]) -> str | None:
        """``framing: text | binary``; a binary device has no lines, so no newline or max_line."""
        framing = self.r.string(node, path)
        if framing not in (None, "text", "binary"):
            self.r.error(node, path, f"expected text or binary, got {framing!r}")
            return None
        if framing == "binary":
            for key in m.keys() & {"newline", "max_line"}:
                self.r.error(m[key], join(path.rsplit(".", 1)[0], key),
                             f"{key!r} does not apply to a device with framing: binary (it has no lines)")
        return framing

    def _heartbeat(self, node: yaml.Node, path: str, kind: str, newline: str) -> Heartbeat | None:
        r = self.r
        keys = {"serial": ("hz", "line"), "binary": ("hz", "frame")}.get(kind, ("hz", "topic", "payload"))
        m = r.mapping(node, path, keys, required=keys[:2])
        if m is None:
            return None
        kw = self._fields(m, path, {
            "hz": lambda n, p: r.number(n, p, positive=True),
            "line": lambda n, p: self.checks.literal_line(n, p, newline),
            "topic": self.checks.publish_topic,
            "payload": lambda n, p: r.string(n, p, allow_empty=True),
            "frame": lambda n, p: read_frame(r, n, p, "constant"),
        })
        if len(kw) < len(m) or not set(keys[:2]) <= kw.keys():
            return None
        return Heartbeat(**kw)

    def _unique_endpoints(self, devices: dict[str, Device], nodes: dict[str, yaml.Node]) -> None:
        """Two devices on one serial port, or with one MQTT client id on one broker, would fight."""
        seen: dict[object, str] = {}
        for name, device in devices.items():
            key: object = (("serial", device.serial.port) if device.serial is not None else
                           ("mqtt", device.mqtt.host, device.mqtt.port, device.mqtt.client_id)
                           if device.mqtt is not None else None)
            if key in seen:
                what = "serial port" if device.serial is not None else "MQTT client_id on the same broker"
                self.r.error(nodes[name], join("devices", name), f"same {what} as device {seen[key]!r}")
            seen[key] = name

    # ------------------------------------------------------------ control, audit

    def _audit(self, node: yaml.Node) -> Audit | None:
        r = self.r
        m = r.mapping(node, "audit", ("path", "max_bytes", "backups"), required=("path",))
        if m is None:
            return None
        kw = self._fields(m, "audit", {
            "path": r.string,
            "max_bytes": lambda n, p: r.integer(n, p, positive=True),
            "backups": lambda n, p: r.integer(n, p, minimum=0),
        })
        if "path" not in kw:
            return None
        kw["path"] = str(self.base / Path(str(kw["path"])).expanduser())
        return Audit(**kw)

    def _metrics(self, node: yaml.Node) -> Metrics | None:
        m = self.r.mapping(node, "metrics", ("listen",), required=("listen",))
        if m is None or "listen" not in m:
            return None
        text = self.r.string(m["listen"], "metrics.listen")
        if text is None:
            return None
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.r.error(m["listen"], "metrics.listen",
                         f"expected HOST:PORT, e.g. 127.0.0.1:9102, got {text!r}")
            return None
        return Metrics(host.strip("[]"), int(port))

    # ------------------------------------------------------------ helpers

    def _fields(self, m: dict[str, yaml.Node], path: str, readers: dict[str, Any]) -> dict[str, Any]:
        """Read each present key with its reader; keys whose value was bad are left out."""
        out: dict[str, Any] = {}
        for key, read in readers.items():
            if key in m:
                value = read(m[key], join(path, key))
                if value is not None:
                    out[key] = value
        return out

    def _ordered(self, kw: dict[str, Any], m: dict[str, yaml.Node], path: str, low: str, high: str) -> None:
        if low in kw and high in kw and kw[low] > kw[high]:
            self.r.error(m[low], join(path, low), f"must not exceed {high} ({kw[low]} > {kw[high]})")
            del kw[low]
