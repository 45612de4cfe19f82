"""The bridge config's own sections: ``session:`` (also camera.yaml's), ``devices:``, ``audit:`` and
``metrics:``, read by their `bridge.config.keys` blocks; the rules, telemetry, safety and control sections
are `bridge.config.rules`. Every problem goes to the shared `Reader` with its line and key path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bridge.config import keys
from bridge.config.frames import read_frame
from bridge.config.rules import Sections
from bridge.config.schema import Nested, mapping, read_fields
from bridge.config.tree import Reader, join
from bridge.core.model import (
    Audit,
    BridgeConfig,
    Control,
    Device,
    EmbeddedSession,
    Heartbeat,
    Metrics,
    MqttDeviceConfig,
    SerialDeviceConfig,
    SessionSettings,
)

_DEVICE_NAME = re.compile(r"[A-Za-z0-9_-]+")


class BridgeBuilder:
    """Builds one BridgeConfig from the root node; every problem goes to ``reader.issues``."""

    def __init__(self, reader: Reader, base: Path) -> None:
        self.r = reader
        self.base = base
        self.checks = Sections(reader)

    def build(self, root: yaml.Node) -> BridgeConfig | None:
        top = mapping(self.r, root, "", keys.TOP)
        if top is None:
            return None
        session = self.session(top["session"]) if "session" in top else None
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

    def session(self, node: yaml.Node) -> SessionSettings | None:
        path = "session"
        m = mapping(self.r, node, path, keys.SESSION)
        if m is None:
            return None
        got = self._embedded(m, node)
        if got is False:
            return None
        embedded = got if isinstance(got, EmbeddedSession) else None
        urls: tuple[str, ...] | None = ("",) if embedded is not None else \
            self._urls(m["url"]) if "url" in m else None
        if urls is None and "url" not in m:
            self.r.error(node, "session", "give url (join a hub) or embedded (host the session here)")
        session_id = self.r.string(m["session_id"], "session.session_id") if "session_id" in m else None
        token = "" if embedded is not None else self._token(m, node)
        timing = self._session_timing(m)
        pace = self._signal_rate(m["signal_rate"]) if "signal_rate" in m else (None, None)
        if urls is None or session_id is None or token is None or timing is None or pace is None:
            return None
        defaults = SessionSettings("", "", "")
        return SessionSettings(url=urls[0], urls=urls if embedded is None else (), session_id=session_id,
                               token=token,
                               keepalive_ms=timing[0], link_timeout_ms=timing[1],
                               signal_rate_hz=pace[0] or defaults.signal_rate_hz,
                               signal_burst=pace[1] or defaults.signal_burst, embedded=embedded)

    def _embedded(self, m: dict[str, yaml.Node], node: yaml.Node) -> EmbeddedSession | bool | None:
        """``session.embedded`` read (paths made relative to the config file), None when absent, False
        when wrong (reported). A remote ``url`` or a token beside it is an error, never a guess: which
        session would the operators be in?"""
        if "embedded" not in m:
            return None
        clash = [k for k in ("url", "token", "token_file") if k in m]
        if clash:
            self.r.error(m[clash[0]], f"session.{clash[0]}",
                         f"session.embedded hosts the session in this bridge: {' and '.join(clash)} "
                         "(a separate hub's) cannot go with it; remove one")
            return False
        e = keys.SESSION.key("embedded").value
        assert isinstance(e, Nested)
        got = e.read(self.r, m["embedded"], "session.embedded")
        if not isinstance(got, EmbeddedSession):
            return False
        _host, sep, port = got.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            self.r.error(m["embedded"], "session.embedded.listen",
                         f"expected HOST:PORT, e.g. 0.0.0.0:8765, got {got.listen!r}")
            return False
        hub = str(self.base / Path(got.hub_config).expanduser()) if got.hub_config else None
        return EmbeddedSession(got.listen, str(self.base / Path(got.state_dir).expanduser()), hub)

    def _urls(self, node: yaml.Node) -> tuple[str, ...] | None:
        """``session.url``: one hub URL or a non-empty list of them, each ws:// or wss:// with a host
        (no repeats, no commas: a comma separates URLs on the command line)."""
        nodes = [(n, join("session.url", i)) for i, n in enumerate(node.value)] \
            if isinstance(node, yaml.SequenceNode) else [(node, "session.url")]
        if not nodes:
            self.r.error(node, "session.url", "expected at least one hub URL")
            return None
        urls: list[str] = []
        for n, path in nodes:
            url = self.r.string(n, path)
            if url is None:
                continue
            try:
                parts = urlsplit(url)
                good = parts.scheme in ("ws", "wss") and bool(parts.hostname) and "," not in url
            except ValueError:      # e.g. an unclosed IPv6 bracket
                good = False
            if not good:
                self.r.error(n, path, f"expected a ws:// or wss:// URL with a host, got {url!r}")
            elif url in urls:
                self.r.error(n, path, f"{url!r} is listed twice")
            else:
                urls.append(url)
        return tuple(urls) if len(urls) == len(nodes) else None

    def _signal_rate(self, node: yaml.Node) -> tuple[float, int | None] | None:
        path = "session.signal_rate"
        m = mapping(self.r, node, path, keys.SIGNAL_RATE)
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
        m = mapping(self.r, node, path, keys.DEVICE)
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
        m = mapping(r, node, path, keys.SERIAL)
        if m is None:
            return None
        kw = read_fields(r, m, path, keys.SERIAL, {"framing": lambda n, p: self._framing(n, p, m)})
        self._ordered(kw, m, path, "reopen_min_s", "reopen_max_s")
        if "port" not in kw or len(kw) < len(m):
            return None
        return SerialDeviceConfig(**kw)

    def _mqtt(self, name: str, node: yaml.Node, path: str) -> MqttDeviceConfig | None:
        r = self.r
        m = mapping(r, node, path, keys.MQTT)
        if m is None:
            return None
        kw = read_fields(r, m, path, keys.MQTT, {"availability_topic": self.checks.publish_topic})
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
        framing = keys.SERIAL.key("framing").value.read(self.r, node, path)
        assert framing is None or isinstance(framing, str)
        if framing == "binary":
            for key in m.keys() & {"newline", "max_line"}:
                self.r.error(m[key], join(path.rsplit(".", 1)[0], key),
                             f"{key!r} does not apply to a device with framing: binary (it has no lines)")
        return framing

    def _heartbeat(self, node: yaml.Node, path: str, kind: str, newline: str) -> Heartbeat | None:
        r = self.r
        own = keys.HEARTBEAT.names_for(kind)
        m = mapping(r, node, path, keys.HEARTBEAT, kind)
        if m is None:
            return None
        kw = read_fields(r, m, path, keys.HEARTBEAT, {
            "line": lambda n, p: self.checks.literal_line(n, p, newline),
            "topic": self.checks.publish_topic,
            "frame": lambda n, p: read_frame(r, n, p, "constant"),
        })
        if len(kw) < len(m) or not set(own[:2]) <= kw.keys():
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
        m = mapping(r, node, "audit", keys.AUDIT)
        if m is None:
            return None
        kw = read_fields(r, m, "audit", keys.AUDIT)
        if "path" not in kw:
            return None
        kw["path"] = str(self.base / Path(str(kw["path"])).expanduser())
        return Audit(**kw)

    def _metrics(self, node: yaml.Node) -> Metrics | None:
        m = mapping(self.r, node, "metrics", keys.METRICS)
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

    def _ordered(self, kw: dict[str, Any], m: dict[str, yaml.Node], path: str, low: str, high: str) -> None:
        if low in kw and high in kw and kw[low] > kw[high]:
            self.r.error(m[low], join(path, low), f"must not exceed {high} ({kw[low]} > {kw[high]})")
            del kw[low]
