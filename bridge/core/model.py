"""The bridge configuration as frozen dataclasses: what `bridge.config` builds from YAML and what the
engine (`bridge.core.engine`) runs. Pure data: no YAML, no I/O. Every value here has been validated by
the loader, so the engine may trust it (templates name only declared params, devices exist, ...).

The YAML keys are the field names; see config/bridge.example.yaml and docs/config.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ParamType = Literal["int", "float", "bool", "string"]
RangePolicy = Literal["reject", "clamp"]
Scalar = int | float | bool | str


# ---------------------------------------------------------------- session


@dataclass(frozen=True, slots=True)
class EmbeddedSession:
    """``session.embedded:`` - the bridge hosts its session itself (one hop for an operator on the LAN):
    the hub's engine in the bridge process, serving the same wire protocol, REST API and console on
    ``listen`` (``HOST:PORT``), with the hub's API credentials in ``state_dir`` (``credentials.json``,
    created on first start; ``sigbridge token --state-dir`` mints against it). ``hub_config``: an
    optional hub.yaml for the rest of the hub's settings (limits, TLS, origins); ``listen`` wins."""

    listen: str = "127.0.0.1:8765"
    state_dir: str = "hub-state"
    hub_config: str | None = None


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """``session:`` - where the bridge joins. ``url`` is the hub's base URL (ws:// or wss://); the client
    appends ``/v1/session/{session_id}``. ``token`` is already resolved from ``token`` / ``token_file``."""

    url: str
    session_id: str
    token: str
    #: How often the bridge pings the hub, and after how much silence it takes its link as lost (and
    #: runs ``safety.on_disconnect``). Lower means a dead network path is noticed sooner.
    keepalive_ms: int = 2000
    link_timeout_ms: int = 6000
    #: The bridge's own pace (``signal_rate: {hz, burst}``): at most this many signals a second, this
    #: many at once. Keep it at or under the hub's per-connection rate limit (the hub's default: 1000/s,
    #: burst 2000) so that acks and status are paced, not refused (see bridge.core.engine.pacing).
    signal_rate_hz: float = 500.0
    signal_burst: int = 1000
    #: Every hub URL of ``session.url`` in order (a fleet sharing sessions); ``url`` is the first.
    #: Empty: ``url`` alone.
    urls: tuple[str, ...] = ()

    #: Set: the bridge hosts the session (``url`` and ``token`` are then unused and empty).
    embedded: EmbeddedSession | None = None

    @property
    def hub_urls(self) -> tuple[str, ...]:
        """The hub URLs to dial, in order (at least one)."""
        return self.urls or (self.url,)


# ---------------------------------------------------------------- binary frames


ByteOrder = Literal["big", "little"]


@dataclass(frozen=True, slots=True)
class FrameField:
    """One field of a binary frame (``bridge.core.engine.frames``), ``type`` one of u8 s8 u16 s16 u32 s32 f32.
    Exactly one role: ``const`` (a fixed value), ``param`` (an action field filled from a declared
    param), ``name`` (a telemetry field; its value times ``scale`` when given) or ``length`` (the number
    of bytes after it up to the checksum, plus ``adjust``)."""

    type: str
    byte_order: ByteOrder = "big"
    const: int | float | None = None
    param: str | None = None
    name: str | None = None
    length: bool = False
    adjust: int = 0
    scale: float | None = None


@dataclass(frozen=True, slots=True)
class Checksum:
    """``kind`` one of ``bridge.core.engine.frames.CHECKSUMS``; it covers ``prefix`` (not on the wire) and the
    frame from byte ``skip`` up to the checksum."""

    kind: str = "none"
    byte_order: ByteOrder = "big"
    skip: int = 0
    prefix: bytes = b""


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """A binary frame: its fields in order, then the checksum."""

    fields: tuple[FrameField, ...]
    checksum: Checksum = Checksum()


# ---------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class SerialDeviceConfig:
    """A serial device. ``port`` is anything pyserial's serial_for_url opens: /dev/tty*,
    /dev/serial/by-id/..., socket://host:port, rfc2217://host:port."""

    port: str
    baudrate: int = 115200
    newline: str = "\n"
    #: Longest accepted incoming line in bytes; longer ones are discarded and counted.
    max_line: int = 1024
    #: Ask the USB adapter for low latency (FTDI buffers 16 ms by default).
    low_latency: bool = True
    reopen_min_s: float = 0.2
    reopen_max_s: float = 5.0
    #: "binary": the device speaks frames (``frame:`` actions and telemetry), not lines.
    framing: Literal["text", "binary"] = "text"


@dataclass(frozen=True, slots=True)
class MqttDeviceConfig:
    """A device reached through an MQTT broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    keepalive: int = 30
    #: Retained online/offline topic with a last will; None -> "sigbridge/{client_id}/availability".
    availability_topic: str | None = None
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``devices.NAME.heartbeat:`` - a keepalive sent to the device at ``hz`` so its firmware can stop by
    itself when the Pi, the daemon or the link dies. Serial devices use ``line`` (binary ones ``frame``,
    a frame without params); MQTT ones ``topic`` + ``payload``."""

    hz: float
    line: str | None = None
    topic: str | None = None
    payload: str = ""
    frame: FrameSpec | None = None


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    serial: SerialDeviceConfig | None = None
    mqtt: MqttDeviceConfig | None = None
    heartbeat: Heartbeat | None = None

    @property
    def kind(self) -> Literal["serial", "mqtt"]:
        return "serial" if self.serial is not None else "mqtt"


# ---------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One declared param of a rule. A string param has ``enum`` or ``pattern`` (a full-match regex).
    ``slew_per_s`` limits how fast a numeric value may change between two applied commands (clamped)."""

    name: str
    type: ParamType
    required: bool = True          # False when a default is given
    default: Scalar | None = None
    min: float | None = None
    max: float | None = None
    on_range: RangePolicy = "reject"
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    slew_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    """Serial only: wait up to ``timeout_ms`` for a reply line fully matching ``pattern``; when ``reply``
    names a signal type, the match (named groups as JSON, else ``{"line": ...}``) is sent back to the
    command's sender as that signal, retry disabled."""

    pattern: str
    timeout_ms: int = 500
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class SerialAction:
    """Write one line (``line`` template + the device's newline) to a serial device. ``allow_tab``: the
    template text may hold tabs (never a param value: see ``bridge.core.controls``). For a device with
    ``framing: binary``, ``frame`` instead (``line`` is then empty)."""

    device: str
    line: str
    expect: Expect | None = None
    allow_tab: bool = False
    frame: FrameSpec | None = None


@dataclass(frozen=True, slots=True)
class MqttAction:
    """Publish to an MQTT device. ``payload`` is a template string, or a mapping serialised as JSON in
    which a value that is exactly one ``{param}`` keeps the param's type. Never retained."""

    device: str
    topic: str
    payload: str | dict[str, object] = ""
    qos: int = 0


Action = SerialAction | MqttAction


@dataclass(frozen=True, slots=True)
class Watchdog:
    """Deadman: if the rule's command is not refreshed within ``timeout_ms``, ``send`` runs once."""

    timeout_ms: int
    send: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per rule and per sender: at most ``hz`` commands per second on average, bursts of ``burst``."""

    hz: float
    burst: int = 1


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``rules:`` entry. ``signal`` is an exact type or a glob (``robot.*``); first match wins.

    Authorisation: ``from_roles`` (None = any role allowed to signal), ``from_data`` (a regex searched in
    the sender's connection data), ``allow_rest`` (signals with ``from`` null, sent by a server)."""

    index: int
    signal: str
    params: tuple[ParamSpec, ...] = ()
    send: tuple[Action, ...] = ()
    max_age_ms: int | None = None
    watchdog: Watchdog | None = None
    ack: bool = False
    from_roles: frozenset[str] | None = None
    from_data: str | None = None
    allow_rest: bool = False
    rate_limit: RateLimit | None = None

    @property
    def is_glob(self) -> bool:
        return any(c in self.signal for c in "*?[")


# ---------------------------------------------------------------- telemetry


@dataclass(frozen=True, slots=True)
class TelemetryField:
    """How consoles show one telemetry field (``telemetry[i].fields.NAME``); changes nothing the bridge
    sends. ``unit`` a short label; ``min``/``max`` the plot's fixed scale; ``warn_below``/``warn_above``
    thresholds past which the value is shown as a warning (e.g. a battery low)."""

    unit: str | None = None
    min: float | None = None
    max: float | None = None
    warn_below: float | None = None
    warn_above: float | None = None


@dataclass(frozen=True, slots=True)
class SerialTelemetry:
    """Lines of a serial device fully matching ``match`` become ``signal``; each named group a JSON field
    (a number when it reads as int/float, else a string; ``types`` overrides: int|float|bool|string)."""

    device: str
    match: str
    signal: str
    max_rate_hz: float | None = None
    types: dict[str, ParamType] = field(default_factory=dict)
    fields: dict[str, TelemetryField] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MqttTelemetry:
    """Messages on ``topic`` (a filter, wildcards allowed) become ``signal`` with
    ``{"topic": ..., "payload": <JSON value, or the text>}``."""

    device: str
    topic: str
    signal: str
    max_rate_hz: float | None = None
    fields: dict[str, TelemetryField] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FrameTelemetry:
    """Frames of a binary serial device matching ``frame`` (constants, length and checksum) become
    ``signal`` with one JSON field per named field."""

    device: str
    frame: FrameSpec
    signal: str
    max_rate_hz: float | None = None
    fields: dict[str, TelemetryField] = field(default_factory=dict)


TelemetryStream = SerialTelemetry | MqttTelemetry | FrameTelemetry


# ---------------------------------------------------------------- safety


@dataclass(frozen=True, slots=True)
class Estop:
    """``safety.estop``: ``signal`` runs ``send`` at once and latches; only ``reset`` from one of
    ``reset_roles`` unlatches."""

    signal: str
    reset: str
    send: tuple[Action, ...] = ()
    reset_roles: frozenset[str] = frozenset({"moderator"})


@dataclass(frozen=True, slots=True)
class Safety:
    on_disconnect: tuple[Action, ...] = ()        # the bridge's own session link lost/reconnecting
    on_controller_lost: tuple[Action, ...] = ()   # the lease holder's connection destroyed
    on_shutdown: tuple[Action, ...] = ()          # SIGTERM / systemd stop
    estop: Estop | None = None


@dataclass(frozen=True, slots=True)
class Control:
    """``control:`` - the optional single-driver lease. ``roles``: who may acquire it (None: the roles
    the rules let drive); ``idle_timeout_ms``: the holder loses it after this long without a command."""

    lease: bool = False
    acquire: str = "control.acquire"
    release: str = "control.release"
    roles: frozenset[str] | None = None
    idle_timeout_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class Audit:
    """``audit:`` - JSON-lines log of every command decision, rotated at ``max_bytes``."""

    path: str
    max_bytes: int = 10_000_000
    backups: int = 5


@dataclass(frozen=True, slots=True)
class Metrics:
    """``metrics:`` - serve Prometheus metrics at ``http://HOST:PORT/metrics`` (bridge.adapters.metrics)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    source: str                         # file path, for messages
    session: SessionSettings
    devices: dict[str, Device]
    rules: tuple[Rule, ...] = ()
    telemetry: tuple[TelemetryStream, ...] = ()
    safety: Safety = field(default_factory=Safety)
    control: Control = field(default_factory=Control)
    audit: Audit | None = None
    metrics: Metrics | None = None
