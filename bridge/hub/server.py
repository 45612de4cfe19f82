"""The hub's WebSocket endpoint, ``/v1/session/{session_id}`` (wire protocol v1), and its small plain-HTTP
pages (``/healthz``, ``/metrics``, the console's static files).

This module only moves frames: every decision is taken by :class:`bridge.core.hub.state.HubState`
(first frame: :meth:`~bridge.core.hub.state.HubState.connect`; every later one:
:meth:`~bridge.core.hub.state.HubState.receive`, whose verdict the read loop follows). Each WebSocket
gets a :class:`bridge.hub.links.WsLink`: frames are written at once (a burst gathered in one write)
while the socket keeps up, else queued in an outbox drained by its own writer task, so that a slow
receiver never holds up the sender's read loop (and per-sender order is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bridge.config.hub import BOUND_KEYS, HubConfig, HubConfigError
from bridge.core import wire
from bridge.core.hub import FLOODED, PONG, STOP, Budget, HubEngine, HubState, Member, MemoryEngine
from bridge.core.signal import MAX_FRAME_BYTES
from bridge.hub.guard import QuietLog
from bridge.hub.links import CLOSE_FLOOD, CLOSE_LINGER_S, LinkPool, WsLink
from bridge.hub.metrics import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from bridge.hub.metrics import render as render_metrics

log = logging.getLogger("bridge.hub")

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
#: Frames up to this size are read and answered with a 413 error; beyond it aiohttp closes the link.
HARD_FRAME_LIMIT = 16 * MAX_FRAME_BYTES
MAX_SESSION_ID_CHARS = 256
#: Control frames (WebSocket pings/pongs) a new link may send before its connect frame.
MAX_FRAMES_BEFORE_CONNECT = 8
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _redis_engine(config: HubConfig) -> Any:
    """The Redis engine; imported only when configured (the ``cluster`` extra: redis, hiredis)."""
    try:
        from bridge.cluster.engine import RedisEngine
        from bridge.cluster.store import StoreConfig
    except ImportError as e:
        raise HubConfigError(f"cluster.engine redis needs the cluster extra (pip install "
                             f"'signal-bridge[cluster]'): {e}") from None
    c = config.cluster
    store = StoreConfig(urls=c.url, lease_ms=c.lease_ms, grace_ms=int(config.reconnect_grace_s * 1000),
                        resume_buffer=config.resume_buffer,
                        max_per_session=config.max_connections_per_session,
                        max_per_token=config.max_connections_per_token)
    return RedisEngine(store, grace_s=config.reconnect_grace_s, rate=config.rate_limit,
                       burst=config.rate_burst)


class _Log:
    """:class:`bridge.core.hub.state.HubLog` for this process: refusals through a :class:`QuietLog`."""

    def __init__(self, quiet: QuietLog) -> None:
        self.warn = quiet.warn

    def info(self, fmt: str, *args: object) -> None:
        log.info(fmt, *args)


class Hub:
    """The request handlers of one running hub, over its :class:`HubState` (memory engine)."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        budget = Budget(config.buffer_budget_bytes)
        engine: HubEngine
        #: The shared engine (hub.yaml cluster.engine redis), started and closed with the app.
        self.cluster: Any = None
        if config.cluster.engine == "redis":
            engine = self.cluster = _redis_engine(config)
        else:
            engine = MemoryEngine(grace_s=config.reconnect_grace_s, replay_size=config.resume_buffer,
                                  rate=config.rate_limit, burst=config.rate_burst,
                                  replay_bytes=config.resume_buffer_bytes, budget=budget,
                                  max_per_session=config.max_connections_per_session,
                                  max_per_token=config.max_connections_per_token)
        self.quiet = QuietLog()
        # The per-connection rate limit, announced in 'connected' (clients pace themselves under it).
        limits = {**wire.LIMITS, "rate": config.rate_limit, "burst": config.rate_burst} \
            if config.rate_limit > 0 else wire.LIMITS
        self.state = HubState(engine, api_key=config.api_key, api_secret=config.api_secret,
                              apps={a.id: a.public_key for a in config.applications}, limits=limits,
                              max_connections=config.max_connections,
                              max_per_address=config.max_connections_per_address, log=_Log(self.quiet))
        self.pool = LinkPool(config.outbox_bytes, budget, self._slow_receiver)
        self.links = self.pool.links  # every open WebSocket (a link leaves once its writer is done)
        self.expiry: set[asyncio.TimerHandle] = set()
        self.closing = False

    async def start_engine(self, app: web.Application) -> None:
        if self.cluster is not None:
            await self.cluster.start()

    async def close_engine(self, app: web.Application) -> None:
        if self.cluster is not None:
            await self.cluster.close()

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

    def _slow_receiver(self) -> None:
        self.state.metrics.slow_receivers += 1
        cfg = self.config
        self.quiet.warn("slow", "closed a link whose receiver is too slow (hub.yaml outbox_bytes %d, "
                        "buffer_budget_bytes %d)", cfg.outbox_bytes, cfg.buffer_budget_bytes)

    # ---- WebSocket -------------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session_id"]
        if len(session_id) > MAX_SESSION_ID_CHARS:
            raise web.HTTPBadRequest(text=f"session id longer than {MAX_SESSION_ID_CHARS} characters")
        origin = request.headers.get("Origin")
        cfg, address, state = self.config, request.remote or "", self.state
        if cfg.allowed_origins and origin is not None and origin not in cfg.allowed_origins:
            raise web.HTTPForbidden(text="origin not allowed (hub.yaml allowed_origins)")
        cap = state.socket_opened(address)
        if cap == "hub":
            raise web.HTTPServiceUnavailable(text="hub full (hub.yaml max_connections)")
        if cap is not None:
            raise web.HTTPTooManyRequests(text="too many connections from this address "
                                               "(hub.yaml max_connections_per_address)")
        # compress=False: permessage-deflate costs a zlib pass per small frame on both ends for nothing.
        # autoping=False: WebSocket pings reach the read loop, which meters them like every frame.
        # timeout: how long a close waits for the peer's close frame.
        ws = web.WebSocketResponse(heartbeat=cfg.heartbeat_s or None, max_msg_size=HARD_FRAME_LIMIT,
                                   compress=False, autoping=False, timeout=CLOSE_LINGER_S)
        link: WsLink | None = None
        try:
            await ws.prepare(request)
            link = WsLink(ws, request.transport, self.pool)
            member = await self._connect(ws, link, session_id)
            if member is not None:
                await self._serve(ws, link, member)
        finally:
            state.socket_closed(address)
            if link is not None:
                link.close()
                await link.task
        return ws

    async def _connect(self, ws: web.WebSocketResponse, link: WsLink, session_id: str) -> Member | None:
        """Read the ``connect`` frame and hand it to the state; None when refused.

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
            self.state.no_connect_frame(link, self.config.connect_timeout_s)
            return None
        if msg.type in _CLOSED:
            return None
        outcome: asyncio.Future[Member | None] = loop.create_future()
        self.state.connect(session_id, msg.data if msg.type == WSMsgType.TEXT else None, link,
                           loop.time(), _now_ms(), time.time(), outcome.set_result)
        return await outcome  # already done with the memory engine: no task switch

    async def _serve(self, ws: web.WebSocketResponse, link: WsLink, member: Member) -> None:
        """The read loop of a connected member: one frame at a time, in order, each handed to
        :meth:`HubState.receive`, whose verdict it follows."""
        loop = asyncio.get_running_loop()
        receive = self.state.receive
        try:
            async for msg in ws:
                kind = msg.type
                if kind == WSMsgType.TEXT:
                    verdict = receive(member, link, msg.data, loop.time(), _now_ms())
                elif kind == WSMsgType.BINARY:
                    verdict = receive(member, link, msg.data, loop.time(), 0)
                elif kind == WSMsgType.ERROR:
                    return
                else:  # ping, pong: metered too
                    verdict = receive(member, link, None, loop.time(), 0, kind == WSMsgType.PING)
                if verdict == STOP:
                    return
                if verdict == FLOODED:
                    link.cut(CLOSE_FLOOD, "rate limit exceeded")
                    return
                if verdict == PONG:
                    await ws.pong(msg.data)
        finally:
            if self.cluster is not None:  # answers still due from the shared store go out first
                await self.cluster.drain(member)
            if not self.closing and self.state.link_lost(member, link, loop.time()):
                # A hair after the deadline, so that the timer never runs just before it.
                handle = loop.call_later(self.config.reconnect_grace_s + 0.005, self._expire)
                self.expiry.add(handle)

    def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        self.expiry = {h for h in self.expiry if h.when() > now}
        self.state.expire(now)

    # ---- plain HTTP ------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        if self.cluster is not None and not self.cluster.ready:
            return web.Response(status=503, text="not ready: the session store (Redis) is unreachable\n")
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
