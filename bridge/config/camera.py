"""camera.yaml -> :class:`CameraConfig`, with every problem as ``file:line: key.path: message``.

Contract: ``load_camera_config(path, environ)`` reads the file once and returns a config in which
every value is in range, or raises `bridge.config.tree.ConfigError` listing every problem. The keys
are declared once below (`bridge.config.schema` blocks; docs/schema/camera.schema.json is generated
from them); the ``session:`` section is read by the bridge config's own code (same keys, same checks);
the reading machinery (line numbers, ``${ENV}``) is `bridge.config.tree`. docs/camera.md is the
reference and config/camera.example.yaml shows every key. This module imports no media library: ``sigbridge
camera`` reports a bad file before it loads aiortc.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from bridge.config import keys
from bridge.config.bridge import BridgeBuilder
from bridge.config.loader import read_document
from bridge.config.schema import Block, Choice, Custom, Int, Key, Str, mapping, read_fields
from bridge.config.tree import ConfigError, Reader, join
from bridge.core.camera.framecode import min_size
from bridge.core.camera.viewers import ViewerPolicy
from bridge.core.model import SessionSettings
from bridge.core.signal import ROLES, SIGNALLING_ROLES

CODECS = ("vp8", "h264")
_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


@dataclass(frozen=True, slots=True)
class CameraSource:
    """``camera:`` - what is filmed and how it is encoded. ``source`` is "synthetic" (a moving test
    pattern with a clock and a machine-readable frame code) or "v4l2" (``device``)."""

    name: str = "camera"
    source: str = "synthetic"
    device: str = "/dev/video0"
    width: int = 640
    height: int = 480
    fps: int = 30
    bitrate_kbps: int = 1000
    codec: str = "vp8"


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server (a TURN server needs ``username`` and ``credential``)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class CameraConfig:
    source_file: str
    session: SessionSettings
    camera: CameraSource
    viewers: ViewerPolicy
    ice_servers: tuple[IceServer, ...] = ()


_ROLES = {"type": "array", "minItems": 1, "items": {"enum": ["moderator", "publisher"]}}
_TIMEOUT = Int(minimum=500, maximum=120_000)
TOP = Block("", (
    Key("session", Custom("mapping", {"$block": "session"}), "as in bridge.yaml", required=True),
    Key("camera", Custom("mapping", {"$block": "camera"}), "what is filmed and how", required=True),
    Key("viewers", Custom("mapping", {"$block": "viewers"}), "who may watch"),
    Key("ice", Custom("mapping", {"$block": "ice"}), "STUN/TURN servers"),
))
CAMERA = Block("camera", (
    Key("name", Custom("name", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}),
        "viewers may ask for one camera by name"),
    Key("source", Choice(("synthetic", "v4l2"), one_of=True), "a moving test pattern, or a V4L2 device",
        required=True),
    Key("device", Str(), "the V4L2 device (only with `source: v4l2`)"),
    Key("width", Custom("even int", {"type": "integer", "multipleOf": 2, "maximum": 1920})),
    Key("height", Custom("even int", {"type": "integer", "multipleOf": 2, "maximum": 1080})),
    Key("fps", Int(minimum=1, maximum=60)),
    Key("bitrate_kbps", Int(minimum=100, maximum=10_000)),
    Key("codec", Choice(CODECS, one_of=True)),
), CameraSource)
VIEWERS = Block("viewers", (
    Key("roles", Custom("list of roles", _ROLES), "roles that may watch"),
    Key("max", Int(minimum=1, maximum=16), "streams at once"),
    Key("answer_timeout_ms", _TIMEOUT, "from the watch to a complete answer"),
    Key("connect_timeout_ms", _TIMEOUT, "from the answer to a connected peer connection"),
    # A viewer's RTCP receiver reports come about once a second (0.5-1.5 s apart): a shorter stall
    # timeout would drop viewers who are fine.
    Key("stall_timeout_ms", Int(minimum=2000, maximum=120_000), "a stream without an RTCP report this long "
        "is dropped"),
), ViewerPolicy)
ICE = Block("ice", (
    Key("servers", Custom("list of servers", {"type": "array", "items": {"$block": "ice.servers[i]"}})),
))
ICE_SERVER = Block("ice.servers[i]", (
    Key("urls", Custom("URL or list of URLs", {"anyOf": [{"type": "string"}, {"type": "array", "items": {
        "type": "string"}}]}), "stun:, stuns:, turn: or turns: URLs", required=True),
    Key("username", Str(), "TURN only"),
    Key("credential", Str(allow_empty=True), "TURN only"),
), IceServer)
BLOCKS = {b.path: b for b in (TOP, keys.SESSION, keys.SIGNAL_RATE, CAMERA, VIEWERS, ICE, ICE_SERVER)}


def load_camera_config(path: str | Path, environ: Mapping[str, str] | None = None) -> CameraConfig:
    reader, root = read_document(path, environ)
    config = None if root is None else _CameraBuilder(reader, Path(path).parent).build(root)
    if reader.issues or config is None:
        raise ConfigError(sorted(reader.issues, key=lambda i: i.line or 0))
    return config


class _CameraBuilder:
    """The camera's sections; ``session:`` is read by the bridge config's own builder."""

    def __init__(self, reader: Reader, base: Path) -> None:
        self.r = reader
        self.bridge = BridgeBuilder(reader, base)

    def build(self, root: yaml.Node) -> CameraConfig | None:
        top = mapping(self.r, root, "", TOP)
        if top is None:
            return None
        session = self.bridge.session(top["session"]) if "session" in top else None
        if session is not None and session.embedded is not None:
            self.r.error(top["session"], "session.embedded", "a camera joins a session (session.url: a "
                         "hub's, or the one a bridge hosts with session.embedded); it hosts none")
            session = None
        camera = self._camera(top["camera"]) if "camera" in top else None
        viewers = self._viewers(top["viewers"], camera) if "viewers" in top else ViewerPolicy(
            name=camera.name if camera else "camera")
        ice = self._ice(top["ice"]) if "ice" in top else ()
        if session is None or camera is None or viewers is None or self.r.issues:
            return None
        return CameraConfig(self.r.file, session, camera, viewers, ice)

    def _camera(self, node: yaml.Node) -> CameraSource | None:
        r = self.r
        m = mapping(r, node, "camera", CAMERA)
        if m is None:
            return None
        w_min, h_min = min_size()
        kw = read_fields(r, m, "camera", CAMERA, {
            "name": lambda n, p: self._pattern(n, p, "A-Z a-z 0-9 _ . -", "_.-"),
            "width": lambda n, p: self._even(n, p, w_min, 1920),
            "height": lambda n, p: self._even(n, p, h_min, 1080),
        })
        if "device" in m and kw.get("source") == "synthetic":
            r.error(m["device"], "camera.device", "device is only used with source: v4l2")
        if len(kw) < len(m):
            return None
        return CameraSource(**kw)

    def _viewers(self, node: yaml.Node, camera: CameraSource | None) -> ViewerPolicy | None:
        r = self.r
        m = mapping(r, node, "viewers", VIEWERS)
        if m is None:
            return None
        kw = read_fields(r, m, "viewers", VIEWERS, {"roles": self._roles})
        if "max" in kw:
            kw["max_viewers"] = kw.pop("max")
        if len(kw) < len(m):
            return None
        return ViewerPolicy(name=camera.name if camera else "camera", **kw)

    def _roles(self, node: yaml.Node, path: str) -> frozenset[str] | None:
        items = self.r.sequence(node, path)
        if items is None:
            return None
        roles: set[str] = set()
        for i, item in enumerate(items):
            role = self.r.string(item, join(path, i))
            if role is None:
                continue
            if role not in ROLES:
                self.r.error(item, join(path, i), f"unknown role {role!r}; expected one of "
                                                  f"{', '.join(sorted(ROLES))}")
            elif role not in SIGNALLING_ROLES:
                self.r.error(item, join(path, i), f"a {role} connection cannot send signals, so it could "
                                                  f"never ask for the picture; allowed: "
                                                  f"{', '.join(sorted(SIGNALLING_ROLES))}")
            else:
                roles.add(role)
        if not items:
            self.r.error(node, path, "name at least one role (nobody could watch)")
        return frozenset(roles) if roles and len(roles) == len(items) else None

    def _ice(self, node: yaml.Node) -> tuple[IceServer, ...]:
        m = mapping(self.r, node, "ice", ICE)
        if m is None or "servers" not in m:
            return ()
        items = self.r.sequence(m["servers"], "ice.servers")
        out = []
        for i, item in enumerate(items or []):
            server = self._ice_server(item, join("ice.servers", i))
            if server is not None:
                out.append(server)
        return tuple(out)

    def _ice_server(self, node: yaml.Node, path: str) -> IceServer | None:
        r = self.r
        m = mapping(r, node, path, ICE_SERVER)
        if m is None or "urls" not in m:
            return None
        url_nodes = [(n, join(join(path, "urls"), i)) for i, n in enumerate(m["urls"].value)] \
            if isinstance(m["urls"], yaml.SequenceNode) else [(m["urls"], join(path, "urls"))]
        urls = []
        for n, p in url_nodes:
            url = r.string(n, p)
            if url is not None and not url.startswith(_ICE_SCHEMES):
                r.error(n, p, f"expected a stun:, stuns:, turn: or turns: URL, got {url!r}")
            elif url is not None:
                urls.append(url)
        username = r.string(m["username"], join(path, "username")) if "username" in m else None
        credential = (r.string(m["credential"], join(path, "credential"), allow_empty=True)
                      if "credential" in m else None)
        if any(u.startswith("turn") for u in urls) and ("username" not in m or "credential" not in m):
            r.error(node, path, "a TURN server needs username and credential (from your TURN "
                                "server's configuration, e.g. coturn's user=...)")
            return None
        if len(urls) != len(url_nodes) or not urls or len(m) != 1 + (username is not None) + (
                credential is not None):
            return None
        return IceServer(tuple(urls), username, credential)

    # ------------------------------------------------------------ value readers

    def _even(self, node: yaml.Node, path: str, low: int, high: int) -> int | None:
        value = self.r.integer(node, path, minimum=low, maximum=high)
        if value is not None and value % 2:
            self.r.error(node, path, f"must be even (the encoders sample colour in 2x2 blocks), got {value}")
            return None
        return value

    def _pattern(self, node: yaml.Node, path: str, what: str, extra: str) -> str | None:
        value = self.r.string(node, path)
        if value is not None and (len(value) > 64 or not all(c.isascii() and (c.isalnum() or c in extra)
                                                             for c in value)):
            self.r.error(node, path, f"a name of 1-64 characters of {what}, got {value!r}")
            return None
        return value
