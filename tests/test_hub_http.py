"""The hub's plain HTTP side (healthz, metrics, console files, origins, raw REST answers), hub.yaml and
credentials, and `sigbridge hub` / `sigbridge token` as real processes."""

from __future__ import annotations

import json
import logging
import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from bridge.config.hub import HubConfigError, load_hub_config
from bridge.core.tokens import mint_rest_jwt
from bridge.hub.server import CONSOLE_DIR
from tests.helpers.hub import hub_process, raw_connect, running_hub


async def test_healthz_metrics_and_console_files() -> None:
    async with running_hub() as h, aiohttp.ClientSession() as http:
        async with http.get(h.http_url + "/healthz") as r:
            assert r.status == 200
        a = await raw_connect(h, "s")
        await a.signal("t", "x", to="nobody")
        assert (await a.recv())["code"] == 404
        await a.signal("t", "x")
        assert (await a.recv())["op"] == "signal"  # the broadcast's own copy, then the ack
        assert (await a.recv())["op"] == "ack"
        async with http.get(h.http_url + "/metrics") as r:
            text = await r.text()
            assert r.status == 200 and r.content_type == "text/plain"
        # Rendered by prometheus-client; read back with its own parser.
        samples = {(x.name, tuple(x.labels.items())): x.value
                   for f in text_string_to_metric_families(text) for x in f.samples}
        for name, labels, value in [("sigbridge_connections", (), 1), ("sigbridge_sessions", (), 1),
                                    ("sigbridge_signals_received_total", (), 2),
                                    ("sigbridge_nacks_total", (("code", "404"),), 1),
                                    ("sigbridge_signals_dropped_total", (), 0)]:
            assert samples[(name, labels)] == value, name
        assert samples[("sigbridge_limit", (("key", "rate_limit"),))] > 0
        async with http.get(h.http_url + "/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert await r.read() == (CONSOLE_DIR / "index.html").read_bytes()
        for name in sorted(p.name for p in CONSOLE_DIR.iterdir() if p.is_file()):
            async with http.get(f"{h.http_url}/{name}") as r:
                assert r.status == 200 and await r.read() == (CONSOLE_DIR / name).read_bytes(), name
        for missing in ["/nope.js", "/..%2Fsession%2Fhub.py", "/.hidden", "/index.html%2F..%2Fsigbridge.js"]:
            async with http.get(h.http_url + missing) as r:
                assert r.status == 404, missing
        await a.close()


async def test_allowed_origins_are_enforced_for_browsers() -> None:
    async with running_hub(allowed_origins=("https://ops.example",)) as h:
        with pytest.raises(websockets.InvalidStatus) as e:
            await websockets.connect(h.session_url("s"), origin="https://evil.example")  # type: ignore[arg-type]
        assert e.value.response.status_code == 403
        ok = await websockets.connect(h.session_url("s"), origin="https://ops.example")  # type: ignore[arg-type]
        await ok.close()


async def test_rest_answers_raw() -> None:
    async with running_hub() as h, aiohttp.ClientSession() as http:
        def auth() -> dict[str, str]:  # a fresh JWT per call, as the SDKs make them (a jti is used once)
            return {"X-OPENTOK-AUTH": h.rest_jwt()}

        async with http.post(h.http_url + "/session/create", headers=auth(), data={"location": ""}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            sid = (await r.json())[0]["session_id"]
        base = f"{h.http_url}/v2/project/{h.api_key}/session/{sid}"
        async with http.post(base + "/signal", json={"type": "t"}) as r:
            assert r.status == 403 and (await r.json())["code"] == 403
        far = mint_rest_jwt(api_key=h.api_key, api_secret=h.api_secret, now=time.time(), ttl_s=3600)
        async with http.post(base + "/signal", json={"type": "t"}, headers={"X-OPENTOK-AUTH": far}) as r:
            assert r.status == 403
        other = f"{h.http_url}/v2/project/999/session/{sid}/signal"
        async with http.post(other, json={"type": "t"}, headers=auth()) as r:
            assert r.status == 403
        async with http.post(base + "/signal", data="{nope", headers=auth()) as r:
            assert r.status == 400 and "JSON" in (await r.json())["message"]
        async with http.post(base + "/signal", json=[1], headers=auth()) as r:
            assert r.status == 400
        async with http.post(base + "/signal", json={"type": "t", "data": 5}, headers=auth()) as r:
            assert r.status == 400
        async with http.post(base + "/signal", data="x" * 70_000, headers=auth()) as r:
            assert r.status == 413
        async with http.post(base + "/signal", json={"type": "t", "data": "x"}, headers=auth()) as r:
            assert r.status == 204  # nobody there: accepted, delivered to no one
        async with http.delete(base + "/connection/nobody", headers=auth()) as r:
            assert r.status == 404


def test_hub_yaml_env_and_generated_credentials(tmp_path: Path) -> None:
    cfg_file = tmp_path / "hub.yaml"
    cfg_file.write_text("listen: 0.0.0.0:9000\napi_key: '123'\napi_secret: abc\nreconnect_grace_s: 5\n"
                        "resume_buffer: 10\nrate_limit: {per_second: 0, burst: 5}\n"
                        "allowed_origins: [https://a.example]\ntls: {cert: /c.pem, key: /k.pem}\n")
    c = load_hub_config(str(cfg_file), env={})
    assert (c.host, c.port, c.api_key, c.api_secret) == ("0.0.0.0", 9000, "123", "abc")
    assert (c.reconnect_grace_s, c.resume_buffer, c.rate_limit, c.rate_burst) == (5.0, 10, 0.0, 5.0)
    assert c.allowed_origins == ("https://a.example",) and (c.tls_cert, c.tls_key) == ("/c.pem", "/k.pem")
    c = load_hub_config(str(cfg_file), listen="127.0.0.1:1", env={"SIGBRIDGE_API_KEY": "k",
                                                                   "SIGBRIDGE_API_SECRET": "s"})
    assert (c.host, c.port, c.api_key, c.api_secret) == ("127.0.0.1", 1, "k", "s")
    # nothing configured: generated once, 0600, then reused
    d = tmp_path / "state"
    c1 = load_hub_config(None, state_dir=str(d), env={})
    c2 = load_hub_config(None, env={"STATE_DIRECTORY": str(d)})
    assert (c1.api_key, c1.api_secret) == (c2.api_key, c2.api_secret) and c1.api_secret
    assert (c1.host, c1.port, c1.reconnect_grace_s, c1.rate_limit) == ("127.0.0.1", 8765, 60.0, 1000.0)
    assert stat.S_IMODE((d / "credentials.json").stat().st_mode) == 0o600
    bad = {"nope: 1\n": "unknown key", "listen: 8765\n": "HOST:PORT",
           "reconnect_grace_s: -1\n": "1: reconnect_grace_s: must be at least 0",
           "tls: {cert: a}\n": "both", "api_key: x\n": "both", "[1]\n": "mapping", "a: [\n": "YAML"}
    for text, words in bad.items():
        cfg_file.write_text(text)
        with pytest.raises(HubConfigError) as e:
            load_hub_config(str(cfg_file), env={}, state_dir=str(d))
        assert str(cfg_file) in str(e.value) and words in str(e.value), text


async def test_hub_process_and_token_command(tmp_path: Path) -> None:
    with hub_process() as h:
        c = await raw_connect(h, "lab-1", role="moderator")
        assert c.connected["op"] == "connected"
        await c.close()
    # `sigbridge token` and `sigbridge hub` agree through the state dir; the token is alone on stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_API")}
    out = subprocess.run([sys.executable, "-m", "bridge", "token", "lab-1", "--role", "moderator",
                          "--state-dir", str(tmp_path), "--create"], env=env, capture_output=True, text=True,
                         check=True)
    token = out.stdout.strip()
    assert out.stdout == token + "\n" and token.count(".") == 2
    creds = json.loads((tmp_path / "credentials.json").read_text())
    assert creds["api_secret"] not in out.stderr + out.stdout
    with hub_process("--state-dir", str(tmp_path), env=env) as h:
        c = await raw_connect(h, "lab-1", token=token)
        assert c.connected["op"] == "connected" and c.connected["connection"]["role"] == "moderator"
        await c.close()


def test_token_command_flags_role_data_ttl_and_clear_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_API")}

    def token(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge", "token", *args, "--state-dir", str(tmp_path)],
                              env=env, capture_output=True, text=True, timeout=60)

    out = token("lab-2", "--role", "subscriber", "--data", "name=cam", "--ttl", "120", "--create")
    assert out.returncode == 0, out.stderr
    creds = json.loads((tmp_path / "credentials.json").read_text())
    claims = jwt.decode(out.stdout.strip(), creds["api_secret"], algorithms=["HS256"])
    assert (claims["session_id"], claims["role"], claims["connection_data"]) == ("lab-2", "subscriber",
                                                                                 "name=cam")
    assert claims["exp"] - claims["iat"] == 120 and claims["scope"] == "session.connect"
    assert claims["iss"] == creds["api_key"]
    claims = jwt.decode(token("lab-2").stdout.strip(), creds["api_secret"], algorithms=["HS256"])
    assert (claims["role"], claims["exp"] - claims["iat"]) == ("publisher", 86400)  # the defaults
    for args, words in [(["--ttl", "0"], "ttl"), (["--ttl", str(31 * 86400)], "ttl"),
                        (["--data", "x" * 1001], "1000"), (["--role", "king"], "invalid choice")]:
        bad = token("lab-2", *args)
        assert bad.returncode == 2 and bad.stdout == "" and words in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr


def test_example_hub_config_loads_with_the_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / "config" / "hub.example.yaml"
    c = load_hub_config(str(example), env={"SIGBRIDGE_API_KEY": "k", "SIGBRIDGE_API_SECRET": "s"})
    defaults = load_hub_config(None, env={"SIGBRIDGE_API_KEY": "k", "SIGBRIDGE_API_SECRET": "s"})
    assert c == defaults


async def test_tls_serves_wss_and_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    ctx = ssl.create_default_context(cafile=str(cert))
    async with running_hub(tls_cert=str(cert), tls_key=str(key)) as h:
        assert h.url.startswith("wss://") and h.http_url.startswith("https://")
        async with aiohttp.ClientSession() as http, http.get(h.http_url + "/healthz", ssl=ctx) as r:
            assert r.status == 200
        async with websockets.connect(h.session_url("s"), ssl=ctx) as ws:
            await ws.send(json.dumps({"op": "connect", "token": h.token("s")}))
            assert json.loads(await ws.recv())["op"] == "connected"


async def test_tokens_and_secrets_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_hub(reconnect_grace_s=0.1) as h:
        assert h.hub is not None and h.api_secret not in repr(h.hub.config)
        good, bad = h.token("s", role="moderator"), h.token("other")
        a = await raw_connect(h, "s", token=good)
        refused = await raw_connect(h, "s", token=bad)
        assert refused.connected["code"] == 403
        await a.send(op="connect", token=good)
        assert (await a.recv())["op"] == "error"
        rest = h.rest_jwt()
        async with aiohttp.ClientSession() as http:
            url = f"{h.http_url}/v2/project/{h.api_key}/session/s/signal"
            async with http.post(url, json={"type": "t"}, headers={"X-OPENTOK-AUTH": rest}) as r:
                assert r.status == 204
        await a.ws.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "joined as moderator" in logged  # the hub does log, just never credentials
    for secret in (h.api_secret, good, bad, rest, a.connected["resume_secret"]):
        assert secret not in logged
