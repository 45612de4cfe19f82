"""Client tokens (JWT and legacy T1==), REST JWTs and session ids: pure checks, then the hub's answers
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
    CLOCK_SKEW_S,
    MAX_REST_JWT_AHEAD_S,
    TokenError,
    mint_client_token,
    mint_rest_jwt,
    new_session_id,
    session_id_fields,
    verify_client_token,
    verify_rest_jwt,
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


def test_rest_jwt() -> None:
    verify_rest_jwt(mint_rest_jwt(api_key=KEY, api_secret=SECRET, now=NOW), api_key=KEY, api_secret=SECRET,
                    now=NOW)
    cases = [
        (None, "missing"),
        (mint_rest_jwt(api_key=KEY, api_secret=OTHER, now=NOW), "secret"),
        (mint_rest_jwt(api_key="1", api_secret=SECRET, now=NOW), "key"),
        (mint_rest_jwt(api_key=KEY, api_secret=SECRET, now=NOW - 600), "expired"),
        (mint_rest_jwt(api_key=KEY, api_secret=SECRET, now=NOW, ttl_s=3600), "too far ahead"),
        (jwt.encode({"iss": KEY, "ist": "account", "exp": int(NOW) + 60}, SECRET, algorithm="HS256"), "ist"),
    ]
    for token, why in cases:
        with pytest.raises(TokenError) as e:
            verify_rest_jwt(token, api_key=KEY, api_secret=SECRET, now=NOW)
        assert e.value.code == 403, why


def test_rest_jwt_expiry_at_most_five_minutes_ahead() -> None:
    assert MAX_REST_JWT_AHEAD_S == 300
    for ttl in (1, 180, 300, 300 + CLOCK_SKEW_S):  # 5 minutes, plus the clock skew allowed
        verify_rest_jwt(mint_rest_jwt(api_key=KEY, api_secret=SECRET, now=NOW, ttl_s=ttl), api_key=KEY,
                        api_secret=SECRET, now=NOW)
    with pytest.raises(TokenError) as e:
        verify_rest_jwt(mint_rest_jwt(api_key=KEY, api_secret=SECRET, now=NOW, ttl_s=300 + CLOCK_SKEW_S + 1),
                        api_key=KEY, api_secret=SECRET, now=NOW)
    assert e.value.code == 403 and "5 minutes" in e.value.message
    no_exp = jwt.encode({"iss": KEY, "ist": "project", "iat": int(NOW)}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        verify_rest_jwt(no_exp, api_key=KEY, api_secret=SECRET, now=NOW)


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
