"""The REST API's credentials, pure (no I/O, the caller passes the clock in).

Two kinds of JWT, exactly as the server SDKs make them, one per request:

* project JWTs in ``X-OPENTOK-AUTH`` (the ``opentok`` SDKs): HS256 with the API secret, ``iss`` = API
  key, ``ist`` = "project", ``iat``, ``exp`` at most :data:`MAX_PROJECT_JWT_LIFE_S` after ``iat``,
  ``jti``;
* application JWTs in ``Authorization: Bearer`` (the ``vonage`` SDKs): RS256 with the application's
  private key, ``application_id``, ``iat``, ``exp`` at most :data:`MAX_APP_JWT_LIFE_S` after ``iat``
  (the SDK always asks for 15 minutes), ``jti``.

Both are refused when they carry a client claim (:data:`CLIENT_CLAIMS`: a client token is never a
REST credential, whatever its lifetime), when ``iat`` lies in the future or ``exp`` in the past (with
:data:`CLOCK_SKEW_S`), and when their ``jti`` was already used by the same issuer while it was still
valid (:class:`ReplayCache`). Every refusal is a :class:`TokenError` 403 (what the SDKs expect of a
bad credential), or 429 when the replay cache is full; nothing else is ever raised.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import jwt

from bridge.core.signal import FORBIDDEN, TOO_MANY
from bridge.core.tokens import (
    CLOCK_SKEW_S,
    MAX_REST_JWT_AHEAD_S,
    TokenError,
    check_token_text,
    epoch_claim,
)

MAX_PROJECT_JWT_LIFE_S = MAX_REST_JWT_AHEAD_S
MAX_APP_JWT_LIFE_S = 15 * 60
#: Claims only client tokens carry.
CLIENT_CLAIMS = ("scope", "session_id", "role", "connection_data")
MAX_JTI_CHARS = 256
#: REST JWTs remembered at once; past it (after forgetting the expired ones) calls get 429. Only
#: JWTs with a valid signature get in, so only a holder of a credential can fill it.
DEFAULT_REPLAY_ENTRIES = 50_000


class ReplayCache:
    """The ``(issuer, jti)`` pairs of the REST JWTs accepted and not yet expired, at most ``limit``."""

    __slots__ = ("_heap", "_limit", "_until")

    def __init__(self, limit: int = DEFAULT_REPLAY_ENTRIES) -> None:
        self._limit = limit
        self._until: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._until)

    def admit(self, issuer: str, jti: str, until: float, now: float) -> None:
        """Remember ``jti`` until ``until``; :class:`TokenError` 403 if it is already remembered,
        429 when ``limit`` JWTs are still valid."""
        self._forget(now)
        key = (issuer, jti)
        if key in self._until:
            raise TokenError(FORBIDDEN, "REST JWT replayed: its jti was already used")
        if len(self._until) >= self._limit:
            raise TokenError(TOO_MANY, "too many REST calls within the JWT lifetime, retry later")
        self._until[key] = until
        heapq.heappush(self._heap, (until, key))

    def _forget(self, now: float) -> None:
        heap, until = self._heap, self._until
        while heap and heap[0][0] < now:
            _, key = heapq.heappop(heap)
            until.pop(key, None)


def verify_project_jwt(token: object, *, api_key: str, api_secret: str, now: float,
                       replay: ReplayCache) -> None:
    """Verify an ``X-OPENTOK-AUTH`` project JWT; :class:`TokenError` (see the module docstring)."""
    text = check_token_text(token, FORBIDDEN, "X-OPENTOK-AUTH")
    claims = _decode(text, api_secret, "HS256", "X-OPENTOK-AUTH is not a JWT signed with this "
                                                "project's secret")
    if str(claims.get("iss")) != api_key:
        raise TokenError(FORBIDDEN, "X-OPENTOK-AUTH was issued for another API key")
    if claims.get("ist") != "project":
        raise TokenError(FORBIDDEN, "X-OPENTOK-AUTH 'ist' claim must be 'project'")
    _check(claims, api_key, MAX_PROJECT_JWT_LIFE_S, now, replay)


def verify_app_jwt(token: object, *, app_id: str, apps: Mapping[str, Any], now: float,
                   replay: ReplayCache) -> None:
    """Verify an ``Authorization: Bearer`` application JWT for ``app_id`` (the one in the URL, or
    the token's own when the URL names none); ``apps`` maps ids to RSA public keys."""
    text = check_token_text(token, FORBIDDEN, "Bearer JWT")
    if app_id not in apps:
        raise TokenError(FORBIDDEN, "no application with that id on this hub")
    claims = _decode(text, apps[app_id], "RS256", "Bearer JWT is not signed with this application's key")
    if str(claims.get("application_id")) != app_id:
        raise TokenError(FORBIDDEN, "Bearer JWT was issued for another application")
    _check(claims, app_id, MAX_APP_JWT_LIFE_S, now, replay)


def _decode(token: str, key: Any, algorithm: str, refusal: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[algorithm],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False,
                     "verify_iss": False})
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise TokenError(FORBIDDEN, refusal) from None
    return claims


def _check(claims: dict[str, Any], issuer: str, max_life: int, now: float, replay: ReplayCache) -> None:
    carried = [c for c in CLIENT_CLAIMS if c in claims]
    if carried:
        raise TokenError(FORBIDDEN, f"a client token is not a REST credential (it carries "
                                    f"{', '.join(carried)})")
    missing = [c for c in ("iat", "exp", "jti") if c not in claims]
    if missing:
        raise TokenError(FORBIDDEN, f"REST JWT lacks {', '.join(missing)}")
    iat = epoch_claim(claims["iat"], "iat", FORBIDDEN)
    exp = epoch_claim(claims["exp"], "exp", FORBIDDEN)
    if exp < now - CLOCK_SKEW_S:
        raise TokenError(FORBIDDEN, "REST JWT expired")
    if iat > now + CLOCK_SKEW_S:
        raise TokenError(FORBIDDEN, "REST JWT issued in the future (check the clocks)")
    if exp - iat > max_life:
        raise TokenError(FORBIDDEN, f"REST JWT lives longer than {max_life // 60} minutes (exp - iat)")
    jti = claims["jti"]
    if not isinstance(jti, str | int) or isinstance(jti, bool) or not 0 < len(str(jti)) <= MAX_JTI_CHARS:
        raise TokenError(FORBIDDEN, f"REST JWT jti must be a string of 1 to {MAX_JTI_CHARS} characters")
    replay.admit(issuer, str(jti), exp + CLOCK_SKEW_S, now)
