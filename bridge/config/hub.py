"""hub.yaml -> :class:`HubConfig`, API credentials, and the ``sigbridge token`` command.

Where the credentials come from, first match wins:
1. ``SIGBRIDGE_API_KEY`` / ``SIGBRIDGE_API_SECRET`` in the environment (both or neither);
2. ``api_key`` / ``api_secret`` in hub.yaml;
3. ``credentials.json`` in the state directory (``--state-dir``, else ``$STATE_DIRECTORY``, else
   ``~/.local/state/sigbridge``), generated there once (mode 0600) by the hub when it does not exist.
``sigbridge hub`` and ``sigbridge token`` resolve them the same way, so a token minted with the same
state dir is accepted by the hub. ``sigbridge token`` never generates credentials unless told to
(``--create``): a token signed with fresh credentials nobody else has would be refused by the hub; it
says on stderr where the credentials it used came from. Secrets are never logged; only the path they
live in is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bridge.config.apps import AppError, Application, load_applications
from bridge.config.loader import read_document
from bridge.config.schema import Block, Choice, Custom, Int, Key, Nested, Num, Str, mapping, read_fields
from bridge.config.tree import ConfigError, Reader, join
from bridge.core.tokens import mint_client_token

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Bounds against hostile or broken clients (docs/security.md): integer keys, 0 = no such bound.
BOUND_KEYS = ("outbox_bytes", "resume_buffer_bytes", "buffer_budget_bytes", "max_connections",
              "max_connections_per_address", "max_connections_per_session", "max_connections_per_token")


class HubConfigError(ValueError):
    """A hub.yaml or flag problem, worded for the person who wrote it (names the file and key)."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """hub.yaml ``cluster:``: where sessions live. ``engine`` ``memory`` (this process alone) or
    ``redis`` (shared by every hub on the same Redis, docs/cluster.md); ``url`` one ``redis://`` URL
    (standalone Redis) or the seed nodes of a Redis Cluster; ``lease_ms`` how long a hub counts as
    alive without renewing its lease (a hub frozen longer is fenced)."""

    engine: str = "memory"
    url: tuple[str, ...] = ()
    lease_ms: int = 3000


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Everything the hub needs. ``port`` 0 binds a free port (tests)."""

    api_key: str
    api_secret: str = field(repr=False)  # never in logs, not even by accident through repr()
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    reconnect_grace_s: float = 60.0
    #: Retry signals kept per connection for replay after a resume (oldest dropped beyond).
    resume_buffer: int = 1000
    #: Signals per second per connection, and burst; rate 0 = no limit.
    rate_limit: float = 1000.0
    rate_burst: float = 2000.0
    #: Browser origins allowed to open a WebSocket; empty = any (tokens are required anyway).
    allowed_origins: tuple[str, ...] = ()
    #: WebSocket ping interval; a link with no pong within half of it more is taken as dropped.
    heartbeat_s: float = 2.0
    #: Seconds a new WebSocket has to send its ``connect`` frame (401 and a close after); absolute.
    connect_timeout_s: float = 10.0
    #: Seconds a new TCP connection (or an idle keep-alive one) has to send a whole request head.
    request_head_timeout_s: float = 10.0
    #: Bytes of frames queued for one slow receiver; past it the link is closed (code 4008).
    outbox_bytes: int = 4 * 1024 * 1024
    #: Bytes of retry signals kept per connection for replay after a resume (beside ``resume_buffer``).
    resume_buffer_bytes: int = 1024 * 1024
    #: Bytes of frames held by the whole hub (outboxes + resume buffers; the latter at most half).
    buffer_budget_bytes: int = 64 * 1024 * 1024
    #: Open WebSockets in the hub, per remote address; members of one session, of one token.
    max_connections: int = 8192
    max_connections_per_address: int = 1024
    max_connections_per_session: int = 4096
    max_connections_per_token: int = 32
    #: Where the credentials came from (for the startup message), never the secret itself.
    credentials_source: str = "config"
    #: Vonage-style applications (id + RSA public key), beside the API key and secret.
    applications: tuple[Application, ...] = ()
    #: The session engine (memory, or Redis shared by a fleet of hubs).
    cluster: ClusterConfig = ClusterConfig()


@dataclass(frozen=True, slots=True)
class _Tls:
    cert: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class _RateLimit:
    per_second: float = 1000.0
    burst: float = 2000.0


_SECONDS = Num(minimum=0)
_URLS = Custom("URL or list of URLs", {"oneOf": [
    {"type": "string", "pattern": "^rediss?://"},
    {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^rediss?://"}}]})
CLUSTER = Block("cluster", (
    Key("engine", Choice(("memory", "redis")), "`redis`: sessions shared by every hub on the same Redis"),
    Key("url", _URLS, "`redis://HOST:PORT`, or a list of a Redis Cluster's nodes", default="none"),
    Key("lease_ms", Int(minimum=300), "a hub silent this long is taken for dead (and fenced)"),
), ClusterConfig)
#: hub.yaml's keys, declared once (docs/schema/hub.schema.json is generated from them). A new section
#: is one `Nested` key here (its Block tied to a dataclass) and a HubConfig field of the same name.
TOP = Block("", (
    Key("listen", Custom("`HOST:PORT`", {"type": "string"}), "`--listen` overrides it",
        default='`"127.0.0.1:8765"`'),
    Key("api_key", Str(), "project credentials; `SIGBRIDGE_API_KEY` + `SIGBRIDGE_API_SECRET` override them",
        default="(generated)"),
    Key("api_secret", Str(), "see `api_key`", default="(generated)"),
    Key("tls", Nested(Block("tls", (Key("cert", Str(), "PEM certificate file"),
                                    Key("key", Str(), "PEM private key file")), _Tls)),
        "serve `wss://` and `https://` directly", default="none"),
    Key("reconnect_grace_s", _SECONDS, "a dropped link keeps its connection id this long"),
    Key("resume_buffer", Int(minimum=0),
        "`retry: true` signals kept per connection for replay after a resume"),
    Key("rate_limit", Nested(Block("rate_limit", (Key("per_second", Num(minimum=0), "0 = off"),
                                                  Key("burst", Num(minimum=0))), _RateLimit)),
        "per-connection frame rate", default="1000, 2000"),
    Key("allowed_origins", Custom("list of origins", {"type": "array", "items": {"type": "string"}}),
        "browser origins allowed to open a WebSocket", default="`[]` (any)"),
    Key("heartbeat_s", _SECONDS, "WebSocket ping interval; silent for 1.5 x that = dropped"),
    Key("connect_timeout_s", _SECONDS, "a new WebSocket must send `connect` within this"),
    Key("request_head_timeout_s", _SECONDS,
        "a TCP connection must send a whole HTTP request head within this"),
    *(Key(name, Int(minimum=0), "0 = no such bound") for name in BOUND_KEYS),
    Key("applications", Custom("mapping APPLICATION_ID -> PEM file", {
        "type": "object", "additionalProperties": {"type": "string"}}), "Vonage-style applications",
        default="`{}`"),
    Key("cluster", Nested(CLUSTER), "the session engine: one process, or a fleet sharing Redis",
        default="memory"),
), HubConfig)
BLOCKS = {"": TOP}


def parse_listen(value: str, where: str = "--listen") -> tuple[str, int]:
    host, sep, port_s = str(value).rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise HubConfigError(f"{where}: expected HOST:PORT, e.g. 127.0.0.1:8765, got {value!r}")
    return (host.strip("[]") or DEFAULT_HOST), int(port_s)


def default_state_dir(env: Mapping[str, str]) -> Path:
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    return Path.home() / ".local" / "state" / "sigbridge"


def load_or_create_credentials(state_dir: Path) -> tuple[str, str, Path]:
    """The (key, secret, path) stored in ``state_dir``; generated and stored 0600 on first use."""
    path = state_dir / "credentials.json"
    if path.exists():
        try:
            obj = json.loads(path.read_text())
            return str(obj["api_key"]), str(obj["api_secret"]), path
        except (ValueError, KeyError, TypeError) as e:
            raise HubConfigError(f"{path}: not a credentials file ({type(e).__name__}); "
                                 "delete it to generate new credentials") from None
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = str(secrets.randbelow(9 * 10**7) + 10**7)  # 8 digits, like OpenTok API keys
    secret = secrets.token_hex(20)
    # O_EXCL + 0600 from the start: the secret is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"api_key": key, "api_secret": secret}, f)
    log.warning("generated new API credentials in %s", path)
    return key, secret, path


def load_hub_config(path: str | None = None, *, listen: str | None = None, state_dir: str | None = None,
                    env: Mapping[str, str] | None = None, create_credentials: bool = True) -> HubConfig:
    """Read hub.yaml (optional; every key optional, ``${NAME}`` from ``env``), apply ``--listen`` and
    the environment, resolve the credentials (``create_credentials`` False: a state dir without
    credentials is a HubConfigError). Every problem of the file is reported at once, as
    ``FILE:LINE: key: message`` lines, like the bridge config's."""
    env = os.environ if env is None else env
    where = path or "hub config"
    kw: dict[str, Any] = {}
    apps_raw: object = None
    if path:
        try:
            reader, root = read_document(path, env, empty_ok=True)
        except ConfigError as e:
            raise HubConfigError(str(e)) from None
        top = {} if root is None else mapping(reader, root, "", TOP)
        kw, apps_raw = _read(reader, top or {})
        if reader.issues:
            raise HubConfigError("\n".join(str(i) for i in sorted(reader.issues, key=lambda i: i.line or 0)))
    cfg = replace(HubConfig(api_key="", api_secret=""), **kw)
    if listen:
        host, port = parse_listen(listen)
        cfg = replace(cfg, host=host, port=port)
    cfg = _with_credentials(cfg, kw, where, env, state_dir, create_credentials)
    sdir = Path(state_dir) if state_dir else default_state_dir(env)
    try:
        return replace(cfg, applications=load_applications(apps_raw, where, sdir, cfg.api_key))
    except AppError as e:
        raise HubConfigError(str(e)) from None


def _read(r: Reader, top: dict[str, yaml.Node]) -> tuple[dict[str, Any], object]:
    """The HubConfig fields given in the file (errors recorded in ``r``), and the raw applications."""
    kw = read_fields(r, top, "", TOP, {"listen": lambda n, p: _listen(r, n, p),
                                       "allowed_origins": lambda n, p: _origins(r, n, p),
                                       "applications": lambda n, p: r.freeform(n, p, lambda *_: None),
                                       "cluster": lambda n, p: _cluster(r, n, p)})
    if "listen" in kw:
        kw["host"], kw["port"] = kw.pop("listen")
    apps = kw.pop("applications", None)
    tls = kw.pop("tls", None)
    if tls is not None:
        if bool(tls.cert) != bool(tls.key):
            r.error(top["tls"], "tls", "tls needs both 'cert' and 'key' (PEM file paths)")
        kw["tls_cert"], kw["tls_key"] = tls.cert, tls.key
    rate = kw.pop("rate_limit", None)
    if rate is not None:
        kw["rate_limit"], kw["rate_burst"] = float(rate.per_second), float(rate.burst)
    for key in ("reconnect_grace_s", "heartbeat_s", "connect_timeout_s", "request_head_timeout_s"):
        if key in kw:
            kw[key] = float(kw[key])
    if "allowed_origins" in kw:
        kw["allowed_origins"] = tuple(kw["allowed_origins"])
    if ("api_key" in top) != ("api_secret" in top):
        r.error(top.get("api_key", top.get("api_secret")), "api_key",
                "set both api_key and api_secret, or neither")
    return kw, apps


def _cluster(r: Reader, node: yaml.Node, path: str) -> ClusterConfig | None:
    m = mapping(r, node, path, CLUSTER)
    if m is None:
        return None

    def urls(n: yaml.Node, p: str) -> tuple[str, ...] | None:
        items = r.sequence(n, p) if isinstance(n, yaml.SequenceNode) else [n]
        values = [r.string(x, p) for x in items or []]
        if not values or None in values:
            return None
        if not all(str(v).startswith(("redis://", "rediss://")) for v in values):
            r.error(n, p, "expected redis://HOST:PORT (or a list of them for a Redis Cluster)")
            return None
        return tuple(str(v) for v in values)

    kw = read_fields(r, m, path, CLUSTER, {"url": urls})
    if len(kw) < len(m):
        return None
    cfg = replace(ClusterConfig(), **kw)
    if cfg.engine == "redis" and not cfg.url:
        r.error(node, path, "engine redis needs url: redis://HOST:PORT")
        return None
    return cfg


def _listen(r: Reader, node: yaml.Node, path: str) -> tuple[str, int] | None:
    text = r.string(node, path)
    if text is None:
        return None
    try:
        return parse_listen(text, "listen")
    except HubConfigError:
        r.error(node, path, f"expected HOST:PORT, e.g. 127.0.0.1:8765, got {text!r}")
        return None


def _origins(r: Reader, node: yaml.Node, path: str) -> list[str] | None:
    items = r.sequence(node, path)
    values = [r.string(n, join(path, i)) for i, n in enumerate(items or [])]
    return None if items is None or None in values else [v for v in values if v is not None]


def _with_credentials(cfg: HubConfig, raw: Mapping[str, Any], where: str, env: Mapping[str, str],
                      state_dir: str | None, create: bool = True) -> HubConfig:
    env_key, env_secret = env.get("SIGBRIDGE_API_KEY"), env.get("SIGBRIDGE_API_SECRET")
    if bool(env_key) != bool(env_secret):
        raise HubConfigError("set both SIGBRIDGE_API_KEY and SIGBRIDGE_API_SECRET, or neither")
    if env_key and env_secret:
        return replace(cfg, api_key=env_key, api_secret=env_secret, credentials_source="environment")
    key, secret = raw.get("api_key"), raw.get("api_secret")
    if key or secret:
        if not key or not secret:
            raise HubConfigError(f"{where}: set both api_key and api_secret, or neither")
        return replace(cfg, api_key=str(key), api_secret=str(secret), credentials_source=where)
    sdir = Path(state_dir) if state_dir else default_state_dir(env)
    if not create and not (sdir / "credentials.json").exists():
        raise HubConfigError(
            f"no API credentials in the state directory {sdir} (no credentials.json there): the hub "
            f"creates them on its first start, so give the hub's state directory with --state-dir (or "
            f"its hub.yaml with -c); --create generates new ones there, which only a hub started with "
            f"the same state directory accepts")
    key, secret, path = load_or_create_credentials(sdir)
    return replace(cfg, api_key=key, api_secret=secret, credentials_source=str(path))


def token_main(args: argparse.Namespace) -> int:
    """``sigbridge token SESSION``: print only the token on stdout; on stderr where the credentials
    came from (errors: stderr, exit 2). Credentials are generated only with ``--create``."""
    try:
        data = args.data
        if getattr(args, "bridge", None) is not None:
            if data:
                raise ValueError("--bridge sets the connection data: give --data or --bridge, not both")
            data = f"bridge:{args.bridge}"   # what consoles take for the bridge (docs/console.md)
        cfg = load_hub_config(args.config, state_dir=args.state_dir,
                              create_credentials=bool(getattr(args, "create", False)))
        token = mint_client_token(api_key=cfg.api_key, api_secret=cfg.api_secret, session_id=args.session,
                                  role=args.role, data=data, ttl_s=args.ttl, now=time.time())
    except (HubConfigError, ValueError) as e:
        print(f"sigbridge token: {e}", file=sys.stderr)
        return 2
    print(f"sigbridge token: API credentials from {cfg.credentials_source}", file=sys.stderr)
    print(token)
    return 0
