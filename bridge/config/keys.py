"""Every key of bridge.yaml, declared once (`bridge.config.schema`): the loader takes its key lists and
plain values from here, docs/config.md its tables and docs/schema/bridge.schema.json its JSON Schema.
Defaults come from the `bridge.core.model` dataclasses; a test checks that each block's keys are its
dataclass's fields (beside the YAML-only ones named in ``YAML_ONLY``)."""

from __future__ import annotations

from bridge.config.schema import Block, Bool, Choice, Custom, Int, Key, Nested, Num, Str
from bridge.core import model as mdl

_ACTIONS = {"anyOf": [{"$ref": "#/$defs/action"}, {"type": "array", "items": {"$ref": "#/$defs/action"}}]}
_ROLES = {"type": "array", "minItems": 1,
          "items": {"enum": ["moderator", "publisher", "publisheronly", "subscriber"]}}
_RATE = "a stream at or below this rate passes with no added delay (a token bucket: burst 4, refilled 10 % " \
        "faster for jitter and clock drift); a faster one is thinned, latest value wins, never queued " \
        "(`docs/safety.md`)"
_SERIAL, _MQTT, _BINARY = ("serial",), ("mqtt",), ("binary",)
_FRAME = Custom("[frame](#binary-frames)", {"$block": "frame"})
_SIGNAL = Str(text="signal type")

TOP = Block("", (
    Key("session", Custom("mapping", {"$block": "session"}), "where the bridge joins", required=True),
    Key("devices", Custom("mapping NAME -> device", {
        "type": "object", "minProperties": 1, "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
        "additionalProperties": {"$block": "devices.NAME"}}), "the hardware", required=True,
        default="required, at least one"),
    Key("rules", Custom("list of rules", {"type": "array", "items": {"$block": "rules[i]"}}),
        "signal -> device actions; first match wins", default="`[]`"),
    Key("telemetry", Custom("list of streams", {"type": "array", "items": {"$block": "telemetry[i]"}}),
        "device data -> signals", default="`[]`"),
    Key("safety", Custom("mapping", {"$block": "safety"}), "safe actions and the e-stop latch",
        default="none"),
    Key("control", Custom("mapping", {"$block": "control"}), "the single-driver lease", default="lease off"),
    Key("audit", Custom("mapping", {"$block": "audit"}), "JSON-lines log of every command decision",
        default="off"),
    Key("metrics", Custom("mapping", {"$block": "metrics"}), "Prometheus metrics over HTTP", default="off"),
))

EMBEDDED = Block("session.embedded", (
    Key("listen", Str(text="HOST:PORT"), "where the bridge serves its session (WebSocket, REST, console); "
        "`0.0.0.0:8765` for the LAN"),
    Key("state_dir", Str(text="path"), "the hub's state: its API credentials (`credentials.json`, made on "
        "first start, 0600); `sigbridge token --state-dir DIR` mints tokens against it; relative to the "
        "config file"),
    Key("hub_config", Str(text="path"), "a hub.yaml for the hub's other settings (limits, `tls`, "
        "`allowed_origins`); its `listen` is overridden; relative to the config file", default="none"),
), mdl.EmbeddedSession)

SESSION = Block("session", (
    Key("url", Custom("URL or list of URLs", {"anyOf": [
        {"type": "string", "pattern": r"^(wss?://|.*\$\{)"},
        {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^(wss?://|.*\$\{)"}}]}),
        "the hub's base URL, `ws://` or `wss://` with a host; the client appends `/v1/session/{session_id}`. "
        "A list: hubs that share sessions (docs/cluster.md), tried in order; after a drop the bridge resumes "
        "on the next one", default="required unless `embedded`"),
    Key("embedded", Nested(EMBEDDED), "host the session in the bridge itself: operators on the LAN reach "
        "the devices in one hop, no separate hub (`docs/embedded.md`); not with `url`, `token` or "
        "`token_file` (the bridge is admitted by its own credentials)", default="none (join `url`)"),
    Key("session_id", Str(), "the session to join", required=True),
    Key("token", Str(), "the client token (JWT); prefer `${SIGBRIDGE_TOKEN}` or `token_file`",
        default="one of token / token_file (none with `embedded`)"),
    Key("token_file", Str(text="path"), "a file holding the token; read once, surrounding whitespace "
        "stripped; a missing, unreadable or empty file is an error"),
    Key("keepalive_ms", Int(minimum=50), "how often the bridge pings the hub"),
    Key("link_timeout_ms", Int(minimum=100), "silence after which the bridge takes its session link as lost, "
        "runs `safety.on_disconnect` and reconnects; lower it to notice a dead network path sooner (a cut "
        "TCP connection is noticed at once either way)", type_text="int > keepalive_ms"),
    Key("signal_rate", Custom("`{hz: number > 0, burst: int >= 1}`", {"$block": "session.signal_rate"}),
        "the bridge's own pace: at most `hz` signals a second, `burst` at once; lowered on every connect to "
        "90 % of the rate limit the hub announces for its connection (the hub's default: 1000/s, burst "
        "2000), so it need not match it: acks and status then wait for the pace instead of being refused "
        "(429) and lost; telemetry and `bridge.describe` answers yield (dropped, half the burst kept for "
        "acks). See `docs/safety.md`", default="`{hz: 500, burst: 1000}` (burst defaults to hz)"),
), mdl.SessionSettings)

SIGNAL_RATE = Block("session.signal_rate", (
    Key("hz", Num(positive=True), "signals a second", required=True),
    Key("burst", Int(minimum=1), "signals at once", default="hz"),
))

DEVICE = Block("devices.NAME", (
    Key("serial", Custom("mapping", {"$block": "devices.NAME.serial"}), "a serial device",
        default="one of serial / mqtt"),
    Key("mqtt", Custom("mapping", {"$block": "devices.NAME.mqtt"}), "a device behind an MQTT broker"),
    Key("heartbeat", Custom("mapping", {"$block": "devices.NAME.heartbeat"}), "a keepalive to the device",
        default="none"),
), mdl.Device)

SERIAL = Block("devices.NAME.serial", (
    Key("port", Str(), "anything pyserial's `serial_for_url` opens: `/dev/ttyUSB0`, `/dev/serial/by-id/...`, "
        "`socket://host:port`, `rfc2217://host:port`", required=True),
    Key("baudrate", Int(positive=True)),
    Key("newline", Str(), "written after every line; incoming lines are split on it",
        type_text="string, not empty"),
    Key("max_line", Int(positive=True), "longest accepted incoming line in bytes; longer ones are discarded "
        "and counted"),
    Key("low_latency", Bool(), "ask the USB adapter for low latency (FTDI buffers 16 ms by default)"),
    Key("reopen_min_s", Num(positive=True), "backoff between reopen attempts when the port vanishes; "
        "min <= max"),
    Key("reopen_max_s", Num(positive=True), "see `reopen_min_s`"),
    Key("framing", Choice(("text", "binary")), "`binary`: the device speaks [binary frames](#binary-frames), "
        "not lines; its actions, heartbeat and telemetry take `frame:` instead of `line:` / `match:`, and "
        "`newline` / `max_line` do not apply"),
), mdl.SerialDeviceConfig)

MQTT = Block("devices.NAME.mqtt", (
    Key("host", Str(), "broker"),
    Key("port", Int(minimum=1, maximum=65535)),
    Key("client_id", Str(), default="`sigbridge-NAME`"),
    Key("username", Str(), default="none"),
    Key("password", Str(allow_empty=True), "needs `username`", default="none"),
    Key("tls", Bool()),
    Key("ca_file", Str(text="path"), "only with `tls: true`; must exist", default="system CAs"),
    Key("keepalive", Int(positive=True, maximum=65535), "seconds"),
    Key("availability_topic", Custom("topic", {"type": "string", "pattern": "^[^+#]+$"}),
        "retained `online` / `offline` with a last will", default="`sigbridge/CLIENT_ID/availability`"),
    Key("reconnect_min_s", Num(positive=True), "reconnect backoff; min <= max"),
    Key("reconnect_max_s", Num(positive=True), "see `reconnect_min_s`"),
), mdl.MqttDeviceConfig)

HEARTBEAT = Block("devices.NAME.heartbeat", (
    Key("hz", Num(positive=True), required=True),
    Key("line", Custom("string", {"type": "string"}), "a fixed line (not a template)",
        required=True, default="required for serial", kinds=_SERIAL),
    Key("frame", _FRAME, "a frame of constants only (e.g. a status poll)",
        required=True, default="required for `framing: binary`", kinds=_BINARY),
    Key("topic", Custom("topic", {"type": "string", "pattern": "^[^+#]+$"}),
        "where to publish (no wildcards)",
        required=True, default="required for MQTT", kinds=_MQTT),
    Key("payload", Str(allow_empty=True), "MQTT only", kinds=_MQTT),
), mdl.Heartbeat)

RULE = Block("rules[i]", (
    Key("signal", Custom("signal type or glob", {"type": "string"}), "e.g. `robot.move`, `arm.*`",
        required=True),
    Key("params", Custom("mapping NAME -> param", {
        "type": "object", "additionalProperties": {"$block": "rules[i].params.NAME"}}),
        "the keys of the signal's JSON data object; undeclared keys are refused", default="`{}`"),
    Key("send", Custom("action or list of actions", _ACTIONS), "what to write / publish, in order",
        required=True),
    Key("max_age_ms", Int(positive=True), "drop a command older than this (hub timestamp, corrected by the "
        "measured clock offset): nothing stale is replayed after a reconnection; its writes still waiting "
        "in a device link's queue once it is this old are dropped too", default="none"),
    Key("watchdog", Custom("`{timeout_ms, send}`", {"$block": "watchdog"}), "deadman: when the command is "
        "not refreshed within `timeout_ms` (int > 0), `send` (actions, no params) runs once", default="none"),
    Key("ack", Bool(), "answer the sender with a targeted `bridge.ack` signal (`applied`, `clamped`, "
        "`rejected`, ...)"),
    Key("from_roles", Custom("list of roles", _ROLES), "who may send this command",
        default="any role that may signal"),
    Key("from_data", Custom("regex", {"type": "string"}), "searched in the sender's connection data "
        "(e.g. `'operator=\\w+'`)", default="none"),
    Key("allow_rest", Bool(), "accept this command from REST (`from` null, a server)"),
    Key("rate_limit", Custom("`{hz, burst}`", {"$block": "rate_limit"}), "per sender: at most `hz` (> 0) "
        "commands a second on average, bursts of `burst` (int >= 1, default 1). A sender is the token it "
        "joined with (the hub's `token_id`): reconnecting or a fresh connection per command does not "
        "refill it", default="none"),
), mdl.Rule)

PARAM = Block("rules[i].params.NAME", (
    Key("type", Custom("`int` \\| `float` \\| `bool` \\| `string`",
                       {"enum": ["int", "float", "bool", "string"]}),
        "`int` refuses floats and booleans; `float` accepts ints; NaN and infinities are refused",
        required=True),
    Key("default", Custom("value of the type", {"type": ["string", "number", "boolean"]}),
        "makes the param optional; must be of the type and inside `min`/`max`, in `enum`, matching "
        "`pattern`", default="none (param required)"),
    Key("min", Custom("number", {"type": "number"}), "int/float only (integers for an int param); "
        "`min <= max`", default="none"),
    Key("max", Custom("number", {"type": "number"}), "see `min`", default="none"),
    Key("on_range", Custom("`reject` \\| `clamp`", {"enum": ["reject", "clamp"]}), "a value outside "
        "`min`/`max` is refused, or pulled to the bound (ack `clamped`); needs `min` or `max`"),
    Key("enum", Custom("list of strings",
                       {"type": "array", "items": {"type": ["string", "number", "boolean"]}}),
        "string only: the allowed values"),
    Key("pattern", Custom("regex", {"type": "string"}), "string only: the value must match it entirely"),
    Key("slew_per_s", Custom("number > 0", {"type": "number", "exclusiveMinimum": 0}), "int/float only: "
        "largest change per second between two applied commands (clamped)", default="none"),
), mdl.ParamSpec)

ACTION = Block("action", (
    Key("device", Str(text="device name"), "the device (its kind decides the other keys)", required=True),
    Key("line", Custom("template", {"type": "string"}), "the line, without terminator (the device's "
        "`newline` is added)", required=True, kinds=_SERIAL),
    Key("expect", Custom("`{pattern, timeout_ms, reply}`", {"$block": "expect"}), "wait up to `timeout_ms` "
        "(int > 0, default 500) for a reply line fully matching `pattern` (regex); with `reply` (a signal "
        "type) the match (named groups as JSON, else `{\"line\": ...}`) is sent back to the command's sender",
        default="none", kinds=_SERIAL),
    Key("allow_tab", Bool(), "the `line` template's own text may hold tabs (U+0009), for firmware that "
        "separates fields with tabs; a param value still never may", kinds=_SERIAL),
    Key("topic", Custom("template", {"type": "string", "pattern": "^[^+#]+$"}),
        "where to publish (no wildcards)", required=True, kinds=_MQTT),
    Key("payload", Custom("template string, or mapping", {"type": ["string", "object", "number", "boolean"]}),
        "a mapping is sent as compact JSON; a value that is exactly `\"{param}\"` keeps the param's JSON "
        "type, "
        "other strings are templates, other values are kept (at most 2000 values, 32 levels)", default='`""`',
        kinds=_MQTT),
    Key("qos", Int(minimum=0, maximum=2), type_text="0, 1 or 2", default="`0`", kinds=_MQTT),
    Key("frame", _FRAME, "the frame written; its `param` fields come from the rule's params (safe actions, "
        "which have none, write constant frames)", required=True, kinds=_BINARY),
), mdl.SerialAction)

EXPECT = Block("expect", (
    Key("pattern", Custom("regex", {"type": "string"}), required=True),
    Key("timeout_ms", Int(positive=True)),
    Key("reply", _SIGNAL, default="none"),
), mdl.Expect)

WATCHDOG = Block("watchdog", (
    Key("timeout_ms", Int(positive=True), required=True),
    Key("send", Custom("action or list", _ACTIONS), "actions without params", required=True),
), mdl.Watchdog)

RATE_LIMIT = Block("rate_limit", (
    Key("hz", Num(positive=True), required=True),
    Key("burst", Int(minimum=1)),
), mdl.RateLimit)

TELEMETRY = Block("telemetry[i]", (
    Key("device", Str(text="device name"), "the device (its kind decides the other keys)", required=True),
    Key("match", Custom("regex with named groups", {"type": "string"}), "lines fully matching it become "
        "signals; each named group a JSON field, a number when it reads as an int or a float, else a string",
        required=True, kinds=_SERIAL),
    Key("types", Custom("mapping group -> type", {"type": "object", "additionalProperties": {
        "enum": ["int", "float", "bool", "string"]}}), "override a group's type: `int`, `float`, `bool`, "
        "`string`; the groups must exist in `match`", default="`{}`", kinds=_SERIAL),
    Key("topic", Custom("topic filter", {"type": "string"}), "`+` a whole level, `#` a whole last level; "
        "data: `{\"topic\": ..., \"payload\": <JSON value, or the text>}`", required=True, kinds=_MQTT),
    Key("signal", _SIGNAL, "the type of the signals sent", required=True),
    Key("max_rate_hz", Num(positive=True), _RATE, default="unlimited"),
    Key("frame", _FRAME, "frames matching it (constants, length, checksum) become signals, one JSON field "
        "per "
        "`name` field", required=True, kinds=_BINARY),
    Key("fields", Custom("mapping field -> display hints", {"type": "object", "additionalProperties": {
        "$block": "fields.NAME"}}), "how consoles show each field (below)", default="`{}`"),
), mdl.SerialTelemetry)

FIELD = Block("fields.NAME", (
    Key("unit", Str(), "shown after the value", type_text="string (<= 16 chars)"),
    Key("min", Num(), "the plot's fixed scale (`min <= max`); otherwise it follows the values"),
    Key("max", Num(), "see `min`"),
    Key("warn_below", Num(), "the value is shown as a warning below it"),
    Key("warn_above", Num(), "the value is shown as a warning above it"),
), mdl.TelemetryField)

SAFETY = Block("safety", (
    Key("on_disconnect", Custom("action or list", _ACTIONS), "when the bridge's own session link is lost or "
        "reconnecting", default="none"),
    Key("on_controller_lost", Custom("action or list", _ACTIONS), "when the lease holder loses it without "
        "releasing it (its connection destroyed, the lease idle for `control.idle_timeout_ms`, a moderator "
        "taking it over); needs `control.lease: true`", default="none"),
    Key("on_shutdown", Custom("action or list", _ACTIONS), "on SIGTERM / systemd stop, before the ports "
        "close", default="none"),
    Key("estop", Custom("mapping", {"$block": "safety.estop"}), "the e-stop latch, below", default="none"),
), mdl.Safety)

ESTOP = Block("safety.estop", (
    Key("signal", _SIGNAL, "runs `send` at once, before any rule, and latches: every command is refused "
        "(`estopped`)", required=True),
    Key("reset", _SIGNAL, "unlatches, when sent by one of `reset_roles`", required=True),
    Key("send", Custom("action or list", _ACTIONS), "the stop actions", default="none"),
    Key("reset_roles", Custom("list of roles", _ROLES), ""),
), mdl.Estop)

CONTROL = Block("control", (
    Key("lease", Bool(), "only the operator holding the lease drives; others' commands are refused "
        "(`no_lease`)"),
    Key("acquire", _SIGNAL, "take the lease (when free; a moderator takes a held one over)"),
    Key("release", _SIGNAL, "give it back; it is also released when the holder's connection is destroyed"),
    Key("roles", Custom("list of roles", _ROLES), "who may acquire the lease (others: `forbidden`); each "
        "must be let drive by some rule; needs `lease: true`", default="the roles the rules let drive"),
    Key("idle_timeout_ms", Int(positive=True), "the holder loses the lease (and `safety.on_controller_lost` "
        "runs) after this long without a command of its let through; needs `lease: true`"),
), mdl.Control)

AUDIT = Block("audit", (
    Key("path", Str(text="path"), "JSON lines: time, sender, type, decision, what was written",
        required=True),
    Key("max_bytes", Int(positive=True), "rotate when the file reaches this size"),
    Key("backups", Int(minimum=0), "rotated files kept"),
), mdl.Audit)

METRICS = Block("metrics", (
    Key("listen", Custom("`HOST:PORT`", {"type": "string", "pattern": r"^(.+:[0-9]+|.*\$\{.*)$"}),
        "serve Prometheus metrics at `http://HOST:PORT/metrics` (prometheus-client text format, no "
        "authentication: keep it on 127.0.0.1 or a trusted network)", required=True),
))

FRAME = Block("frame", (
    Key("byte_order", Choice(("big", "little")), "for every multi-byte field and a CRC-16 unless they say "
        "otherwise", default="`big`"),
    Key("fields", Custom("list, at least one", {"type": "array", "minItems": 1, "items": {
        "anyOf": [{"type": "integer", "minimum": 0, "maximum": 255}, {"$block": "frame.fields[i]"}]}}),
        "the frame's layout, in order (below)", required=True),
    Key("checksum", Custom("name, or `{type, byte_order, skip, prefix}`", {"anyOf": [
        {"type": "string"}, {"$block": "frame.checksum"}]}), "appended after the fields", default="`none`"),
))

FRAME_FIELD = Block("frame.fields[i]", (
    Key("type", Custom("field type", {"type": "string"}),
        "`u8 s8 u16 s16 u32 s32 f32`, optionally `le`/`be`"),
    Key("const", Custom("number", {"type": "number"}), "a constant"),
    Key("param", Custom("param name", {"type": "string"}), "actions: the value of the rule's param"),
    Key("name", Custom("field name", {"type": "string"}), "telemetry: a JSON field"),
    Key("length", Custom("field type", {"type": "string"}), "the byte count after it up to the checksum"),
    Key("adjust", Custom("int", {"type": "integer"}), "added to a length", default="`0`"),
    Key("scale", Custom("number", {"type": "number"}), "a named telemetry field's value times it"),
), mdl.FrameField)

CHECKSUM = Block("frame.checksum", (
    Key("type", Custom("checksum name", {"type": "string"}), required=True),
    Key("byte_order", Choice(("big", "little")), default="the frame's"),
    Key("skip", Custom("int >= 0", {"type": "integer", "minimum": 0}), "bytes left out at the start",
        default="`0`"),
    Key("prefix", Custom("list of bytes", {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                                     "maximum": 255}}),
        "bytes not on the wire covered first", default="`[]`"),
))

BLOCKS = {b.path: b for b in (TOP, SESSION, EMBEDDED, SIGNAL_RATE, DEVICE, SERIAL, MQTT, HEARTBEAT, RULE,
                              PARAM, ACTION, EXPECT, WATCHDOG, RATE_LIMIT, TELEMETRY, FIELD, SAFETY, ESTOP,
                              CONTROL, AUDIT, METRICS, FRAME, FRAME_FIELD, CHECKSUM)}
#: YAML keys that are no field of the block's dataclass (the loader turns them into one).
YAML_ONLY = {"session": {"token_file", "signal_rate"}, "devices.NAME": set(), "action": {"topic", "payload",
             "qos"}, "telemetry[i]": {"topic", "frame"}, "rules[i]": set()}
