"""The session hub: an aiohttp server speaking wire protocol v1 on ``/v1/session/{session_id}``, the
OpenTok-compatible REST API, ``/healthz``, ``/metrics`` and the web console's static files.

This module only moves data: frames are parsed by :mod:`bridge.core.wire`, tokens checked by
:mod:`bridge.core.tokens`, and every session decision is taken by :class:`bridge.core.hubstate.HubState`.
Each WebSocket gets a :class:`bridge.session.hublink.WsLink`: frames are written at once (a burst
gathered in one write) while the socket keeps up, else queued in an outbox drained by its own writer
task, so that a slow receiver never holds up the sender's read loop (and per-sender order is kept).

Start it with ``await start_hub(config)`` (tests, demo) or ``sigbridge hub`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

import bridge.session.hubrest as hubrest
from bridge.core import wire
from bridge.core.hubstate import HubState, Member
from bridge.core.signal import (
    BAD_REQUEST,
    CLIENT_DISCONNECTED,
    FORBIDDEN,
    FORCE_DISCONNECTED,
    MAX_FRAME_BYTES,
    MODERATOR,
    NOT_FOUND,
    SIGNALLING_ROLES,
    TOO_MANY,
    UNAUTHORIZED,
    check_signal,
)
from bridge.core.tokens import TokenError, token_identity, verify_client_token
from bridge.session.hubconfig import HubConfig, HubConfigError, load_hub_config
from bridge.session.hubhttp import exposure_warnings, security_headers
from bridge.session.hublink import WsLink
from bridge.session.refusallog import RefusalLog
from bridge.systemd import Notifier, watchdog_loop

log = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
#: Frames up to this size are read and answered with a 413 error; beyond it aiohttp closes the link.
HARD_FRAME_LIMIT = 16 * MAX_FRAME_BYTES
MAX_SESSION_ID_CHARS = 256


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class RunningHub:
    """A hub bound and serving. ``url`` is the WebSocket base URL clients append ``/v1/session/ID`` to."""

    config: HubConfig
    state: HubState
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"{'wss' if self.config.tls_cert else 'ws'}://{self._host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.config.tls_cert else 'http'}://{self._host}:{self.port}"

    @property
    def _host(self) -> str:
        h = self.config.host
        return "127.0.0.1" if h in ("", "0.0.0.0") else f"[{h}]" if ":" in h else h

    async def close(self) -> None:
        """Close every link (code 1001, clients will try to resume elsewhere) and stop serving."""
        hub: _Hub = self.runner.app[_HUB_KEY]
        await hub.shutdown()
        await self.runner.cleanup()


class _Hub:
    """The request handlers; one per running hub."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.state = HubState(grace_s=config.reconnect_grace_s, replay_size=config.resume_buffer,
                              rate=config.rate_limit, burst=config.rate_burst)
        self.links: set[WsLink] = set()
        self.expiry: set[asyncio.TimerHandle] = set()
        self.closing = False
        self.apps = {a.id: a.public_key for a in config.applications}
        self.refusals = RefusalLog(log)

    async def shutdown(self) -> None:
        self.closing = True
        for h in self.expiry:
            h.cancel()

        async def going_away(link: WsLink) -> None:
            with contextlib.suppress(Exception):
                await link.ws.close(code=WSCloseCode.GOING_AWAY, message=b"hub shutting down")

        links = list(self.links)
        if links:
            # Concurrently, and not waiting long for peers that do not answer the close.
            await asyncio.wait([asyncio.create_task(going_away(link)) for link in links], timeout=2.0)
        for link in links:
            link.task.cancel()

    # ---- WebSocket -------------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session_id"]
        if len(session_id) > MAX_SESSION_ID_CHARS:
            raise web.HTTPBadRequest(text=f"session id longer than {MAX_SESSION_ID_CHARS} characters")
        origin = request.headers.get("Origin")
        if self.config.allowed_origins and origin is not None and origin not in self.config.allowed_origins:
            raise web.HTTPForbidden(text="origin not allowed (hub.yaml allowed_origins)")
        # compress=False: permessage-deflate costs a zlib pass per small frame on both ends for nothing.
        ws = web.WebSocketResponse(heartbeat=self.config.heartbeat_s or None, max_msg_size=HARD_FRAME_LIMIT,
                                   compress=False)
        await ws.prepare(request)
        link = WsLink(ws, request.transport)
        self.links.add(link)
        try:
            member = await self._connect(ws, link, session_id)
            if member is not None:
                await self._serve(ws, link, member)
        finally:
            self.links.discard(link)
            link.close()
            await link.task
        return ws

    async def _connect(self, ws: web.WebSocketResponse, link: WsLink, session_id: str) -> Member | None:
        """Read and act on the ``connect`` frame; None (after an error frame) when refused."""
        try:
            msg = await ws.receive(timeout=self.config.connect_timeout_s)
        except TimeoutError:
            return self._refuse(link, UNAUTHORIZED,
                                f"no connect frame within {self.config.connect_timeout_s:g} s")
        if msg.type != WSMsgType.TEXT:
            return self._refuse(link, BAD_REQUEST, "expected a connect text frame")
        try:
            frame = wire.parse_client_frame(msg.data)
        except wire.WireError as e:
            return self._refuse(link, e.code, e.message)
        if not isinstance(frame, wire.ConnectFrame):
            return self._refuse(link, BAD_REQUEST, "the first frame must be {\"op\":\"connect\",...}")
        cfg, state = self.config, self.state
        try:
            grant = verify_client_token(frame.token, api_key=cfg.api_key, api_secret=cfg.api_secret,
                                        session_id=session_id, now=time.time(), apps=self.apps)
        except TokenError as e:
            state.metrics.auth_failures += 1
            self.refusals.note("client token", e.message)
            return self._refuse(link, e.code, e.message)
        loop = asyncio.get_running_loop()
        member = state.find(session_id, frame.resume.connection_id) if frame.resume else None
        if frame.resume is not None and member is not None:
            if not hmac.compare_digest(member.secret, frame.resume.secret):
                return self._refuse(link, FORBIDDEN, "resume secret does not match that connection")
            r = state.resume(member, link, frame.resume.last_seq)
            log.info("session %s: connection %s resumed (last_id %d), %d signals replayed", session_id,
                     member.connection.id, r.last_id, len(r.replay))
            for f in wire.connected_frames(member.connection, state.others(member), member.secret, True,
                                           _now_ms(), r.last_id, r.nacks):
                link.send(f)
            for f in r.replay:
                link.send(f)
            return member
        # A resume of a connection whose grace window has ended joins afresh ("resumed": false).
        member = state.join(session_id, grant.role, grant.data, link, loop.time(), _now_ms(),
                            token_id=token_identity(frame.token))
        log.info("session %s: connection %s joined as %s", session_id, member.connection.id, grant.role)
        for f in wire.connected_frames(member.connection, state.others(member), member.secret, False,
                                       _now_ms()):
            link.send(f)
        return member

    @staticmethod
    def _refuse(link: WsLink, code: int, message: str) -> None:
        link.send(wire.error(code, message))
        link.close()
        return None

    async def _serve(self, ws: web.WebSocketResponse, link: WsLink, member: Member) -> None:
        """The read loop of a connected member: one frame at a time, in order."""
        try:
            async for msg in ws:
                if member.link is not link:
                    # Resumed on another link, whose `connected` told the client our last_id: what
                    # still arrives here is re-sent there if unanswered, so it must not count twice.
                    return
                if msg.type != WSMsgType.TEXT:
                    link.send(wire.error(BAD_REQUEST, "binary frames are not part of the protocol"))
                    continue
                try:
                    frame = wire.parse_client_frame(msg.data)
                except wire.WireError as e:
                    link.send(wire.error(e.code, e.message) if e.frame_id is None
                              else wire.nack(e.frame_id, e.code, e.message))
                    continue
                if isinstance(frame, wire.SignalFrame):
                    self._signal(link, member, frame)
                elif isinstance(frame, wire.PingFrame):
                    link.send(wire.pong(frame.id, _now_ms()))
                elif isinstance(frame, wire.DisconnectFrame):
                    self.state.leave(member, CLIENT_DISCONNECTED)
                    link.send(wire.disconnected(CLIENT_DISCONNECTED))
                    return
                elif isinstance(frame, wire.ForceDisconnectFrame):
                    self._ws_force(link, member, frame)
                else:
                    link.send(wire.error(BAD_REQUEST, "already connected"))
                if member.link is not link:
                    return  # forced out, or resumed on another link
        finally:
            if member.link is link and not self.closing:
                loop = asyncio.get_running_loop()
                self.state.link_lost(member, link, loop.time())
                log.info("session %s: connection %s link lost, %g s to resume", member.session_id,
                         member.connection.id, self.config.reconnect_grace_s)
                # A hair after the deadline, so that the timer never runs just before it.
                handle = loop.call_later(self.config.reconnect_grace_s + 0.005, self._expire)
                self.expiry.add(handle)

    def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        self.expiry = {h for h in self.expiry if h.when() > now}
        for m in self.state.expire(now):
            log.info("connection %s left after its grace window", m.connection.id)

    def _signal(self, link: WsLink, member: Member, f: wire.SignalFrame) -> None:
        """The hot path: checks, one encode, delivery to each receiver's outbox, ack."""
        state = self.state
        state.metrics.signals_in += 1
        target: Member | None = None
        if member.connection.role not in SIGNALLING_ROLES:
            refusal = (FORBIDDEN, f"role {member.connection.role} may not send signals")
        elif (checked := check_signal(f.type, f.data)) is not None:
            refusal = (checked.code, checked.message)
        elif f.to is not None and (target := state.sessions[member.session_id].get(f.to)) is None:
            refusal = (NOT_FOUND, "no connection with that id in this session")
        elif not member.bucket.take(asyncio.get_running_loop().time()):
            refusal = (TOO_MANY, "rate limit exceeded, slow down")
        else:
            member.answered(f.id)
            # ts: when the sender issued it, for a signal that waited in the sender's queue (queued_ms).
            body = wire.SignalBody(f.type, f.data, member.connection.id, max(0, _now_ms() - f.queued_ms))
            # Deliveries before the ack: the receivers' frames leave first (the ack only tells the
            # sender, who is not waiting on the receivers). A broadcast's sender sees its copy first.
            if target is not None:
                target.deliver_signal(body, f.retry)
            else:
                for m in state.sessions[member.session_id].values():  # delivery never changes membership
                    m.deliver_signal(body, f.retry)
            link.send(wire.ack(f.id))
            return
        member.answered(f.id, refusal)
        self._nack(link, f.id, *refusal)

    def _nack(self, link: WsLink, frame_id: int, code: int, message: str) -> None:
        self.state.metrics.nack(code)
        link.send(wire.nack(frame_id, code, message))

    def _ws_force(self, link: WsLink, member: Member, f: wire.ForceDisconnectFrame) -> None:
        if member.connection.role != MODERATOR:
            self._nack(link, f.id, FORBIDDEN, "only a moderator may force a disconnect")
            return
        if self.state.find(member.session_id, f.connection_id) is None:
            self._nack(link, f.id, NOT_FOUND, "no connection with that id in this session")
            return
        link.send(wire.ack(f.id))  # before the connection_destroyed it causes
        self.force_disconnect(member.session_id, f.connection_id)

    def force_disconnect(self, session_id: str, connection_id: str) -> bool:
        """Force a connection out (WebSocket or REST). False when it is not in the session."""
        target = self.state.find(session_id, connection_id)
        if target is None:
            return False
        out = target.link
        self.state.leave(target, FORCE_DISCONNECTED)
        if out is not None:
            out.send(wire.disconnected(FORCE_DISCONNECTED))
            out.close()
        return True

    # ---- plain HTTP ------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics(self, request: web.Request) -> web.Response:
        text = self.state.prometheus(links=len(self.links))
        return web.Response(text=text, content_type="text/plain")

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        path = CONSOLE_DIR / name
        # One flat directory: no separators, no dot files, so nothing outside it can be named.
        if name.startswith(".") or "/" in name or "\\" in name or not path.is_file():
            raise web.HTTPNotFound(text="no such file\n")  # never the name: error bodies echo nothing
        return web.FileResponse(path)


_HUB_KEY = web.AppKey("hub", _Hub)


def build_app(config: HubConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_FRAME_BYTES)
    hub = _Hub(config)
    app[_HUB_KEY] = hub
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/v1/session/{session_id}", hub.websocket)
    app.router.add_get("/healthz", hub.healthz)
    app.router.add_get("/metrics", hub.metrics)
    hubrest.add_routes(app.router, config, hub.state, hub.force_disconnect)
    app.router.add_get("/", hub.static)
    app.router.add_get("/{name}", hub.static)
    return app


async def start_hub(config: HubConfig) -> RunningHub:
    """Bind and serve; ``config.port`` 0 picks a free port (see ``RunningHub.port``)."""
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    ssl_ctx = None
    if config.tls_cert and config.tls_key:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(config.tls_cert, config.tls_key)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_ctx)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1])
    return RunningHub(config=config, state=app[_HUB_KEY].state, runner=runner, port=port)


def main(args: argparse.Namespace) -> int:
    """``sigbridge hub``: serve until SIGINT/SIGTERM. Exit 2 on a configuration error."""
    try:
        config = load_hub_config(args.config, listen=args.listen, state_dir=args.state_dir)
    except HubConfigError as e:
        print(f"sigbridge hub: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_serve_forever(config))


async def _serve_forever(config: HubConfig) -> int:
    try:
        hub = await start_hub(config)
    except OSError as e:  # address in use, no permission, TLS files missing or invalid (SSLError)
        print(f"sigbridge hub: cannot start on {config.host}:{config.port}: {e}", file=sys.stderr)
        return 1
    print(f"sigbridge hub: listening on {hub.url} (console {hub.http_url}/); "
          f"API credentials from {config.credentials_source}"
          f"{f', {len(config.applications)} application(s)' if config.applications else ''}",
          file=sys.stderr, flush=True)
    for warning in exposure_warnings(config):
        print(f"sigbridge hub: warning: {warning}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # systemd (Type=notify): READY once listening; WATCHDOG=1 from this loop, so a stuck loop is restarted.
    notifier = Notifier.from_env()
    notifier.ready(f"listening on {hub.url}")
    watchdog = asyncio.create_task(watchdog_loop(notifier))
    try:
        await stop.wait()
        notifier.stopping()
        await hub.close()
    finally:
        watchdog.cancel()
        notifier.close()
    return 0


__all__ = ["RunningHub", "build_app", "main", "start_hub"]
