"""OpenTok-compatible tokens and session ids, pure (no I/O, the caller passes the clock in).

Three kinds of credentials, all signed with the project's API secret:

* client JWTs (HS256, claims ``iss`` = API key, ``ist`` = "project", ``exp``, ``scope`` =
  "session.connect", ``session_id``, ``role``, optional ``connection_data``; other claims vary per
  SDK and are ignored);
* legacy client tokens ``"T1==" + base64("partner_id=KEY&sig=HEX(HMAC-SHA1(secret, DATA)):" + DATA)``
  with DATA a query string (``session_id``, ``expire_time``, ``role``, ``connection_data``, ...);
* REST JWTs sent in ``X-OPENTOK-AUTH`` (``iss`` = API key, ``ist`` = "project", ``exp`` at most five
  minutes ahead).

Verification raises :class:`TokenError` with the code to answer: 401 when the token is not a valid
credential of this project (malformed, tampered, expired, other key), 403 when it is valid but does not
grant what was asked (another session, an unknown role). Messages never echo the token itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt

from bridge.core.signal import (
    FORBIDDEN,
    MAX_CONNECTION_DATA_CHARS,
    PUBLISHER,
    ROLES,
    UNAUTHORIZED,
)

LEGACY_PREFIX = "T1=="
CONNECT_SCOPE = "session.connect"
#: Longest lifetime a minted client token may have (OpenTok's limit).
MAX_TOKEN_TTL_S = 30 * 24 * 3600
#: A REST JWT may not expire further ahead than this (seconds), plus a little clock skew.
MAX_REST_JWT_AHEAD_S = 5 * 60
CLOCK_SKEW_S = 30


class TokenError(Exception):
    """A credential was refused. ``code`` is 401 (not a valid credential) or 403 (not allowed)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ClientGrant:
    """What a verified client token grants: joining ``session_id`` with ``role`` and ``data``."""

    session_id: str
    role: str
    data: str
    expires_at: int  # seconds since epoch


def verify_client_token(token: str, *, api_key: str, api_secret: str, session_id: str,
                        now: float) -> ClientGrant:
    """Verify a JWT or legacy ``T1==`` client token for joining ``session_id`` at time ``now``.

    Returns the grant or raises :class:`TokenError` (401 or 403, see the module docstring).
    """
    if not isinstance(token, str) or not token:
        raise TokenError(UNAUTHORIZED, "token missing")
    if token.startswith(LEGACY_PREFIX):
        claims = _legacy_claims(token, api_key, api_secret)
    else:
        claims = _jwt_claims(token, api_key, api_secret)
        if claims.get("scope") != CONNECT_SCOPE:
            raise TokenError(UNAUTHORIZED, f"token scope is not {CONNECT_SCOPE!r}")
    exp = claims.get("exp", claims.get("expire_time"))
    try:
        expires_at = int(exp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TokenError(UNAUTHORIZED, "token has no valid expiry time") from None
    if expires_at < now:
        raise TokenError(UNAUTHORIZED, "token expired")
    if claims.get("session_id") != session_id:
        raise TokenError(FORBIDDEN, "token is for another session")
    role = claims.get("role", PUBLISHER) or PUBLISHER
    if role not in ROLES:
        raise TokenError(FORBIDDEN, f"token role must be one of {', '.join(sorted(ROLES))}")
    data = claims.get("connection_data", "") or ""
    if not isinstance(data, str) or len(data) > MAX_CONNECTION_DATA_CHARS:
        raise TokenError(FORBIDDEN, f"token connection data must be a string of at most "
                                    f"{MAX_CONNECTION_DATA_CHARS} characters")
    return ClientGrant(session_id=session_id, role=str(role), data=data, expires_at=expires_at)


def _jwt_claims(token: str, api_key: str, api_secret: str) -> dict[str, Any]:
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise TokenError(UNAUTHORIZED, "token is neither a JWT nor a T1== token") from None
    if str(unverified.get("iss")) != api_key:
        raise TokenError(UNAUTHORIZED, "token was issued for another API key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, api_secret, algorithms=["HS256"], leeway=CLOCK_SKEW_S,
            options={"require": ["exp"], "verify_iat": False, "verify_exp": False},
        )
    except jwt.InvalidSignatureError:
        raise TokenError(UNAUTHORIZED, "token signature does not match (tampered or other secret)") from None
    except jwt.InvalidTokenError as e:
        raise TokenError(UNAUTHORIZED, f"token rejected: {e}") from None
    if claims.get("ist", "project") != "project":
        raise TokenError(UNAUTHORIZED, "token 'ist' claim must be 'project'")
    return claims


def _legacy_claims(token: str, api_key: str, api_secret: str) -> dict[str, Any]:
    body = token[len(LEGACY_PREFIX):]
    body += "=" * (-len(body) % 4)
    try:
        # Standard or URL-safe alphabet: map the URL-safe characters onto the standard ones.
        raw = base64.b64decode(body.replace("-", "+").replace("_", "/"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise TokenError(UNAUTHORIZED, "T1== token is not valid base64") from None
    head, sep, data = raw.partition(":")
    if not sep:
        raise TokenError(UNAUTHORIZED, "T1== token has no signed part")
    fields = {k: v[0] for k, v in parse_qs(head).items()}
    if fields.get("partner_id") != api_key:
        raise TokenError(UNAUTHORIZED, "token was issued for another API key")
    expected = hmac.new(api_secret.encode(), data.encode(), hashlib.sha1).hexdigest()
    if not hmac.compare_digest(expected, fields.get("sig", "").lower()):
        raise TokenError(UNAUTHORIZED, "token signature does not match (tampered or other secret)")
    return {k: v[0] for k, v in parse_qs(data, keep_blank_values=True).items()}


def mint_client_token(*, api_key: str, api_secret: str, session_id: str, role: str = PUBLISHER,
                      data: str = "", ttl_s: int = 86400, now: float) -> str:
    """Mint an OpenTok-style client JWT; raises ValueError for a bad role, data or ttl."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(ROLES))}")
    if len(data) > MAX_CONNECTION_DATA_CHARS:
        raise ValueError(f"connection data is at most {MAX_CONNECTION_DATA_CHARS} characters")
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"ttl must be between 1 and {MAX_TOKEN_TTL_S} seconds")
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": api_key, "ist": "project", "iat": iat, "exp": iat + ttl_s, "scope": CONNECT_SCOPE,
        "session_id": session_id, "role": role, "nonce": secrets.randbelow(1_000_000),
    }
    if data:
        claims["connection_data"] = data
    return jwt.encode(claims, api_secret, algorithm="HS256")


def mint_rest_jwt(*, api_key: str, api_secret: str, now: float, ttl_s: int = 180) -> str:
    """A project JWT for the REST API (what the server SDKs send in ``X-OPENTOK-AUTH``)."""
    iat = int(now)
    return jwt.encode({"iss": api_key, "ist": "project", "iat": iat, "exp": iat + ttl_s,
                       "jti": secrets.token_hex(8)}, api_secret, algorithm="HS256")


def verify_rest_jwt(token: str | None, *, api_key: str, api_secret: str, now: float) -> None:
    """Verify an ``X-OPENTOK-AUTH`` project JWT; raises :class:`TokenError` (always 403, as REST has it)."""
    if not token:
        raise TokenError(FORBIDDEN, "X-OPENTOK-AUTH header missing")
    try:
        claims = jwt.decode(token, api_secret, algorithms=["HS256"],
                            options={"require": ["exp", "iss"], "verify_exp": False,
                                     "verify_iat": False})
    except jwt.InvalidTokenError:
        raise TokenError(FORBIDDEN, "X-OPENTOK-AUTH is not a JWT signed with this project's secret") from None
    if str(claims.get("iss")) != api_key:
        raise TokenError(FORBIDDEN, "X-OPENTOK-AUTH was issued for another API key")
    if claims.get("ist") != "project":
        raise TokenError(FORBIDDEN, "X-OPENTOK-AUTH 'ist' claim must be 'project'")
    exp = claims["exp"]
    if not isinstance(exp, int | float) or exp < now - CLOCK_SKEW_S:
        raise TokenError(FORBIDDEN, "X-OPENTOK-AUTH expired")
    if exp > now + MAX_REST_JWT_AHEAD_S + CLOCK_SKEW_S:
        raise TokenError(FORBIDDEN, "X-OPENTOK-AUTH expires more than 5 minutes ahead")


def new_session_id(api_key: str, *, now: float, location: str = "", rand: str | None = None) -> str:
    """An OpenTok-format session id: ``1_`` + URL-safe base64 (no padding) of
    ``1~APIKEY~location~createTime~random~`` (the SDKs check that the API key is among the fields)."""
    rnd = rand if rand is not None else secrets.token_hex(12)
    raw = f"1~{api_key}~{location}~{int(now * 1000)}~{rnd}~".encode()
    return "1_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def session_id_fields(session_id: str) -> list[str] | None:
    """The ``~`` fields of an OpenTok-format session id, or None when it is not one."""
    if not session_id.startswith(("1_", "2_")):
        return None
    body = session_id[2:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return raw.split("~")


def token_identity(token: str) -> str:
    """A stable, non-secret name for one client token: the same token gives the same identity on every
    connection it opens (so limits keyed on it survive reconnecting), and the identity reveals nothing
    that would let anyone rebuild the token. Never raises, whatever the string holds.

    Spellings of one token that verify alike name one identity, so that re-spelling a token never buys
    a fresh one: a T1== token is named by its signed data (its base64 alphabet, padding and the case
    of its hex signature do not count), a JWT by its signed header and payload."""
    signed = token.rpartition(".")[0] or token
    if token.startswith(LEGACY_PREFIX):
        body = token[len(LEGACY_PREFIX):]
        try:
            raw = base64.b64decode((body + "=" * (-len(body) % 4)).replace("-", "+").replace("_", "/"),
                                   validate=True)
            signed = LEGACY_PREFIX + raw.partition(b":")[2].decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            signed = token  # not a token the hub accepts anyway
    return hashlib.sha256(signed.encode("utf-8", "surrogatepass")).hexdigest()[:16]
