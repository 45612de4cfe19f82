"""Property-based (hypothesis): arbitrary tokens to the token verifiers, and arbitrary REST bodies and
headers to a real `sigbridge hub` process. Nothing raises but TokenError with a documented code; the
hub answers every request with a documented status and JSON error body, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.hub.restauth import ReplayCache, verify_app_jwt, verify_project_jwt
from bridge.core.tokens import TokenError, mint_rest_jwt, verify_client_token
from tests.helpers.hub import HubHandle, hub_process

KEY, SECRET, SID = "47110815", "s3cret-" + "x" * 33, "lab-1"
APP = "0b6ac3c4-8a4e-4f39-9d8e-0d5b4b7f3e21"
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APPS = {APP: PRIVATE.public_key()}
NOW = time.time()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
claim_names = st.sampled_from(["iss", "ist", "iat", "exp", "jti", "scope", "session_id", "role",
                               "connection_data", "application_id", "expire_time", "create_time", "nbf"])
good_values = st.sampled_from([KEY, "project", int(NOW), int(NOW) + 60, "session.connect", SID,
                               "moderator", APP, "x" * 1001, 10**12, -1])
claims = st.dictionaries(claim_names, json_values | good_values, max_size=10)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def signed(claims: dict[str, Any], alg: str) -> str:
    """A JWT with any claims whatever (PyJWT refuses to encode some, an attacker does not ask it)."""
    head = _b64(json.dumps({"alg": alg.upper(), "typ": "JWT"}).encode())
    signing = (head + "." + _b64(json.dumps(claims).encode())).encode()
    if alg == "hs256":
        sig = hmac.new(SECRET.encode(), signing, hashlib.sha256).digest()
    else:
        sig = PRIVATE.sign(signing, padding.PKCS1v15(), hashes.SHA256())
    return signing.decode() + "." + _b64(sig)


@st.composite
def tokens(draw: st.DrawFn) -> object:
    """Garbage, JWT-shaped garbage, and JWTs/T1== tokens with arbitrary claims but a valid signature
    (so that the claim checks, not only the signature check, meet the odd values)."""
    kind = draw(st.sampled_from(["text", "object", "jwt-shaped", "hs256", "rs256", "t1", "t1-raw"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "object":
        return draw(json_values | st.binary(max_size=50))
    if kind == "jwt-shaped":
        parts = [_b64(draw(st.binary(max_size=60))) for _ in range(draw(st.integers(1, 4)))]
        return ".".join(parts)
    if kind in ("hs256", "rs256"):
        return signed(draw(claims), kind)
    data = urlencode({k: str(v) for k, v in draw(claims).items()})
    if kind == "t1-raw":
        return "T1==" + _b64(draw(st.binary(max_size=80)))
    sig = draw(st.sampled_from([hmac.new(SECRET.encode(), data.encode(), hashlib.sha1).hexdigest(),
                                draw(st.text(max_size=45))]))
    partner = draw(st.sampled_from([KEY, "é", ""]))
    raw = f"partner_id={partner}&sig={sig}:{data}".encode("utf-8", "surrogatepass")
    return "T1==" + base64.b64encode(raw).decode()


@settings(max_examples=400, deadline=None)
@given(tokens(), st.sampled_from([SID, "1_" + _b64(f"1~{APP}~~0~r~".encode())]))
def test_client_token_verifier_only_ever_refuses_with_401_or_403(token: object, session_id: str) -> None:
    try:
        g = verify_client_token(token, api_key=KEY, api_secret=SECRET, session_id=session_id, now=NOW,  # type: ignore[arg-type]
                                apps=APPS)
    except TokenError as e:
        assert e.code in (401, 403) and e.message
        assert not isinstance(token, str) or len(token) < 8 or token not in e.message
    else:
        assert g.session_id == session_id
        assert g.role in ("moderator", "publisher", "publisheronly", "subscriber")
        assert g.expires_at - NOW <= 30 * 86400 + 30


@settings(max_examples=400, deadline=None)
@given(tokens())
def test_rest_verifiers_only_ever_refuse_with_403(token: object) -> None:
    for verify in (lambda: verify_project_jwt(token, api_key=KEY, api_secret=SECRET, now=NOW,
                                              replay=ReplayCache()),
                   lambda: verify_app_jwt(token, app_id=APP, apps=APPS, now=NOW, replay=ReplayCache())):
        try:
            verify()
        except TokenError as e:
            assert e.code == 403 and e.message
        else:  # accepted: then it is a REST credential, with no client claim
            assert isinstance(token, str)
            payload = jwt.decode(token, options={"verify_signature": False})
            assert not {"scope", "session_id", "role", "connection_data"} & set(payload)


# ---- REST, against a real hub process ---------------------------------------------------------------

@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubHandle]:
    state = tmp_path_factory.mktemp("state")
    (state / "applications").mkdir()
    (state / "applications" / f"{APP}.pem").write_bytes(PRIVATE.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with hub_process("--state-dir", str(state)) as h:
        yield h


def request(h: HubHandle, method: str, path: str, body: bytes, headers: dict[str, str],
            ) -> tuple[int, bytes, http.client.HTTPMessage]:
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read(), r.headers
    finally:
        conn.close()


def assert_documented(status: int, body: bytes, allowed: set[int]) -> None:
    assert status in allowed, (status, body[:200])
    if status >= 400:
        obj = json.loads(body)
        assert obj["code"] == status and isinstance(obj["message"], str)


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["type", "data", "x"]), json_values | st.text(max_size=30),
                    max_size=3).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 60_000).map(lambda n: b"[" * n + b"]" * n),
    st.text(max_size=40).map(lambda t: ('{"type":"t","data":"' + t + '"}').encode("utf-8", "surrogatepass")),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                      max_size=60)
paths = st.sampled_from(["/session/create", "/v2/session/create", "/v2/project/{k}/session/s/signal",
                         "/v2/project/{k}/session/s/connection/c/signal",
                         "/v2/project/{k}/session/s/connection",
                         "/v2/project/{k}/session/s/connection/c", "/v2/project/{k}/archive",
                         "/v2/project/{k}/session/s/stream"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(path=paths, method=st.sampled_from(["POST", "GET", "DELETE", "PUT"]), body=bodies,
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain",
                                     "multipart/form-data; boundary=x", ""]),
       key=st.sampled_from([KEY, APP, "other"]))
def test_rest_with_valid_auth_answers_only_documented_codes(hub: HubHandle, path: str, method: str,
                                                            body: bytes, content_type: str, key: str) -> None:
    k = hub.api_key if key == KEY else key
    headers = {"X-OPENTOK-AUTH": mint_rest_jwt(api_key=hub.api_key, api_secret=hub.api_secret,
                                               now=time.time())}
    if content_type:
        headers["Content-Type"] = content_type
    status, answer, _ = request(hub, method, path.format(k=k), body, headers)
    assert_documented(status, answer, {200, 204, 400, 403, 404, 405, 413, 501})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(path=paths, opentok=st.none() | header_text, bearer=st.none() | header_text,
       claims=claims)
def test_rest_with_arbitrary_credentials_answers_only_documented_codes(
        hub: HubHandle, path: str, opentok: str | None, bearer: str | None, claims: dict[str, Any]) -> None:
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if opentok is not None:
        headers["X-OPENTOK-AUTH"] = opentok
    if bearer is not None:
        headers["Authorization"] = bearer
    elif claims:  # a well-formed Bearer JWT with odd claims, signed by a key the hub does not know
        headers["Authorization"] = "Bearer " + signed(claims, "rs256")
    status, answer, _ = request(hub, "POST", path.format(k=hub.api_key if opentok else APP),
                                b'{"type":"t","data":"x"}', headers)
    assert_documented(status, answer, {403, 501})


def test_fresh_uuid_jtis_never_collide_with_the_replay_cache(hub: HubHandle) -> None:
    """Sanity for the properties above: each of them mints its own JWT, so none is refused as a replay."""
    token = mint_rest_jwt(api_key=hub.api_key, api_secret=hub.api_secret, now=time.time())
    path = f"/v2/project/{hub.api_key}/session/{uuid.uuid4()}/signal"
    first = request(hub, "POST", path, b'{"type":"t"}', {"X-OPENTOK-AUTH": token})
    again = request(hub, "POST", path, b'{"type":"t"}', {"X-OPENTOK-AUTH": token})
    assert (first[0], again[0]) == (204, 403)
