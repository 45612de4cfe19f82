"""Client tokens (JWT and legacy T1==) and session ids: pure checks, then the hub's answers
to bad tokens over a real WebSocket."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import warnings
from urllib.parse import urlencode

import jwt
import pytest

from bridge.core.tokens import (
    TokenError,
    mint_client_token,
    new_session_id,
    session_id_fields,
    verify_client_token,
)
from tests.helpers.hub import raw_connect, running_hub

KEY, SECRET, SID = "47110815", "s3cret-" + "x" * 33, "lab-1"
OTHER = "0" * 40  # another secret of a realistic length
NOW = 1_800_000_000.0


def _verify(token: str, session_id: str = SID, key: str = KEY, secret: str = SECRET, now: float = NOW):  # type: ignore[no-untyped-def]
    return verify_client_token(token, api_key=key, api_secret=secret, session_id=session_id, now=now)


def _code(token: str, **kw: object) -> int:
    with pytest.raises(TokenError) as e:
        _verify(token, **kw)  # type: ignore[arg-type]
    assert e.value.message and (not token or token not in e.value.message)
    return e.value.code


def _legacy(data: dict[str, object], key: str = KEY, secret: str = SECRET, urlsafe: bool = False) -> str:
    qs = urlencode(data)
    sig = hmac.new(secret.encode(), qs.encode(), hashlib.sha1).hexdigest()
    raw = f"partner_id={key}&sig={sig}:{qs}".encode()
    enc = base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
    return "T1==" + enc.decode()


def test_minted_jwt_round_trips() -> None:
    t = mint_client_token(api_key=KEY, api_secret=SECRET, session_id=SID, role="moderator", data="op=1",
                          ttl_s=60, now=NOW)
    g = _verify(t)
    assert (g.session_id, g.role, g.data, g.expires_at) == (SID, "moderator", "op=1", int(NOW) + 60)


def test_jwt_refusals() -> None:
    t = mint_client_token(api_key=KEY, api_secret=SECRET, session_id=SID, ttl_s=60, now=NOW)
    assert _code(t, now=NOW + 61) == 401  # expired
    assert _code(t, session_id="lab-2") == 403  # another session
    assert _code(t, secret=OTHER) == 401  # signed with another secret
    assert _code(t, key="999") == 401  # issued for another key
    head, body, sig = t.split(".")
    tampered_body = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(body + "==").replace(b"publisher", b"moderator")).decode().rstrip("=")
    assert _code(f"{head}.{tampered_body}.{sig}") == 401
    assert _code("not-a-token") == 401
    assert _code("") == 401
    base = {"iss": KEY, "ist": "project", "iat": int(NOW), "exp": int(NOW) + 60, "session_id": SID,
            "scope": "session.connect", "role": "publisher"}
    assert _code(jwt.encode({**base, "scope": "session.other"}, SECRET, algorithm="HS256")) == 401
    assert _code(jwt.encode({**base, "role": "king"}, SECRET, algorithm="HS256")) == 403
    assert _code(jwt.encode({**base, "connection_data": "x" * 1001}, SECRET, algorithm="HS256")) == 403
    no_exp = {k: v for k, v in base.items() if k != "exp"}
    assert _code(jwt.encode(no_exp, SECRET, algorithm="HS256")) == 401
    with warnings.catch_warnings():  # PyJWT warns that a 40-byte key is short for HS384: true, not our point
        warnings.simplefilter("ignore")
        assert _code(jwt.encode(base, SECRET, algorithm="HS384")) == 401
    # optional claims may be missing: role defaults to publisher
    g = _verify(jwt.encode({k: v for k, v in base.items() if k != "role"}, SECRET, algorithm="HS256"))
    assert g.role == "publisher"


@pytest.mark.parametrize("urlsafe", [False, True])
def test_legacy_tokens(urlsafe: bool) -> None:
    data = {"session_id": SID, "create_time": int(NOW), "expire_time": int(NOW) + 60, "role": "subscriber",
            "nonce": 42, "initial_layout_class_list": "", "connection_data": "name=ü?&>>"}
    g = _verify(_legacy(data, urlsafe=urlsafe))
    assert (g.role, g.data, g.expires_at) == ("subscriber", "name=ü?&>>", int(NOW) + 60)
    assert _code(_legacy(data, urlsafe=urlsafe), now=NOW + 61) == 401
    assert _code(_legacy(data, secret=OTHER, urlsafe=urlsafe)) == 401
    assert _code(_legacy(data, key="999", urlsafe=urlsafe)) == 401
    assert _code(_legacy({**data, "session_id": "lab-2"}, urlsafe=urlsafe)) == 403
    tampered = _legacy(data).replace("T1==", "T1==A")
    assert _code(tampered) == 401
    assert _code("T1==!!!!") == 401


def test_session_ids_are_opentok_format() -> None:
    sid = new_session_id(KEY, now=NOW, location="10.0.0.1")
    assert sid.startswith("1_") and "=" not in sid
    fields = session_id_fields(sid)
    assert fields is not None and KEY in fields and fields[0] == "1" and fields[2] == "10.0.0.1"
    assert new_session_id(KEY, now=NOW) != new_session_id(KEY, now=NOW)
    assert session_id_fields("lab-1") is None


def test_mint_refuses_bad_input() -> None:
    for kw in ({"role": "king"}, {"data": "x" * 1001}, {"ttl_s": 0}, {"ttl_s": 31 * 86400}):
        with pytest.raises(ValueError):
            mint_client_token(api_key=KEY, api_secret=SECRET, session_id=SID, now=NOW, **kw)  # type: ignore[arg-type]


async def test_hub_answers_bad_tokens_with_401_or_403_and_closes() -> None:
    async with running_hub() as h:
        now = time.time()
        good = h.token("s")
        cases = {
            "expired": (mint_client_token(api_key=h.api_key, api_secret=h.api_secret, session_id="s",
                                          ttl_s=1, now=now - 10), 401),
            "tampered": (good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"), 401),
            "wrong session": (h.token("other"), 403),
            "wrong key": (mint_client_token(api_key="1234", api_secret=h.api_secret, session_id="s",
                                            now=now), 401),
            "wrong secret": (mint_client_token(api_key=h.api_key, api_secret=OTHER, session_id="s",
                                               now=now), 401),
            "garbage": ("abc", 401),
        }
        for why, (token, code) in cases.items():
            c = await raw_connect(h, "s", token=token)
            assert c.connected["op"] == "error" and c.connected["code"] == code, why
            assert "token" in c.connected["message"]
            await c.ws.wait_closed()
        legacy = _legacy({"session_id": "s", "create_time": int(now), "expire_time": int(now) + 60,
                          "role": "moderator", "nonce": 1}, key=h.api_key, secret=h.api_secret)
        ok = await raw_connect(h, "s", token=legacy)
        assert ok.connected["op"] == "connected" and ok.connected["connection"]["role"] == "moderator"
        await ok.close()
        assert h.hub is not None and h.hub.state.metrics.auth_failures == len(cases)


def _t1(raw: bytes) -> str:
    return "T1==" + base64.b64encode(raw).decode()


@pytest.mark.parametrize(("why", "token"), [
    ("bare prefix", "T1=="), ("bad base64", "T1==!!!!"),
    ("base64 of bytes that are not UTF-8", _t1(b"\xff\xfe:")),
    # compare_digest(str, str) raises TypeError when either is not ASCII: issue 10's crash
    ("non-ASCII signature", _t1(f"partner_id={KEY}&sig=é:session_id={SID}".encode())),
    ("non-ASCII token", "T1==é"), ("non-ASCII JWT", "eyJ.é.x"), ("lone surrogate", "T1==\ud800"),
    ("huge", "T1==" + "A" * 1_000_000), ("huge JWT", "e" * 40_000), ("not a string", 12345), ("None", None),
    ("bytes", b"T1=="), ("dots only", ".."), ("JWT of a list", jwt.api_jws.encode(b"[1]", SECRET)),
])
def test_malformed_tokens_are_a_401_never_an_exception(why: str, token: object) -> None:
    with pytest.raises(TokenError) as e:
        verify_client_token(token, api_key=KEY, api_secret=SECRET, session_id=SID, now=NOW)  # type: ignore[arg-type]
    assert e.value.code == 401, why


def _claims(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"iss": KEY, "ist": "project", "iat": int(NOW), "exp": int(NOW) + 60,
                               "session_id": SID, "scope": "session.connect", "role": "publisher"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(("why", "claims", "code"), [
    ("exp infinite", _claims(exp=1e999), 401), ("exp NaN", _claims(exp=float("nan")), 401),
    ("exp a bool", _claims(exp=True), 401), ("exp an object", _claims(exp={"a": 1}), 401),
    ("exp beyond year 2286", _claims(exp=10**12), 401), ("iat a string", _claims(iat="now"), 401),
    ("role a list", _claims(role=["moderator"]), 403), ("role an object", _claims(role={"a": 1}), 403),
    ("data a number", _claims(connection_data=5), 403),
    ("10 years", _claims(exp=int(NOW) + 10 * 365 * 86400), 401),
    ("30 days + 1 h", _claims(exp=int(NOW) + 30 * 86400 + 3600), 401),
    ("30 days + 1 h, no iat", _claims(iat=None, exp=int(NOW) + 30 * 86400 + 3600), 401),
    ("issued in the future", _claims(iat=int(NOW) + 3600, exp=int(NOW) + 7200), 401),
])
def test_odd_claims_are_refused_with_their_code(why: str, claims: dict[str, object], code: int) -> None:
    assert _code(jwt.encode(claims, SECRET, algorithm="HS256")) == code, why


def test_client_tokens_live_at_most_30_days_minted_or_verified() -> None:
    _verify(jwt.encode(_claims(exp=int(NOW) + 30 * 86400), SECRET, algorithm="HS256"))  # exactly 30 days
    data = {"session_id": SID, "create_time": int(NOW), "expire_time": int(NOW) + 31 * 86400,
            "role": "publisher"}
    assert _code(_legacy(data)) == 401
    with pytest.raises(ValueError):
        mint_client_token(api_key=KEY, api_secret=SECRET, session_id=SID, ttl_s=30 * 86400 + 1, now=NOW)


def test_application_client_tokens_join_only_their_applications_sessions() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app_id = "0b6ac3c4-8a4e-4f39-9d8e-0d5b4b7f3e21"
    apps = {app_id: private.public_key()}
    own = new_session_id(app_id, now=NOW)
    claims = {"application_id": app_id, "iat": int(NOW), "exp": int(NOW) + 900, "jti": "j",
              "session_id": own, "role": "moderator", "scope": "session.connect", "subject": "video",
              "acl": {"paths": {"/session/**": {}}}, "connection_data": "name=op"}

    def verify(token: str, session_id: str = own) -> object:
        return verify_client_token(token, api_key=KEY, api_secret=SECRET, session_id=session_id, now=NOW,
                                   apps=apps)

    g = verify(jwt.encode(claims, private, algorithm="RS256"))
    assert (g.role, g.data, g.issuer, g.expires_at) == ("moderator", "name=op", app_id, int(NOW) + 900)  # type: ignore[attr-defined]
    for why, token, session_id, code in [
        ("the project's session", jwt.encode({**claims, "session_id": SID}, private, algorithm="RS256"),
         SID, 403),
        ("another key", jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                   algorithm="RS256"), own, 401),
        ("unknown application", jwt.encode({**claims, "application_id": "x"}, private, algorithm="RS256"),
         own, 401),
        ("expired", jwt.encode({**claims, "exp": int(NOW) - 1}, private, algorithm="RS256"), own, 401),
        ("HS256 with the API secret", jwt.encode(claims, SECRET, algorithm="HS256"), own, 401),
    ]:
        with pytest.raises(TokenError) as e:
            verify(token, session_id)
        assert e.value.code == code, why
    # The project's own tokens still reach every session, the application's included.
    verify_client_token(mint_client_token(api_key=KEY, api_secret=SECRET, session_id=own, now=NOW),
                        api_key=KEY, api_secret=SECRET, session_id=own, now=NOW, apps=apps)


def test_the_longest_tokens_the_sdks_make_are_accepted() -> None:
    # 1000 astral characters of data escape to 12,000 characters of JSON: a 16 KB token, still valid.
    data = "\U0001f600" * 1000
    t = mint_client_token(api_key=KEY, api_secret=SECRET, session_id=SID, data=data, now=NOW)
    legacy = _legacy({"session_id": SID, "create_time": int(NOW), "expire_time": int(NOW) + 60,
                      "connection_data": data, "initial_layout_class_list": "c" * 1000})
    assert len(t) > 16_000 and len(legacy) > 10_000
    assert _verify(t).data == data and _verify(legacy).data == data
