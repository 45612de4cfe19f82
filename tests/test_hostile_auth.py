"""Hostile clients against a real `sigbridge hub` process: the REST API, tokens and the HTTP surface
(issue 10, items 1, 6, 9 and 10). Each test is an attack that worked before the change it covers."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import quote

import aiohttp
import jwt
import pytest

from bridge.core.tokens import mint_client_token, mint_rest_jwt
from tests.helpers.hub import HubHandle, hub_process, raw_connect

LogFile = IO[bytes]
SECURITY = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@pytest.fixture
def hub_log() -> Iterator[LogFile]:
    with tempfile.NamedTemporaryFile() as f:  # a name: read while the hub still writes
        yield f


def log_text(f: LogFile) -> str:
    return Path(f.name).read_text(errors="replace")


async def metric(http: aiohttp.ClientSession, h: HubHandle, line_start: str) -> float:
    async with http.get(h.http_url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
    return 0.0


def rest_url(h: HubHandle, session_id: str, tail: str = "/signal") -> str:
    return f"{h.http_url}/v2/project/{h.api_key}/session/{session_id}{tail}"


async def test_a_client_token_opens_no_rest_call_whatever_its_role_or_lifetime() -> None:
    with hub_process() as h:
        bridge = await raw_connect(h, "lab", role="moderator", data="bridge")
        assert bridge.connected["op"] == "connected"
        now = time.time()
        stolen = [mint_client_token(api_key=h.api_key, api_secret=h.api_secret, session_id="lab", role=role,
                                    ttl_s=60, now=now) for role in ("subscriber", "publisher", "moderator")]
        async with aiohttp.ClientSession() as http:
            for token in stolen:
                auth = {"X-OPENTOK-AUTH": token}
                async with http.delete(rest_url(h, "lab", f"/connection/{bridge.id}"), headers=auth) as r:
                    assert r.status == 403 and "client token" in (await r.json())["message"]
                async with http.post(rest_url(h, "lab"), json={"type": "robot.move", "data": "{}"},
                                     headers=auth) as r:
                    assert r.status == 403
            assert await metric(http, h, "sigbridge_auth_failures_total") == 2 * len(stolen)
            # The bridge is still in, and received nothing: its next frame is the answer to its own ping.
            await bridge.send(op="ping", id=1)
            assert (await bridge.recv())["op"] == "pong"
        await bridge.close()


async def test_a_rest_jwt_is_used_once_and_must_be_short_lived_with_an_iat() -> None:
    with hub_process() as h:
        listener = await raw_connect(h, "lab", role="subscriber")
        now = int(time.time())
        base = {"iss": h.api_key, "ist": "project", "iat": now, "exp": now + 60, "jti": "j1"}
        async with aiohttp.ClientSession() as http:
            captured = {"X-OPENTOK-AUTH": jwt.encode(base, h.api_secret, algorithm="HS256")}
            async with http.post(rest_url(h, "lab"), json={"type": "t", "data": "once"},
                                 headers=captured) as r:
                assert r.status == 204
            async with http.post(rest_url(h, "lab"), json={"type": "t", "data": "twice"},
                                 headers=captured) as r:
                assert r.status == 403 and "replayed" in (await r.json())["message"]
            for why, claims in [("an hour-old iat", {**base, "iat": now - 3600, "jti": "j2"}),
                                ("no iat", {k: v for k, v in base.items() if k != "iat"} | {"jti": "j3"}),
                                ("no jti", {k: v for k, v in base.items() if k != "jti"})]:
                auth = {"X-OPENTOK-AUTH": jwt.encode(claims, h.api_secret, algorithm="HS256")}
                async with http.post(rest_url(h, "lab"), json={"type": "t", "data": why}, headers=auth) as r:
                    assert r.status == 403, why
        assert (await listener.recv())["data"] == "once"
        await listener.send(op="ping", id=1)
        assert (await listener.recv())["op"] == "pong"  # nothing else was delivered
        await listener.close()


def _t1(raw: bytes) -> str:
    return "T1==" + base64.b64encode(raw).decode()


async def test_malformed_client_tokens_get_401_counted_and_logged_once(hub_log: LogFile) -> None:
    with hub_process(stderr=hub_log) as h:
        bad = [_t1(f"partner_id={h.api_key}&sig=\u00e9\u00e9:session_id=lab".encode()),  # TypeError before
               "T1==", "T1==\u00e9", _t1(b"\xff\xfe"), "T1==" + "A" * 60_000, "e" * 20_000 + ".a.b",
               "\u00e9.\u00e9.\u00e9", jwt.encode({"iss": h.api_key, "exp": 1e300, "scope": "session.connect",
                                                   "session_id": "lab"}, h.api_secret, algorithm="HS256")]
        for token in bad:
            c = await raw_connect(h, "lab", token=token)
            assert (c.connected["op"], c.connected["code"]) == ("error", 401), token[:40]
            await c.ws.wait_closed()
        async with aiohttp.ClientSession() as http:
            assert await metric(http, h, "sigbridge_auth_failures_total") == len(bad)
        good = await raw_connect(h, "lab")
        assert good.connected["op"] == "connected"
        await good.close()
    log = log_text(hub_log)
    assert "Traceback" not in log and "TypeError" not in log
    assert log.count("refused client token") == 1, log  # at most one line per interval


async def test_client_tokens_claiming_more_than_30_days_are_refused() -> None:
    with hub_process() as h:
        now = int(time.time())
        ten_years = jwt.encode({"iss": h.api_key, "ist": "project", "iat": now, "exp": now + 10 * 365 * 86400,
                                "scope": "session.connect", "session_id": "lab", "role": "moderator"},
                               h.api_secret, algorithm="HS256")
        c = await raw_connect(h, "lab", token=ten_years)
        assert (c.connected["op"], c.connected["code"]) == ("error", 401)
        assert "30 days" in c.connected["message"]
        month = mint_client_token(api_key=h.api_key, api_secret=h.api_secret, session_id="lab",
                                  ttl_s=30 * 86400, now=now)
        ok = await raw_connect(h, "lab", token=month)
        assert ok.connected["op"] == "connected"
        await ok.close()


async def test_every_malformed_rest_body_is_a_400_never_a_500(hub_log: LogFile) -> None:
    with hub_process(stderr=hub_log) as h:
        listener = await raw_connect(h, "lab", role="subscriber")
        bodies = [b"[" * 50_000, b'{"a":' * 10_000,
                  b'{"type":"t","data":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
                  b"{" * 20_000, b"\xff\xfe{}", b'{"type":"t","data":"\\ud800"}', b'{"type":"\\udfff"}',
                  b"nul\x00l",
                  b'"just a string"', b"1e999999", b'{"type": NaN}']
        async with aiohttp.ClientSession() as http:
            for body in bodies:
                auth = {"X-OPENTOK-AUTH": h.rest_jwt(), "Content-Type": "application/json"}
                async with http.post(rest_url(h, "lab"), data=body, headers=auth) as r:
                    assert r.status == 400, body[:30]
                    answer = await r.json()
                    assert answer["code"] == 400 and answer["message"]
            for form in (b"location=" + b"%ff" * 10, b"&".join(b"a=%d" % i for i in range(100))):
                auth = {"X-OPENTOK-AUTH": h.rest_jwt(), "Content-Type": "application/x-www-form-urlencoded"}
                async with http.post(h.http_url + "/session/create", data=form, headers=auth) as r:
                    assert r.status == 400 and (await r.json())["code"] == 400
            assert await metric(http, h, 'sigbridge_nacks_total{code="400"}') == len(bodies) + 2
            async with http.post(rest_url(h, "lab"), data=b"[" * 70_000,
                                 headers={"X-OPENTOK-AUTH": h.rest_jwt()}) as r:
                assert r.status == 413 and (await r.json())["code"] == 413  # over 64 KiB: not even parsed
            async with http.post(rest_url(h, "lab"), json={"type": "t", "data": "ok"},
                                 headers={"X-OPENTOK-AUTH": h.rest_jwt()}) as r:
                assert r.status == 204
        assert (await listener.recv())["data"] == "ok"  # none of the bad ones reached anyone
        await listener.close()
    log = log_text(hub_log)
    assert "Traceback" not in log and "RecursionError" not in log
    assert log.count("refused REST body") == 1


async def test_every_http_answer_carries_the_security_headers_and_errors_echo_nothing() -> None:
    probe = "zz<script>alert(1)</script>"
    with hub_process() as h:
        async with aiohttp.ClientSession() as http:
            for method, path in [("GET", "/"), ("GET", "/console.js"), ("GET", "/console.css"),
                                 ("GET", "/healthz"), ("GET", "/metrics"),
                                 ("GET", "/" + quote(probe) + ".js"),
                                 ("GET", "/a/b/" + quote(probe)),
                                 ("POST", f"/v2/project/{h.api_key}/session/{quote(probe)}/signal"),
                                 ("GET", f"/v2/project/{quote(probe)}/archive"),
                                 ("GET", "/v1/session/lab")]:
                async with http.request(method, h.http_url + path) as r:
                    body = await r.read()
                    for name, value in SECURITY.items():
                        assert r.headers.get(name) == value, (path, name)
                    csp = r.headers["Content-Security-Policy"]
                    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
                    assert "'unsafe-inline'" not in csp
                    if r.status >= 400:
                        assert b"zz" not in body and b"alert" not in body, (path, body[:100])
                    if path.startswith("/v2/") and r.status >= 400:
                        assert json.loads(body)["code"] == r.status


@pytest.mark.parametrize(("host", "config", "warned"), [
    ("0.0.0.0", "", True), ("0.0.0.0", "allowed_origins: [https://ops.example]\n", False),
    ("127.0.0.1", "", False),
])
async def test_a_hub_beyond_loopback_without_allowed_origins_warns_at_start(
        tmp_path: Path, hub_log: LogFile, host: str, config: str, warned: bool) -> None:
    (tmp_path / "hub.yaml").write_text(config or "{}\n")
    with hub_process("-c", str(tmp_path / "hub.yaml"), host=host, stderr=hub_log):
        await asyncio.sleep(0)  # the warning is printed before /healthz answers
    log = log_text(hub_log)
    assert ("allowed_origins" in log and "warning" in log) is warned, log


async def test_rest_jwt_still_works_as_the_sdk_makes_it() -> None:
    """The legitimate path under the new rules: one fresh JWT per call, 3 minutes, with iat and jti."""
    with hub_process() as h:
        c = await raw_connect(h, "lab", role="subscriber")
        async with aiohttp.ClientSession() as http:
            for i in range(3):
                auth = {"X-OPENTOK-AUTH": mint_rest_jwt(api_key=h.api_key, api_secret=h.api_secret,
                                                        now=time.time())}
                async with http.post(rest_url(h, "lab"), json={"type": "t", "data": str(i)},
                                     headers=auth) as r:
                    assert r.status == 204
        assert [(await c.recv())["data"] for _ in range(3)] == ["0", "1", "2"]
        await c.close()
