"""The hub's plain-HTTP hygiene: the security headers every response carries, the runner whose answers
to requests aiohttp cannot parse echo nothing and log no traceback, and the warning for a hub reachable
beyond this machine that would let any web origin open WebSockets."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from http import HTTPStatus

from aiohttp import web, web_protocol, web_request, web_server

from bridge.config.hub import HubConfig

#: What the console needs and nothing more: its own scripts, styles and images (and the data: icon),
#: WebSockets to a hub (its own, or another one named in the link's fragment); no inline script or
#: style, no frames (nor being framed), no plugins, no form posts, no <base>.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: on every response the app prepares (pages, files, REST answers,
    errors, 404s and WebSocket upgrades alike)."""
    response.headers.update(SECURITY_HEADERS)


def exposure_warnings(config: HubConfig) -> list[str]:
    """What to tell, at start, the operator of a hub reachable beyond this machine."""
    if config.allowed_origins or is_loopback(config.host):
        return []
    return [f"listening on {config.host}, beyond loopback, with allowed_origins empty: a web page from "
            "any origin may open WebSockets here (set allowed_origins in hub.yaml, see docs/hub.md)"]


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 or ::1; a name that is not localhost counts as beyond."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


BadRequestHook = Callable[[int, BaseException | None], None]


class _QuietRequestHandler(web_protocol.RequestHandler):
    """aiohttp's own answer to a request head it cannot parse (and to an exception escaping a handler)
    quotes the offending bytes in its body and logs a traceback per request: an attacker would choose
    both what the hub says and how fast its log grows. Here the answer is the bare status, with the
    security headers, and the hook counts it and logs it quietly."""

    on_bad_request: BadRequestHook = staticmethod(lambda status, exc: None)

    def handle_error(self, request: web_request.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None) -> web.StreamResponse:
        self.on_bad_request(status, exc)
        if request.writer.output_size > 0:    # as aiohttp: the answer has begun, the connection is broken
            raise ConnectionError("response already sent, cannot send the error")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        resp = web.Response(status=status, text=f"{status} {phrase}\n", headers=SECURITY_HEADERS)
        resp.force_close()
        return resp


class HubRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use ``_QuietRequestHandler``, calling ``on_bad_request``.

    aiohttp has no public option for its request handler class: this relies on ``AppRunner._make_server``
    returning a ``web_server.Server`` whose ``__call__`` makes the handlers (aiohttp 3.x; pinned below 4
    in pyproject.toml, and tests/test_hub_sockets.py fails if the answer or the log changes)."""

    def __init__(self, app: web.Application, on_bad_request: BadRequestHook, **kwargs: object) -> None:
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        handler = type("_HubRequestHandler", (_QuietRequestHandler,),
                       {"on_bad_request": staticmethod(on_bad_request)})
        self._handler_class: type[web_protocol.RequestHandler] = handler

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        handler_class = self._handler_class

        class _Server(type(server)):  # type: ignore[misc]
            def __call__(self) -> web_protocol.RequestHandler:
                return handler_class(self, loop=self._loop, **self._kwargs)

        server.__class__ = _Server
        return server


def bad_request_logger(count: Callable[[], None], warn: Callable[..., None]) -> BadRequestHook:
    """The hook for ``HubRunner``: count every refusal, log at most one line per kind and interval
    (``warn`` is ``QuietLog.warn``), never the request's bytes; a 500 (a bug of ours) keeps its
    traceback at debug level."""

    def hook(status: int, exc: BaseException | None) -> None:
        count()
        if status >= 500:
            logging.getLogger("bridge.hub").debug("error handling a request", exc_info=exc)
            warn("http-500", "error handling a request: %s", type(exc).__name__ if exc else "unknown")
        else:
            warn(f"http-{status}", "refused a request aiohttp could not parse (%s): %s", status,
                 type(exc).__name__ if exc else "no detail")

    return hook
