"""REST credentials (bridge.core.hub.restauth), pure: project JWTs as the opentok SDKs make them,
application RS256 JWTs as the vonage SDKs make them, and the replay cache. Every refusal is a
TokenError 403 (429 for a full replay cache) and nothing else is ever raised."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.core.hub.restauth import (
    MAX_APP_JWT_LIFE_S,
    MAX_PROJECT_JWT_LIFE_S,
    ReplayCache,
    verify_app_jwt,
    verify_project_jwt,
)
from bridge.core.tokens import CLOCK_SKEW_S, TokenError, mint_client_token, mint_rest_jwt

KEY, SECRET = "47110815", "s3cret-" + "x" * 33
NOW = 1_800_000_000.0
APP = "0b6ac3c4-8a4e-4f39-9d8e-0d5b4b7f3e21"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PRIVATE = _rsa()
APPS = {APP: PRIVATE.public_key()}


def project(claims: dict[str, Any] | None = None, drop: tuple[str, ...] = (), secret: str = SECRET) -> str:
    base: dict[str, Any] = {"iss": KEY, "ist": "project", "iat": int(NOW), "exp": int(NOW) + 180,
                            "jti": uuid.uuid4().hex}
    base.update(claims or {})
    return jwt.encode({k: v for k, v in base.items() if k not in drop}, secret, algorithm="HS256")


def app(claims: dict[str, Any] | None = None, drop: tuple[str, ...] = (), key: Any = PRIVATE) -> str:
    """What vonage-jwt's generate_application_jwt() makes for a REST call."""
    base: dict[str, Any] = {"application_id": APP, "iat": int(NOW), "exp": int(NOW) + 900,
                            "jti": str(uuid.uuid4())}
    base.update(claims or {})
    return jwt.encode({k: v for k, v in base.items() if k not in drop}, key, algorithm="RS256")


def _hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    """PyJWT refuses to HMAC with a PEM key; an attacker does not ask it."""
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    return (signing + b"." + b64(hmac.new(key, signing, hashlib.sha256).digest())).decode()


def _cache(replay: ReplayCache | None) -> ReplayCache:
    return replay if replay is not None else ReplayCache()


def verify_p(token: object, now: float = NOW, replay: ReplayCache | None = None) -> None:
    verify_project_jwt(token, api_key=KEY, api_secret=SECRET, now=now, replay=_cache(replay))


def verify_a(token: object, app_id: str = APP, now: float = NOW, replay: ReplayCache | None = None) -> None:
    verify_app_jwt(token, app_id=app_id, apps=APPS, now=now, replay=_cache(replay))


def refused(call: Any, *args: Any, **kw: Any) -> TokenError:
    with pytest.raises(TokenError) as e:
        call(*args, **kw)
    assert e.value.message
    return e.value


def test_project_jwts_as_the_sdk_makes_them_pass() -> None:
    verify_p(mint_rest_jwt(api_key=KEY, api_secret=SECRET, now=NOW))
    verify_p(project({"exp": int(NOW) + MAX_PROJECT_JWT_LIFE_S}))  # 5 minutes exactly
    verify_p(project({"jti": "0.8444218515250481"}))  # opentok's str(random.random())


@pytest.mark.parametrize(("why", "token"), [
    ("missing", None), ("empty", ""), ("not a string", b"abc"), ("not ASCII", "é" + project()),
    ("too long", "a" * 10_000), ("garbage", "a.b.c"),
    ("other secret", project(secret="0" * 40)), ("other key", project({"iss": "1"})),
    ("ist account", project({"ist": "account"})), ("no ist", project(drop=("ist",))),
    ("no iat", project(drop=("iat",))), ("no exp", project(drop=("exp",))),
    ("no jti", project(drop=("jti",))),
    ("expired", project({"iat": int(NOW) - 400, "exp": int(NOW) - CLOCK_SKEW_S - 1})),
    ("exp more than 5 min after iat", project({"iat": int(NOW) - 3600, "exp": int(NOW) + 60})),
    ("lives 5 min + 1 s", project({"exp": int(NOW) + MAX_PROJECT_JWT_LIFE_S + 1})),
    ("issued in the future", project({"iat": int(NOW) + 120, "exp": int(NOW) + 180})),
    ("exp not a number", project({"exp": "soon"})), ("exp infinite", project({"exp": 1e999})),
    ("iat a bool", project({"iat": True})), ("jti empty", project({"jti": ""})),
    ("jti an object", project({"jti": {"a": 1}})), ("jti huge", project({"jti": "j" * 300})),
    ("alg none", jwt.encode({"iss": KEY, "ist": "project", "iat": int(NOW), "exp": int(NOW) + 60,
                             "jti": "x"}, None, algorithm="none")),
])
def test_project_jwt_refusals_are_403(why: str, token: object) -> None:
    assert refused(verify_p, token).code == 403, why


@pytest.mark.parametrize("claim", ["scope", "session_id", "role", "connection_data"])
def test_a_token_with_client_claims_is_never_a_rest_credential(claim: str) -> None:
    e = refused(verify_p, project({claim: "x"}))
    assert e.code == 403 and claim in e.message
    assert refused(verify_a, app({claim: "x"})).code == 403


def test_a_real_short_lived_client_token_is_refused_whatever_its_lifetime() -> None:
    # The attack of issue 10: a subscriber's 60 s client token, inside the 5 minute window.
    for role in ("subscriber", "moderator"):
        t = mint_client_token(api_key=KEY, api_secret=SECRET, session_id="s", role=role, ttl_s=60, now=NOW)
        assert refused(verify_p, t).code == 403


def test_a_jti_is_used_once_while_it_is_valid_then_forgotten() -> None:
    replay = ReplayCache()
    t = project()
    verify_p(t, replay=replay)
    e = refused(verify_p, t, replay=replay)
    assert e.code == 403 and "replayed" in e.message
    # The same jti from another issuer is another credential.
    verify_a(app({"jti": jwt.decode(t, options={"verify_signature": False})["jti"]}), replay=replay)
    # After its expiry (+ the skew) the entry is dropped: the cache never holds dead JWTs.
    later = NOW + 180 + CLOCK_SKEW_S + 1
    verify_p(project({"iat": int(later), "exp": int(later) + 60}), now=later, replay=replay)
    assert len(replay) == 2  # the application JWT (15 min) and the new one; the first is gone


def test_a_full_replay_cache_answers_429_until_entries_expire() -> None:
    replay = ReplayCache(limit=3)
    for _ in range(3):
        verify_p(project(), replay=replay)
    assert refused(verify_p, project(), replay=replay).code == 429
    later = NOW + 180 + CLOCK_SKEW_S + 1
    verify_p(project({"iat": int(later), "exp": int(later) + 60}), now=later, replay=replay)


def test_application_jwts_as_the_vonage_sdk_makes_them_pass() -> None:
    verify_a(app())
    verify_a(app({"exp": int(NOW) + MAX_APP_JWT_LIFE_S}))


def test_application_jwt_refusals_are_403() -> None:
    other = _rsa()
    public_pem = PRIVATE.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    cases = {
        "other private key": app(key=other),
        "other application in the token": app({"application_id": str(uuid.uuid4())}),
        "lives 15 min + 1 s": app({"exp": int(NOW) + MAX_APP_JWT_LIFE_S + 1}),
        "no jti": app(drop=("jti",)), "no iat": app(drop=("iat",)),
        "expired": app({"iat": int(NOW) - 1000, "exp": int(NOW) - CLOCK_SKEW_S - 1}),
        # Algorithm confusion: HS256 with the public key as the shared secret.
        "HS256 keyed with the public key": _hs256_by_hand(
            {"application_id": APP, "iat": int(NOW), "exp": int(NOW) + 60, "jti": "x"}, public_pem),
        "a project JWT": project(),
    }
    for why, token in cases.items():
        assert refused(verify_a, token).code == 403, why
    assert refused(verify_a, app(), app_id=str(uuid.uuid4())).code == 403  # unknown id in the URL
