"""The session client against a hub that restarts (links closed with 1001; the new hub does not know
the connection, so the resume is answered ``resumed: false`` and the client ends with Disconnected), and
against a TLS hub (``wss://``, a self-signed certificate made here with ``openssl``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import websockets

from bridge.config.hub import HubConfig
from bridge.core.signal import NETWORK_DISCONNECTED
from bridge.core.tokens import mint_client_token
from bridge.hub.run import start_hub
from bridge.session import Disconnected, Reconnected, Reconnecting, SessionClient, SignalError
from tests.conftest import scaled
from tests.helpers.client import FAST, next_of, signals_until
from tests.helpers.hub import test_credentials
from tests.helpers.proxy import TcpProxy

SID = "lab-1"


def _config(**kw: object) -> HubConfig:
    key, secret = test_credentials()
    return replace(HubConfig(api_key=key, api_secret=secret, host="127.0.0.1", port=0), **kw)  # type: ignore[arg-type]


def _token(config: HubConfig) -> str:
    return mint_client_token(api_key=config.api_key, api_secret=config.api_secret, session_id=SID,
                             role="publisher", data="", ttl_s=3600, now=time.time())


async def test_hub_restart_closes_links_with_1001_and_the_refused_resume_ends_in_disconnected() -> None:
    config = _config()
    hub = await start_hub(config)
    config = replace(config, port=hub.port)  # the new hub comes back on the same port
    new_hub = None
    try:
        raw = await websockets.connect(f"{hub.url}/v1/session/{SID}")
        await raw.send(json.dumps({"op": "connect", "token": _token(config)}))
        await raw.recv()
        client = SessionClient(hub.url, SID, _token(config), **FAST)  # type: ignore[arg-type]
        await client.connect()
        old_id = client.connection.id if client.connection else ""
        queued: asyncio.Task[None] | None = None
        try:
            await hub.close()
            await asyncio.wait_for(raw.wait_closed(), scaled(10))
            assert raw.close_code == 1001  # going away: clients should try to resume
            await next_of(client, Reconnecting)
            queued = asyncio.create_task(client.signal(type="t", data="queued during the restart"))
            new_hub = await start_hub(config)
            # The new hub has never heard of the connection: "resumed": false, so the client gives the
            # fresh connection back and ends (the others already saw it leave, as DESIGN.md says).
            assert await next_of(client, Disconnected) == Disconnected(NETWORK_DISCONNECTED)
            assert client.state == "closed" and client.stats["reconnects"] == 0
            with pytest.raises(SignalError) as e:
                await asyncio.wait_for(queued, scaled(5))
            assert e.value.code == 500
            state = new_hub.state

            async def empty() -> None:
                while state.connection_count:
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(empty(), scaled(10))  # the fresh connection was given back
            assert state.metrics.resumes == 0 and old_id not in {
                m.connection.id for ms in state.sessions.values() for m in ms.values()}
        finally:
            if queued is not None and not queued.done():
                queued.cancel()
            await client.disconnect()
    finally:
        if new_hub is not None:
            await new_hub.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    yield cert, key


async def test_wss_hub_with_a_ca_file_signals_and_resumes_over_tls(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    config = _config(tls_cert=str(cert), tls_key=str(key))
    hub = await start_hub(config)
    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        assert hub.url.startswith("wss://")
        async with TcpProxy("127.0.0.1", hub.port) as proxy:
            # Through the proxy (TLS end to end; the proxy only moves bytes) so that the link can be cut.
            a = SessionClient(f"wss://127.0.0.1:{proxy.port}", SID, _token(config), ssl=ctx,
                              **FAST)  # type: ignore[arg-type]
            b = SessionClient(hub.url, SID, _token(config), ssl=ctx)
            async with a, b:
                assert a.connection is not None and b.connection is not None
                await a.signal(type="t", data="over tls", to=b.connection.id)
                await a.signal(type="t", data="MARK", to=b.connection.id)
                assert [s.data for s in await signals_until(b, "MARK")] == ["over tls"]
                await proxy.cut()
                await next_of(a, Reconnecting)
                await next_of(a, Reconnected)  # the reconnection uses the same TLS context
                await a.signal(type="t", data="after resume", to=b.connection.id)
                await a.signal(type="t", data="END", to=b.connection.id)
                assert [s.data for s in await signals_until(b, "END")] == ["after resume"]
    finally:
        await hub.close()


async def test_wss_hub_without_the_ca_is_refused_with_500(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    config = _config(tls_cert=str(cert), tls_key=str(key))
    hub = await start_hub(config)
    try:
        # No ssl= given: the system CA store does not know a self-signed certificate.
        client = SessionClient(hub.url, SID, _token(config), open_timeout_s=scaled(5))
        with pytest.raises(SignalError) as e:
            await client.connect()
        assert e.value.code == 500 and "certificate" in e.value.message.lower()
        assert client.state == "closed"
        with contextlib.suppress(SignalError):
            await client.disconnect()
    finally:
        await hub.close()
