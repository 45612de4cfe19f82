"""The hub's REST API, for servers: the ``opentok`` server SDKs (project credentials) and the
``vonage`` ones (applications), side by side.

Routes (``{key}`` is the API key or an application id):

* ``POST /session/create`` -> ``[{"session_id": ...}]`` with a Content-Type of exactly
  ``application/json`` (the opentok Python SDK falls back to XML parsing otherwise);
* ``POST /v2/project/{key}/session/{sid}/signal`` and ``.../connection/{cid}/signal`` -> exactly 204
  (the SDKs treat anything else as failure); REST signals reach receivers with ``from`` null;
* ``DELETE /v2/project/{key}/session/{sid}/connection/{cid}`` -> 204 (force disconnect);
* ``GET /v2/project/{key}/session/{sid}/connection`` -> the Vonage API's listing
  ``{"count", "projectId", "sessionId", "items": [{"connectionId", "connectionState", "createdAt"}]}``;
* anything else under ``/v2/project/`` (streams, archives, broadcasts, SIP...) -> 501: the hub serves
  signaling only.

Auth (:mod:`bridge.core.hub.restauth`): ``X-OPENTOK-AUTH`` with the project's key, ``Authorization:
Bearer`` with an application's. An application reaches only the sessions created for it; the project
reaches every session. Every decision on a signal or a force-disconnect is
:class:`~bridge.core.hub.state.HubState`'s, the same as for a WebSocket's. Errors are
``{"code": N, "message": ...}`` with 400/403/404/413/429/501, never a 500 and never an echo of the
request: every malformed body is a 400, counted as a nack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web

from bridge.config.hub import HubConfig
from bridge.core.hub import HubState, Refusal
from bridge.core.hub.restauth import ReplayCache, verify_app_jwt, verify_project_jwt
from bridge.core.signal import BAD_REQUEST, FORBIDDEN, MAX_FRAME_BYTES, TOO_LARGE, Connection
from bridge.core.tokens import (
    TokenError,
    check_token_text,
    new_session_id,
    session_owner,
    unverified_claims,
)
from bridge.hub.guard import QuietLog

log = logging.getLogger(__name__)

_PROJECT = "/v2/project/{key}/session/{session_id}"
NOT_IMPLEMENTED = 501
_SIGNAL_BODY = "body must be a JSON object {\"type\": string, \"data\": string} of UTF-8 text"
_MAX_FORM_FIELDS = 32
_Handler = Callable[[web.Request, str], Awaitable[web.Response]]


def error(code: int, message: str) -> web.Response:
    """The REST error body. ``message`` is always one of ours, never a piece of the request."""
    return web.Response(status=code, body=json.dumps({"code": code, "message": message}).encode(),
                        headers={"Content-Type": "application/json"})


def _json(obj: object) -> web.Response:
    # Exactly "application/json": json_response would add "; charset=utf-8".
    return web.Response(body=json.dumps(obj).encode(), headers={"Content-Type": "application/json"})


def _is_text(*values: str) -> bool:
    """Valid UTF-8 text: a lone surrogate (a JSON escape can make one) cannot be written out."""
    try:
        for v in values:
            v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _outcome(start: Callable[[Callable[[Refusal | None], None]], None]) -> web.Response:
    """Run a state call that answers through a callback; 204 or the refusal's JSON error."""
    future: asyncio.Future[Refusal | None] = asyncio.get_running_loop().create_future()
    start(future.set_result)
    refusal = await future  # already done with the memory engine
    return web.Response(status=204) if refusal is None else error(*refusal)


def add_routes(router: web.UrlDispatcher, config: HubConfig, state: HubState) -> None:
    """Register the REST endpoints over the hub's ``state``."""
    apps = {a.id: a.public_key for a in config.applications}
    replay = ReplayCache()
    refusals = QuietLog()

    def refuse(kind: str, e: TokenError) -> web.Response:
        state.metrics.auth_failures += 1
        refusals.warn(kind, "refused %s: %s", kind, e.message)
        return error(e.code, e.message)

    def credential(request: web.Request, key: str | None) -> str:
        """The API key or application id the request is authorised as; TokenError otherwise."""
        bearer = request.headers.get("Authorization", "")
        now = time.time()
        if key is None and "X-OPENTOK-AUTH" not in request.headers and bearer[:7].lower() == "bearer ":
            text = check_token_text(bearer[7:].strip(), FORBIDDEN, "Bearer JWT")
            try:  # /session/create names no key: the JWT's own application id picks the public key
                key = str(unverified_claims(text).get("application_id"))
            except TokenError as e:
                raise TokenError(FORBIDDEN, e.message) from None
        if key is None or key == config.api_key:
            verify_project_jwt(request.headers.get("X-OPENTOK-AUTH"), api_key=config.api_key,
                               api_secret=config.api_secret, now=now, replay=replay)
            return config.api_key
        if key not in apps:
            raise TokenError(FORBIDDEN, "the id in the URL is neither this hub's API key nor one of "
                                        "its applications")
        if bearer[:7].lower() != "bearer ":
            raise TokenError(FORBIDDEN, "an application's calls need Authorization: Bearer <JWT>")
        verify_app_jwt(bearer[7:].strip(), app_id=key, apps=apps, now=now, replay=replay)
        return key

    def authorised(handler: _Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def checked(request: web.Request) -> web.Response:
            try:
                who = credential(request, request.match_info.get("key"))
                sid = request.match_info.get("session_id")
                if sid is not None and who != config.api_key and session_owner(sid, apps) != who:
                    raise TokenError(FORBIDDEN, "the session was not created for this application")
            except TokenError as e:
                return refuse("REST credential", e)
            return await handler(request, who)
        return checked

    async def _body(request: web.Request) -> bytes | web.Response:
        """The request body, or the JSON 413 (counted) for one over the app's ``client_max_size``."""
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            state.metrics.nack(TOO_LARGE)
            return error(TOO_LARGE, f"body larger than {MAX_FRAME_BYTES} bytes")

    def malformed(message: str) -> web.Response:
        state.metrics.nack(BAD_REQUEST)
        refusals.warn("REST body", "refused REST body: %s", message)
        return error(BAD_REQUEST, message)

    async def create_session(request: web.Request, who: str) -> web.Response:
        # Form fields (location, p2p.preference, archiveMode, e2ee) parsed here, bounded: the hub has
        # no media, so only location means anything; the rest is accepted and has no effect.
        raw = await _body(request)
        if isinstance(raw, web.Response):
            return raw
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), max_num_fields=_MAX_FORM_FIELDS, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            return malformed(f"body must be a form (application/x-www-form-urlencoded, UTF-8, at most "
                             f"{_MAX_FORM_FIELDS} fields)")
        location = form.get("location", "")
        if len(location) > 64 or "~" in location or not _is_text(location):
            return malformed("location must be at most 64 characters of text without '~'")
        sid = new_session_id(who, now=time.time(), location=location)
        return _json([{"session_id": sid, "project_id": who, "partner_id": who,
                       "create_dt": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()),
                       "media_server_url": ""}])

    async def send_signal(request: web.Request, who: str) -> web.Response:
        raw = await _body(request)
        if isinstance(raw, web.Response):
            return raw
        try:
            obj = json.loads(raw or b"{}")
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
            return malformed(_SIGNAL_BODY)
        if not isinstance(obj, dict):
            return malformed(_SIGNAL_BODY)
        type_, data = obj.get("type"), obj.get("data")
        type_, data = ("" if type_ is None else type_), ("" if data is None else data)
        session_id, cid = request.match_info["session_id"], request.match_info.get("connection_id")
        return await _outcome(lambda done: state.rest_signal(session_id, cid, type_, data,
                                                             int(time.time() * 1000), done))

    async def delete_connection(request: web.Request, who: str) -> web.Response:
        session_id, cid = request.match_info["session_id"], request.match_info["connection_id"]
        return await _outcome(lambda done: state.force(session_id, cid, None, done))

    async def list_connections(request: web.Request, who: str) -> web.Response:
        session_id = request.match_info["session_id"]
        listed: asyncio.Future[list[tuple[Connection, bool]]] = asyncio.get_running_loop().create_future()
        state.connections(session_id, listed.set_result)
        items = [{"connectionId": c.id, "connectionState": "Connected" if linked else "Connecting",
                  "createdAt": c.creation_time} for c, linked in await listed]
        return _json({"count": len(items), "projectId": who, "sessionId": session_id, "items": items})

    async def media(request: web.Request) -> web.Response:
        # No auth check: the answer is the same for everyone and says nothing about the hub's state.
        return error(NOT_IMPLEMENTED, "this hub serves signaling only (sessions, connections, signals): "
                                      "streams, archives, broadcasts, SIP, captions and renders are not "
                                      "implemented")

    async def wrong_method(request: web.Request) -> web.Response:
        return error(405, "use POST")

    for path in ("/session/create", "/v2/session/create"):
        router.add_post(path, authorised(create_session))
        router.add_route("*", path, wrong_method)
    router.add_post(_PROJECT + "/signal", authorised(send_signal))
    router.add_post(_PROJECT + "/connection/{connection_id}/signal", authorised(send_signal))
    router.add_delete(_PROJECT + "/connection/{connection_id}", authorised(delete_connection))
    router.add_get(_PROJECT + "/connection", authorised(list_connections))
    router.add_route("*", "/v2/project/{tail:.*}", media)
