"""The hub's plain-HTTP hygiene: the security headers every response carries, and the warning for a
hub reachable beyond this machine that would let any web origin open WebSockets."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from bridge.session.hubconfig import HubConfig

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
