"""OpenTok- and Vonage-compatible client tokens and session ids, pure (no I/O, the caller passes the
clock in).

Client tokens come in three forms:

* OpenTok client JWTs (HS256 with the project's API secret, claims ``iss`` = API key, ``ist`` =
  "project", ``iat``, ``exp``, ``scope`` = "session.connect", ``session_id``, ``role``, optional
  ``connection_data``; other claims vary per SDK and are ignored);
* Vonage application client JWTs (RS256 with an application's private key, ``application_id``
  instead of ``iss``/``ist``, otherwise the same claims), verified with that application's public key;
* legacy tokens ``"T1==" + base64("partner_id=KEY&sig=HEX(HMAC-SHA1(secret, DATA)):" + DATA)`` with
  DATA a query string (``session_id``, ``create_time``, ``expire_time``, ``role``, ``connection_data``).

Verification raises :class:`TokenError` with the code to answer, and nothing else whatever the string
holds: 401 when the token is not a valid credential here (malformed, not ASCII, over
:data:`MAX_TOKEN_CHARS`, tampered, expired, living longer than 30 days, other key, unknown
application), 403 when it is valid but does not grant what was asked (another session, a session of
another application, an unknown role, connection data too long). Messages never echo the token.
The REST API's JWTs are in :mod:`bridge.core.hub.restauth`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt

from bridge.core.errors import CodedError
from bridge.core.signal import (
    FORBIDDEN,
    MAX_CONNECTION_DATA_CHARS,
    PUBLISHER,
    ROLES,
    UNAUTHORIZED,
)

LEGACY_PREFIX = "T1=="
CONNECT_SCOPE = "session.connect"
#: Longest lifetime a client token may have, minted or verified (OpenTok's and Vonage's limit).
MAX_TOKEN_TTL_S = 30 * 24 * 3600
#: A REST JWT may not expire further ahead than this (seconds), plus a little clock skew.
MAX_REST_JWT_AHEAD_S = 5 * 60
CLOCK_SKEW_S = 30
#: Longer strings are refused unread. The longest a server SDK makes is about 25,000: 1000 characters
#: of connection data escape to up to 12,000 in the JWT's JSON (astral ones as two \uXXXX), and the
#: base64 adds a third (16,303 for 1000 emoji), plus a layout class list of up to 1000 characters.
MAX_TOKEN_CHARS = 32 * 1024
#: Epoch seconds beyond this are nonsense (year 2286): refused rather than trusted.
_MAX_EPOCH = 10**10


class TokenError(CodedError):
    """A credential was refused. ``code`` is 401 (not a valid credential), 403 (not allowed) or, for
    REST JWTs only, 429 (the replay cache is full)."""


@dataclass(frozen=True, slots=True)
class ClientGrant:
    """What a verified client token grants: joining ``session_id`` with ``role`` and ``data``.
    ``issuer`` is the API key or the application id that signed it."""

    session_id: str
    role: str
    data: str
    expires_at: int  # seconds since epoch
    issuer: str = ""


def check_token_text(token: object, code: int = UNAUTHORIZED, what: str = "token") -> str:
    """``token`` if it is a non-empty ASCII string of at most :data:`MAX_TOKEN_CHARS`; else
    :class:`TokenError` ``code``. Run first, so that no parser ever sees anything else."""
    if not isinstance(token, str) or not token:
        raise TokenError(code, f"{what} missing")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(code, f"{what} longer than {MAX_TOKEN_CHARS} characters")
    if not token.isascii():
        raise TokenError(code, f"{what} holds characters that are not ASCII")
    return token


def epoch_claim(value: object, name: str, code: int = UNAUTHORIZED) -> int:
    """A time claim as whole epoch seconds: an int, a finite float, or (legacy tokens) digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            (isinstance(value, float) and not math.isfinite(value)) or not 0 <= value <= _MAX_EPOCH:
        raise TokenError(code, f"token has no valid {name!r} time")
    return int(value)


def verify_client_token(token: object, *, api_key: str, api_secret: str, session_id: str, now: float,
                        apps: Mapping[str, Any] | None = None) -> ClientGrant:
    """Verify a client token for joining ``session_id`` at time ``now``.

    ``apps`` maps application ids to their RSA public keys (objects or PEM). A project token may join
    any session; an application's token only the sessions created for that application (see
    :func:`session_owner`). Returns the grant or raises :class:`TokenError` (401 or 403, see the
    module docstring) and never anything else.
    """
    text = check_token_text(token)
    if text.startswith(LEGACY_PREFIX):
        claims, issuer = _legacy_claims(text, api_key, api_secret), api_key
    else:
        claims, issuer = _jwt_claims(text, api_key, api_secret, apps or {})
        if claims.get("scope") != CONNECT_SCOPE:
            raise TokenError(UNAUTHORIZED, f"token scope is not {CONNECT_SCOPE!r}")
    expires_at = epoch_claim(claims.get("exp", claims.get("expire_time")), "exp")
    if expires_at < now:
        raise TokenError(UNAUTHORIZED, "token expired")
    issued = claims.get("iat", claims.get("create_time"))
    issued_at = None if issued is None else epoch_claim(issued, "iat")
    if issued_at is not None and issued_at > now + CLOCK_SKEW_S:
        raise TokenError(UNAUTHORIZED, "token issued in the future (check the clocks)")
    if expires_at - (now if issued_at is None else issued_at) > MAX_TOKEN_TTL_S + CLOCK_SKEW_S:
        raise TokenError(UNAUTHORIZED, "token lives longer than 30 days")
    if claims.get("session_id") != session_id:
        raise TokenError(FORBIDDEN, "token is for another session")
    if issuer != api_key and session_owner(session_id, apps or {}) != issuer:
        raise TokenError(FORBIDDEN, "the session was not created for this token's application")
    role = claims.get("role", PUBLISHER) or PUBLISHER
    if not isinstance(role, str) or role not in ROLES:
        raise TokenError(FORBIDDEN, f"token role must be one of {', '.join(sorted(ROLES))}")
    data = claims.get("connection_data", "") or ""
    if not isinstance(data, str) or len(data) > MAX_CONNECTION_DATA_CHARS:
        raise TokenError(FORBIDDEN, f"token connection data must be a string of at most "
                                    f"{MAX_CONNECTION_DATA_CHARS} characters")
    return ClientGrant(session_id=session_id, role=role, data=data, expires_at=expires_at, issuer=issuer)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (only to pick the key to verify it with); 401 if unreadable."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise TokenError(UNAUTHORIZED, "token is neither a JWT nor a T1== token") from None
    return claims


def _jwt_claims(token: str, api_key: str, api_secret: str, apps: Mapping[str, Any],
                ) -> tuple[dict[str, Any], str]:
    unverified = unverified_claims(token)
    if "iss" not in unverified and "application_id" in unverified:
        app_id = str(unverified["application_id"])
        if app_id not in apps:
            raise TokenError(UNAUTHORIZED, "token was issued for an application this hub does not know")
        return _decode(token, apps[app_id], "RS256"), app_id
    if str(unverified.get("iss")) != api_key:
        raise TokenError(UNAUTHORIZED, "token was issued for another API key")
    claims = _decode(token, api_secret, "HS256")
    if claims.get("ist", "project") != "project":
        raise TokenError(UNAUTHORIZED, "token 'ist' claim must be 'project'")
    return claims, api_key


def _decode(token: str, key: Any, algorithm: str) -> dict[str, Any]:
    """Verify the signature (time claims are checked by the caller, with its clock)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[algorithm],
            options={"require": ["exp"], "verify_iat": False, "verify_exp": False, "verify_nbf": False,
                     "verify_aud": False, "verify_iss": False},
        )
    except jwt.InvalidSignatureError:
        raise TokenError(UNAUTHORIZED, "token signature does not match (tampered or other key)") from None
    except (jwt.InvalidTokenError, ValueError, TypeError) as e:
        raise TokenError(UNAUTHORIZED, f"token rejected: {type(e).__name__}") from None
    return claims


def _legacy_claims(token: str, api_key: str, api_secret: str) -> dict[str, Any]:
    body = token[len(LEGACY_PREFIX):]
    body += "=" * (-len(body) % 4)
    try:
        # Standard or URL-safe alphabet: map the URL-safe characters onto the standard ones.
        raw = base64.b64decode(body.replace("-", "+").replace("_", "/"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise TokenError(UNAUTHORIZED, "T1== token is not valid base64 of UTF-8 text") from None
    head, sep, data = raw.partition(":")
    if not sep:
        raise TokenError(UNAUTHORIZED, "T1== token has no signed part")
    fields = {k: v[0] for k, v in parse_qs(head).items()}
    if fields.get("partner_id") != api_key:
        raise TokenError(UNAUTHORIZED, "token was issued for another API key")
    expected = hmac.new(api_secret.encode(), data.encode(), hashlib.sha1).hexdigest().encode()
    # Bytes on both sides: compare_digest raises TypeError for a str that is not ASCII.
    if not hmac.compare_digest(expected, fields.get("sig", "").lower().encode("utf-8", "surrogatepass")):
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


def session_owner(session_id: str, apps: Mapping[str, Any]) -> str | None:
    """The application a session was created for (its id is among the session id's fields), or None
    for every other session (the project's: any string, or one made with the API key)."""
    fields = session_id_fields(session_id)
    if fields is None or len(fields) < 2:
        return None
    return fields[1] if fields[1] in apps else None


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
