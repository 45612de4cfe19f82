"""The current Vonage server SDK (`vonage` 4.x / `vonage-video`) and the legacy `opentok` SDK, both
unchanged, against one real `sigbridge hub` process over TLS with a certificate generated here and
two applications made by `sigbridge app create`: sessions, client tokens of each SDK (joining with
the wire protocol and with `sigbridge listen`), signals to all and to one, the connection listing,
force disconnect, media calls (501), and the error cases: wrong key, expired, other application,
unknown connection.

The SDKs are synchronous (requests): their calls run in a thread while the test reads the sockets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import opentok
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from vonage import Auth, HttpClientOptions, Vonage
from vonage_http_client.errors import ForbiddenError, HttpRequestError, NotFoundError
from vonage_video.models import CreateArchiveRequest, SessionOptions, SignalData, TokenOptions
from vonage_video.models.enums import ArchiveMode, MediaMode, TokenRole

from tests.conftest import scaled
from tests.helpers.hub import HubHandle, hub_process, raw_connect

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class App:
    id: str
    private_key: str  # PEM


@dataclass
class TlsHub:
    h: HubHandle
    a: App
    b: App
    cert: Path

    def vonage(self, app: App, private_key: str | None = None) -> Any:
        """The SDK exactly as an application server sets it up, pointed at the hub."""
        return Vonage(Auth(application_id=app.id, private_key=private_key or app.private_key),
                      HttpClientOptions(video_host=f"127.0.0.1:{self.h.port}", timeout=10)).video

    def opentok(self) -> opentok.Client:
        return opentok.Client(self.h.api_key, self.h.api_secret, api_url=self.h.http_url, timeout=10)


def _app_create(state: Path, key_file: Path) -> App:
    out = subprocess.run([sys.executable, "-m", "bridge", "app", "create", "--state-dir", str(state),
                          "--private-key", str(key_file)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    app_id = out.stdout.strip()
    assert out.stdout == app_id + "\n" and uuid.UUID(app_id)  # only the id on stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (state / "applications" / f"{app_id}.pem").exists()
    assert "PRIVATE" not in out.stderr
    return App(app_id, key_file.read_text())


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHub]:
    d = tmp_path_factory.mktemp("vonage")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    a, b = _app_create(d / "state", d / "a.key"), _app_create(d / "state", d / "b.key")
    (d / "hub.yaml").write_text(f"tls: {{cert: {cert}, key: {key}}}\n")
    mp = pytest.MonkeyPatch()
    # How an application server trusts a self-signed hub: requests (both SDKs) and Python's ssl.
    mp.setenv("REQUESTS_CA_BUNDLE", str(cert))
    mp.setenv("SSL_CERT_FILE", str(cert))
    try:
        with hub_process("-c", str(d / "hub.yaml"), "--state-dir", str(d / "state"), tls=True) as h:
            yield TlsHub(h, a, b, cert)
    finally:
        mp.undo()


def _claims(token: str | bytes) -> dict[str, Any]:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


async def test_vonage_sdk_sessions_tokens_signals_listing_and_disconnect(tls_hub: TlsHub) -> None:
    video, h = tls_hub.vonage(tls_hub.a), tls_hub.h
    session = await asyncio.to_thread(video.create_session, SessionOptions(
        media_mode=MediaMode.ROUTED, archive_mode=ArchiveMode.MANUAL, location="10.0.0.1", e2ee=False))
    sid = session.session_id
    assert sid.startswith("1_") and session.location == "10.0.0.1"
    op_token = video.generate_client_token(TokenOptions(
        session_id=sid, role=TokenRole.MODERATOR, connection_data="name=op", exp=int(time.time()) + 600))
    robot_token = video.generate_client_token(TokenOptions(session_id=sid, connection_data="name=robot"))
    assert _claims(op_token)["application_id"] == tls_hub.a.id  # RS256, application_id: the SDK's own
    op = await raw_connect(h, sid, token=op_token.decode())
    assert op.connected["op"] == "connected", op.connected
    me = op.connected["connection"]
    assert (me["role"], me["data"]) == ("moderator", "name=op")
    robot = await raw_connect(h, sid, token=robot_token.decode())
    assert robot.connected["connection"]["role"] == "publisher"  # the SDK's default role
    assert (await op.recv())["op"] == "connection_created"

    await asyncio.to_thread(video.send_signal, sid, SignalData(type="robot.move", data='{"x":1}'))
    for c in (op, robot):
        s = await c.recv()
        assert (s["op"], s["type"], s["data"], s["from"]) == ("signal", "robot.move", '{"x":1}', None)
    await asyncio.to_thread(video.send_signal, sid, SignalData(type="only", data="r"), robot.id)
    assert ((await robot.recv())["type"]) == "only"

    # The listing in the Vonage API's shape, through the SDK's own authenticated HTTP client.
    listing = await asyncio.to_thread(video.http_client.get, video.http_client.video_host,
                                      f"/v2/project/{tls_hub.a.id}/session/{sid}/connection")
    assert (listing["count"], listing["projectId"], listing["sessionId"]) == (2, tls_hub.a.id, sid)
    assert {i["connectionId"] for i in listing["items"]} == {op.id, robot.id}
    for item in listing["items"]:
        assert item["connectionState"] == "Connected" and isinstance(item["createdAt"], int)

    await asyncio.to_thread(video.disconnect_client, sid, robot.id)
    assert await robot.recv() == {"op": "disconnected", "reason": "forceDisconnected"}
    assert (await op.recv())["reason"] == "forceDisconnected"
    for call, args in [(video.disconnect_client, (sid, robot.id)),
                       (video.send_signal, (sid, SignalData(type="t", data=""), "no-such-connection"))]:
        with pytest.raises(NotFoundError):  # unknown connection: 404
            await asyncio.to_thread(call, *args)

    # Media: a clear 501 that names what the hub is, never a crash.
    for call, args in [(video.list_streams, (sid,)), (video.list_archives, ()), (video.list_broadcasts, ()),
                       (video.start_archive, (CreateArchiveRequest(session_id=sid),)),
                       (video.mute_all_streams, (sid,))]:
        with pytest.raises(HttpRequestError) as e:
            await asyncio.to_thread(call, *args)
        assert e.value.response.status_code == 501 and "signaling only" in e.value.response.text
    await op.close()


async def test_vonage_error_cases(tls_hub: TlsHub) -> None:
    h, a, b = tls_hub.h, tls_hub.a, tls_hub.b
    sid = (await asyncio.to_thread(tls_hub.vonage(a).create_session)).session_id
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    # Wrong key: application A's id, signed with a key that is not A's.
    with pytest.raises(ForbiddenError):
        await asyncio.to_thread(tls_hub.vonage(a, other_key).create_session)
    # An application the hub does not know.
    with pytest.raises(ForbiddenError):
        await asyncio.to_thread(tls_hub.vonage(App(str(uuid.uuid4()), other_key)).create_session)
    # Another application: B's SDK on A's session, and B's client token for it.
    with pytest.raises(ForbiddenError):
        await asyncio.to_thread(tls_hub.vonage(b).send_signal, sid, SignalData(type="t", data="x"))
    c = await raw_connect(h, sid, token=tls_hub.vonage(b).generate_client_token(
        TokenOptions(session_id=sid)).decode())
    assert (c.connected["op"], c.connected["code"]) == ("error", 403)
    # Expired, and a 16-minute lifetime: the JWTs the SDK's auth makes, with those claims.
    auth = Auth(application_id=a.id, private_key=a.private_key)
    now = int(time.time())
    url = f"{h.http_url}/v2/project/{a.id}/session/{sid}/signal"
    for claims in ({"iat": now - 2000, "exp": now - 1000}, {"iat": now, "exp": now + 16 * 60}):
        bearer = auth.generate_application_jwt(claims).decode()
        r = await asyncio.to_thread(requests.post, url, json={"type": "t", "data": ""}, timeout=10,
                                    headers={"Authorization": f"Bearer {bearer}"})
        assert r.status_code == 403 and r.json()["code"] == 403, claims
    # An expired client token.
    expired = tls_hub.vonage(a).generate_client_token(TokenOptions(session_id=sid, exp=now + 2))
    await asyncio.sleep(3.1)
    c = await raw_connect(h, sid, token=expired.decode())
    assert (c.connected["op"], c.connected["code"]) == ("error", 401)
    # A Bearer JWT replayed is refused as an X-OPENTOK-AUTH one is.
    bearer = auth.generate_application_jwt().decode()
    codes = [(await asyncio.to_thread(requests.post, url, json={"type": "t"}, timeout=10,
                                      headers={"Authorization": f"Bearer {bearer}"})).status_code
             for _ in range(2)]
    assert codes == [204, 403]


async def test_opentok_sdk_over_tls_side_by_side_with_applications(tls_hub: TlsHub) -> None:
    h, ot = tls_hub.h, tls_hub.opentok()
    sid = (await asyncio.to_thread(ot.create_session)).session_id
    c = await raw_connect(h, sid, token=ot.generate_token(sid, role=opentok.Roles.moderator, data="n=1"))
    assert c.connected["op"] == "connected" and c.connected["connection"]["data"] == "n=1"
    legacy = await raw_connect(h, sid, token=ot.generate_token(sid, use_jwt=False))
    assert legacy.connected["op"] == "connected"
    assert (await c.recv())["op"] == "connection_created"
    await asyncio.to_thread(ot.send_signal, sid, {"type": "t", "data": "ot"})
    assert (await c.recv())["data"] == "ot" and (await legacy.recv())["data"] == "ot"
    # The listing with the project's credential, in the same shape.
    r = await asyncio.to_thread(requests.get, f"{h.http_url}/v2/project/{h.api_key}/session/{sid}/connection",
                                headers={"X-OPENTOK-AUTH": h.rest_jwt()}, timeout=10)
    assert r.status_code == 200 and r.json()["count"] == 2 and r.json()["projectId"] == h.api_key
    # An application may not reach the project's sessions...
    with pytest.raises(ForbiddenError):
        await asyncio.to_thread(tls_hub.vonage(tls_hub.a).send_signal, sid, SignalData(type="t", data=""))
    # ...while the project (the hub owner's credential) reaches the application's.
    app_sid = (await asyncio.to_thread(tls_hub.vonage(tls_hub.a).create_session)).session_id
    await asyncio.to_thread(ot.send_signal, app_sid, {"type": "t", "data": "owner"})
    await asyncio.to_thread(ot.force_disconnect, sid, legacy.id)
    assert (await legacy.recv())["reason"] == "forceDisconnected"
    await c.close()


async def _listen_until(token: str, session_id: str, url: str, cert: Path, send: Any) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_")}
    env.update(SSL_CERT_FILE=str(cert), SIGBRIDGE_TOKEN=token)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "listen", "--url", url, "--session", session_id, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:
            await asyncio.to_thread(send)  # until the listener is in: REST signals are not buffered before
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 0.5)
            except TimeoutError:
                continue
            assert line, (await proc.stderr.read()).decode() if proc.stderr else ""
            obj = json.loads(line)
            if obj.get("type") == "hello":
                return dict(obj)
        raise AssertionError("sigbridge listen printed no signal")
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_client_token_from_each_sdk_joins_with_sigbridge_listen(tls_hub: TlsHub) -> None:
    video, ot, h = tls_hub.vonage(tls_hub.a), tls_hub.opentok(), tls_hub.h
    vsid = (await asyncio.to_thread(video.create_session)).session_id
    vtoken = video.generate_client_token(TokenOptions(session_id=vsid, role=TokenRole.SUBSCRIBER)).decode()
    got = await _listen_until(vtoken, vsid, h.url, tls_hub.cert,
                              lambda: video.send_signal(vsid, SignalData(type="hello", data="vonage")))
    assert (got["data"], got["from"]) == ("vonage", None)
    osid = (await asyncio.to_thread(ot.create_session)).session_id
    otoken = ot.generate_token(osid, role=opentok.Roles.subscriber)
    got = await _listen_until(otoken, osid, h.url, tls_hub.cert,
                              lambda: ot.send_signal(osid, {"type": "hello", "data": "opentok"}))
    assert (got["data"], got["from"]) == ("opentok", None)


def _doc_example(marker: str) -> str:
    text = (ROOT / "docs" / "hub.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"docs/hub.md lost its {marker} block"
    return m.group(1)


@pytest.mark.parametrize("sdk", ["opentok", "vonage"])
async def test_the_examples_in_docs_hub_md_run_as_written(tls_hub: TlsHub, tmp_path: Path, sdk: str) -> None:
    h = tls_hub.h
    key_file = tmp_path / "app.key"
    key_file.write_text(tls_hub.a.private_key)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGBRIDGE_")}
    env.update(REQUESTS_CA_BUNDLE=str(tls_hub.cert), SIGBRIDGE_API_KEY=h.api_key,
               SIGBRIDGE_API_SECRET=h.api_secret, HUB_URL=h.http_url, HUB_HOST=f"127.0.0.1:{h.port}",
               APP_ID=tls_hub.a.id, APP_KEY_FILE=str(key_file))
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", _doc_example(f"hub-example-{sdk}")],
                                  env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    session_id, token = out.stdout.split()
    c = await raw_connect(h, session_id, token=token)
    assert c.connected["op"] == "connected" and c.connected["connection"]["role"] == "moderator"
    await c.close()
