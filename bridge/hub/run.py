"""Running the session hub: :func:`start_hub` (tests, demo) binds and serves the aiohttp application
:func:`build_app` wires (the WebSocket endpoint of :mod:`bridge.hub.server`, the REST API of
:mod:`bridge.hub.rest`, the security headers of :mod:`bridge.hub.http`); :func:`main` is ``sigbridge
hub``, serving until SIGINT/SIGTERM with systemd's readiness and watchdog notifications."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from dataclasses import dataclass

from aiohttp import web

import bridge.hub.rest as rest
from bridge.adapters.systemd import Notifier, watchdog_loop
from bridge.config.hub import HubConfig, HubConfigError, load_hub_config
from bridge.core.hub import HubState
from bridge.core.signal import MAX_FRAME_BYTES
from bridge.hub.guard import install_accept_guard, raise_fd_limit
from bridge.hub.http import HubRunner, bad_request_logger, exposure_warnings, security_headers
from bridge.hub.server import Hub

log = logging.getLogger("bridge.hub")


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

    @property
    def hub(self) -> Hub:
        """The request handlers (their links, for tests)."""
        return self.runner.app[HUB_KEY]

    async def close(self) -> None:
        """Close every link (code 1001, clients will try to resume elsewhere) and stop serving."""
        await self.hub.shutdown()
        await self.runner.cleanup()


HUB_KEY = web.AppKey("hub", Hub)


def build_app(config: HubConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_FRAME_BYTES)
    hub = Hub(config)
    app[HUB_KEY] = hub
    app.on_startup.append(hub.start_engine)
    app.on_cleanup.append(hub.close_engine)
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/v1/session/{session_id}", hub.websocket)
    app.router.add_get("/healthz", hub.healthz)
    app.router.add_get("/metrics", hub.metrics)
    rest.add_routes(app.router, config, hub.state)
    app.router.add_get("/", hub.static)
    app.router.add_get("/{name}", hub.static)
    return app


async def start_hub(config: HubConfig) -> RunningHub:
    """Bind and serve; ``config.port`` 0 picks a free port (see ``RunningHub.port``)."""
    app = build_app(config)
    hub = app[HUB_KEY]

    def accept_error() -> None:
        hub.state.metrics.accept_errors += 1

    install_accept_guard(asyncio.get_running_loop(), accept_error, hub.quiet)

    def bad_request() -> None:
        hub.state.metrics.bad_http_requests += 1

    # keepalive_timeout: aiohttp arms it when a connection opens and after each response, and closes
    # the connection if no request head has arrived by then: the request-head deadline.
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
    return RunningHub(config=config, state=hub.state, runner=runner, port=port)


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
    except HubConfigError as e:  # cluster.engine redis without the cluster extra
        print(f"sigbridge hub: {e}", file=sys.stderr)
        return 2
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
