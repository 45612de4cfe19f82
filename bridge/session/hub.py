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
import logging
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

import bridge.session.hubrest as hubrest
from bridge.adapters.systemd import Notifier, watchdog_loop
from bridge.config.hub import BOUND_KEYS, HubConfig, HubConfigError, load_hub_config
from bridge.core import wire
from bridge.core.hublimits import Budget
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
    TOO_LARGE,
    TOO_MANY,
    UNAUTHORIZED,
    check_signal,
)
from bridge.core.tokens import TokenError, token_identity, verify_client_token
from bridge.session.hubguard import QuietLog, install_accept_guard, raise_fd_limit
from bridge.session.hubhttp import HubRunner, bad_request_logger, exposure_warnings, security_headers
from bridge.session.hublink import CLOSE_FLOOD, CLOSE_LINGER_S, LinkPool, WsLink
from bridge.session.hubmetrics import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from bridge.session.hubmetrics import render as render_metrics

log = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
#: Frames up to this size are read and answered with a 413 error; beyond it aiohttp closes the link.
HARD_FRAME_LIMIT = 16 * MAX_FRAME_BYTES
MAX_SESSION_ID_CHARS = 256
#: Control frames (WebSocket pings/pongs) a new link may send before its connect frame.
MAX_FRAMES_BEFORE_CONNECT = 8


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
        budget = Budget(config.buffer_budget_bytes)
        self.state = HubState(grace_s=config.reconnect_grace_s, replay_size=config.resume_buffer,
                              rate=config.rate_limit, burst=config.rate_burst,
                              replay_bytes=config.resume_buffer_bytes, budget=budget,
                              max_per_session=config.max_connections_per_session,
                              max_per_token=config.max_connections_per_token)
        self.quiet = QuietLog()
        self.pool = LinkPool(config.outbox_bytes, budget, self._slow_receiver)
        self.links = self.pool.links  # every open WebSocket (a link leaves once its writer is done)
        self.per_address: dict[str, int] = {}
        self.open = 0  # WebSockets being upgraded or open (what max_connections counts)
        # The per-connection rate limit, announced in 'connected' (clients pace themselves under it).
        self.limits = {**wire.LIMITS, "rate": config.rate_limit, "burst": config.rate_burst} \
            if config.rate_limit > 0 else wire.LIMITS
        self.expiry: set[asyncio.TimerHandle] = set()
        self.closing = False
        self.apps = {a.id: a.public_key for a in config.applications}

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
        cfg, address = self.config, request.remote or ""
        if cfg.max_connections and self.open >= cfg.max_connections:
            self._cap_refused("hub", address)
            raise web.HTTPServiceUnavailable(text="hub full (hub.yaml max_connections)")
        per_address = cfg.max_connections_per_address
        if per_address and self.per_address.get(address, 0) >= per_address:
            self._cap_refused("address", address)
            raise web.HTTPTooManyRequests(text="too many connections from this address "
                                               "(hub.yaml max_connections_per_address)")
        # compress=False: permessage-deflate costs a zlib pass per small frame on both ends for nothing.
        # autoping=False: WebSocket pings reach the read loop, which meters them like every frame.
        # timeout: how long a close waits for the peer's close frame.
        ws = web.WebSocketResponse(heartbeat=cfg.heartbeat_s or None, max_msg_size=HARD_FRAME_LIMIT,
                                   compress=False, autoping=False, timeout=CLOSE_LINGER_S)
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.open += 1
        link: WsLink | None = None
        try:
            await ws.prepare(request)
            link = WsLink(ws, request.transport, self.pool)
            member = await self._connect(ws, link, session_id)
            if member is not None:
                await self._serve(ws, link, member)
        finally:
            self.open -= 1
            left = self.per_address.pop(address, 1) - 1
            if left > 0:
                self.per_address[address] = left
            if link is not None:
                link.close()
                await link.task
        return ws

    def _cap_refused(self, cap: str, address: str) -> None:
        caps = self.state.metrics.caps_refused
        caps[cap] = caps.get(cap, 0) + 1
        self.quiet.warn(f"cap-{cap}", "refused a connection from %s: max_connections%s reached", address,
                        "" if cap == "hub" else f"_per_{cap}")

    def _slow_receiver(self) -> None:
        self.state.metrics.slow_receivers += 1
        cfg = self.config
        self.quiet.warn("slow", "closed a link whose receiver is too slow (hub.yaml outbox_bytes %d, "
                        "buffer_budget_bytes %d)", cfg.outbox_bytes, cfg.buffer_budget_bytes)

    async def _connect(self, ws: web.WebSocketResponse, link: WsLink, session_id: str) -> Member | None:
        """Read and act on the ``connect`` frame; None (after an error frame) when refused.

        The frame is due ``connect_timeout_s`` after the upgrade, an absolute deadline: pings, pongs
        (also the client library's answers to the hub's heartbeat) and partial frames do not move it."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.connect_timeout_s or None):
                for _ in range(MAX_FRAMES_BEFORE_CONNECT):
                    msg = await ws.receive()
                    if msg.type == WSMsgType.PING:
                        await ws.pong(msg.data)
                    elif msg.type != WSMsgType.PONG:
                        break
        except TimeoutError:
            return self._refuse(link, UNAUTHORIZED,
                                f"no connect frame within {self.config.connect_timeout_s:g} s")
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
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
            self.quiet.warn("client token", "refused client token: %s", e.message)
            return self._refuse(link, e.code, e.message)
        if not wire.is_text(grant.data):
            return self._refuse(link, BAD_REQUEST, "the token's connection data is not valid UTF-8 text")
        token_id = token_identity(frame.token)
        member = state.find(session_id, frame.resume.connection_id) if frame.resume else None
        if frame.resume is not None and member is not None:
            refusal = state.resume_check(member, grant.role, grant.data, token_id, frame.resume.secret,
                                         loop.time())
            if refusal is not None:
                self.quiet.warn("resume", "session %s: refused to resume connection %s: %s", session_id,
                                member.connection.id, refusal[1])
                return self._refuse(link, *refusal)
            r = state.resume(member, link, frame.resume.last_seq)
            log.info("session %s: connection %s resumed (last_id %d), %d signals replayed", session_id,
                     member.connection.id, r.last_id, len(r.replay))
            for f in wire.connected_frames(member.connection, state.others(member), member.secret, True,
                                           _now_ms(), r.last_id, r.nacks, self.limits):
                link.send(f)
            for f in r.replay:
                link.send(f)
            return member
        # A resume of a connection whose grace window has ended joins afresh ("resumed": false).
        cap = state.admit(session_id, token_id)
        if cap is not None:
            self.quiet.warn(f"cap-{cap}", "session %s: refused a connection: max_connections_per_%s reached",
                            session_id, cap)
            return self._refuse(link, TOO_MANY, f"too many connections for this {cap} "
                                                f"(hub.yaml max_connections_per_{cap})")
        member = state.join(session_id, grant.role, grant.data, link, loop.time(), _now_ms(), token_id)
        log.info("session %s: connection %s joined as %s", session_id, member.connection.id, grant.role)
        for f in wire.connected_frames(member.connection, state.others(member), member.secret, False,
                                       _now_ms(), limits=self.limits):
            link.send(f)
        return member

    @staticmethod
    def _refuse(link: WsLink, code: int, message: str) -> None:
        link.send(wire.error(code, message))
        link.close()
        return None

    async def _serve(self, ws: web.WebSocketResponse, link: WsLink, member: Member) -> None:
        """The read loop of a connected member: one frame at a time, in order.

        Every frame takes a token from the member's rate limit first, whatever it is (ping, pong,
        signal, malformed, binary). Past the limit a signal is nacked 429 and anything else is dropped
        unanswered; each such frame also takes from ``strikes``, and a link that empties that too
        (frames sustained at twice the limit) is cut with close code 4029 (the member keeps its grace
        window, its buckets stay empty)."""
        loop = asyncio.get_running_loop()
        try:
            async for msg in ws:
                if member.link is not link:
                    # Resumed on another link, whose `connected` told the client our last_id: what
                    # still arrives here is re-sent there if unanswered, so it must not count twice.
                    return
                now = loop.time()
                limited = not member.bucket.take(now)
                if limited:
                    self.state.metrics.frames_refused += 1
                    if not member.strikes.take(now):
                        self._flooded(link, member)
                        return
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.PING and not limited:
                        await ws.pong(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        self._malformed(link, member, "binary", None if limited else wire.error(
                            BAD_REQUEST, "binary frames are not part of the protocol"))
                    elif msg.type == WSMsgType.ERROR:
                        return
                    continue
                try:
                    frame = wire.parse_client_frame(msg.data)
                except wire.WireError as e:
                    self._malformed(link, member, "oversize" if e.code == TOO_LARGE else "invalid",
                                    None if limited else wire.error(e.code, e.message) if e.frame_id is None
                                    else wire.nack(e.frame_id, e.code, e.message))
                    continue
                if isinstance(frame, wire.SignalFrame):
                    self._signal(link, member, frame, limited)
                elif limited:
                    continue  # nothing else is answered past the rate limit
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

    def _flooded(self, link: WsLink, member: Member) -> None:
        self.state.metrics.flood_disconnects += 1
        self.quiet.warn("flood", "session %s: cut connection %s, frames at more than twice its rate "
                        "limit (hub.yaml rate_limit)", member.session_id, member.connection.id)
        link.cut(CLOSE_FLOOD, "rate limit exceeded")

    def _malformed(self, link: WsLink, member: Member, kind: str, answer: str | None) -> None:
        kinds = self.state.metrics.refused_frames
        kinds[kind] = kinds.get(kind, 0) + 1
        self.quiet.warn(f"frame-{kind}", "session %s: connection %s sent a frame refused as %s",
                        member.session_id, member.connection.id, kind)
        if answer is not None:
            link.send(answer)

    def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        self.expiry = {h for h in self.expiry if h.when() > now}
        for m in self.state.expire(now):
            log.info("connection %s left after its grace window", m.connection.id)

    def _signal(self, link: WsLink, member: Member, f: wire.SignalFrame, limited: bool) -> None:
        """The hot path: checks, one encode, delivery to each receiver's outbox, ack. ``limited``: the
        frame came past the connection's rate limit (answered 429)."""
        state = self.state
        state.metrics.signals_in += 1
        target: Member | None = None
        if limited:
            refusal = (TOO_MANY, "rate limit exceeded, slow down")
        elif member.connection.role not in SIGNALLING_ROLES:
            refusal = (FORBIDDEN, f"role {member.connection.role} may not send signals")
        elif (checked := check_signal(f.type, f.data)) is not None:
            refusal = (checked.code, checked.message)
        elif f.to is not None and (target := state.sessions[member.session_id].get(f.to)) is None:
            refusal = (NOT_FOUND, "no connection with that id in this session")
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
        keys = (*BOUND_KEYS, "resume_buffer", "rate_limit", "rate_burst", "connect_timeout_s",
                "request_head_timeout_s")
        bounds = {k: getattr(self.config, k) for k in keys}
        body = render_metrics(self.state.metric_rows(links=len(self.links)), bounds)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

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
    hub = app[_HUB_KEY]

    def accept_error() -> None:
        hub.state.metrics.accept_errors += 1

    install_accept_guard(asyncio.get_running_loop(), accept_error, hub.quiet)
    # keepalive_timeout: aiohttp arms it when a connection opens and after each response, and closes
    # the connection if no request head has arrived by then: the request-head deadline.
    def bad_request() -> None:
        hub.state.metrics.bad_http_requests += 1

    runner = HubRunner(app, bad_request_logger(bad_request, hub.quiet.warn), access_log=None,
                       handle_signals=False, shutdown_timeout=2.0,
                       keepalive_timeout=config.request_head_timeout_s)
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
    nofile = raise_fd_limit()
    if config.max_connections and nofile < config.max_connections + 64:
        log.warning("file descriptor limit %d is below max_connections %d (+64): raise LimitNOFILE",
                    nofile, config.max_connections)
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
