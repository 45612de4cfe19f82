"""The hub's OpenTok-compatible REST API, for servers (and the official OpenTok server SDKs).

``POST /session/create`` answers ``[{"session_id": ...}]`` with a Content-Type of exactly
``application/json`` (the Python SDK falls back to XML parsing otherwise). Signals answer exactly 204
(the SDKs treat anything else as failure) or ``{"code": N, "message": ...}`` with 400/403/404/413.
Every call needs ``X-OPENTOK-AUTH``: a project JWT (HS256 with the API secret, ``iss`` = API key,
``ist`` = "project", ``exp`` at most 5 minutes ahead). REST signals reach receivers with ``from`` null.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from aiohttp import web

from bridge.core import wire
from bridge.core.hubstate import HubState
from bridge.core.signal import BAD_REQUEST, FORBIDDEN, NOT_FOUND, check_signal
from bridge.core.tokens import TokenError, new_session_id, verify_rest_jwt
from bridge.session.hubconfig import HubConfig

_PROJECT = "/v2/project/{key}/session/{session_id}"


def _error(code: int, message: str) -> web.Response:
    return web.Response(status=code, body=json.dumps({"code": code, "message": message}).encode(),
                        headers={"Content-Type": "application/json"})


def add_routes(router: web.UrlDispatcher, config: HubConfig, state: HubState,
               force_disconnect: Callable[[str, str], bool]) -> None:
    """Register the REST endpoints; ``force_disconnect(session_id, connection_id)`` is the hub's."""

    def auth(request: web.Request) -> web.Response | None:
        key = request.match_info.get("key")
        if key is not None and key != config.api_key:
            return _error(FORBIDDEN, "the API key in the URL is not this hub's project")
        try:
            verify_rest_jwt(request.headers.get("X-OPENTOK-AUTH"), api_key=config.api_key,
                            api_secret=config.api_secret, now=time.time())
        except TokenError as e:
            state.metrics.auth_failures += 1
            return _error(FORBIDDEN, e.message)
        return None

    async def create_session(request: web.Request) -> web.Response:
        refused = auth(request)
        if refused is not None:
            return refused
        form = await request.post()
        location = form.get("location")
        sid = new_session_id(config.api_key, now=time.time(),
                             location=location if isinstance(location, str) else "")
        body = [{"session_id": sid, "project_id": config.api_key, "partner_id": config.api_key,
                 "create_dt": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()),
                 "media_server_url": ""}]
        # Exactly "application/json": json_response would add "; charset=utf-8".
        return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    async def send_signal(request: web.Request) -> web.Response:
        refused = auth(request)
        if refused is not None:
            return refused
        try:
            obj = json.loads(await request.read() or b"{}")
        except ValueError:
            return _error(BAD_REQUEST, "body must be a JSON object {\"type\": ..., \"data\": ...}")
        if not isinstance(obj, dict):
            return _error(BAD_REQUEST, "body must be a JSON object {\"type\": ..., \"data\": ...}")
        type_, data = obj.get("type"), obj.get("data")
        type_, data = ("" if type_ is None else type_), ("" if data is None else data)
        refusal = check_signal(type_, data)
        if refusal is not None:
            state.metrics.nack(refusal.code)
            return _error(refusal.code, refusal.message)
        session_id = request.match_info["session_id"]
        cid = request.match_info.get("connection_id")
        members = state.members(session_id)
        if cid is not None:
            members = [m for m in members if m.connection.id == cid]
            if not members:
                state.metrics.nack(NOT_FOUND)
                return _error(NOT_FOUND, "no connection with that id in this session")
        state.metrics.rest_signals += 1
        body = wire.SignalBody(str(type_), str(data), None, int(time.time() * 1000))
        for m in members:
            m.deliver_signal(body, True)
        return web.Response(status=204)

    async def delete_connection(request: web.Request) -> web.Response:
        refused = auth(request)
        if refused is not None:
            return refused
        if not force_disconnect(request.match_info["session_id"], request.match_info["connection_id"]):
            return _error(NOT_FOUND, "no connection with that id in this session")
        return web.Response(status=204)

    router.add_post("/session/create", create_session)
    router.add_post(_PROJECT + "/signal", send_signal)
    router.add_post(_PROJECT + "/connection/{connection_id}/signal", send_signal)
    router.add_delete(_PROJECT + "/connection/{connection_id}", delete_connection)
