"""A real session hub for tests: in-process (``running_hub``) or as a ``sigbridge hub`` process
(``hub_process``), on a free 127.0.0.1 port with generated test credentials.

    async with running_hub(reconnect_grace_s=2.0) as h:
        token = h.token("lab-1", role="moderator")
        async with websockets.connect(f"{h.url}/v1/session/lab-1") as ws: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import IO, Any

import websockets

from bridge.config.hub import HubConfig
from bridge.core.tokens import mint_client_token, mint_rest_jwt
from bridge.hub.run import RunningHub, start_hub
from tests.helpers.mosquitto import free_port


def test_credentials() -> tuple[str, str]:
    return str(secrets.randbelow(9 * 10**7) + 10**7), secrets.token_hex(20)


test_credentials.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@dataclass
class HubHandle:
    """What a test needs to talk to a hub."""

    url: str  # ws://127.0.0.1:PORT (clients append /v1/session/ID)
    http_url: str  # http://127.0.0.1:PORT
    port: int
    api_key: str
    api_secret: str
    hub: RunningHub | None = None  # None for a hub running as a separate process
    pid: int | None = None  # the hub process (hub_process only)
    stderr: Callable[[], str] | None = None  # what the hub process has logged so far (hub_process only)

    def token(self, session_id: str, role: str = "publisher", data: str = "", ttl: int = 3600) -> str:
        return mint_client_token(api_key=self.api_key, api_secret=self.api_secret, session_id=session_id,
                                 role=role, data=data, ttl_s=ttl, now=time.time())

    def rest_jwt(self) -> str:
        """An X-OPENTOK-AUTH header value for this hub's REST API."""
        return mint_rest_jwt(api_key=self.api_key, api_secret=self.api_secret, now=time.time())

    def session_url(self, session_id: str) -> str:
        return f"{self.url}/v1/session/{session_id}"


@contextlib.asynccontextmanager
async def running_hub(**overrides: Any) -> AsyncIterator[HubHandle]:
    """An in-process hub; ``overrides`` are HubConfig fields (reconnect_grace_s=2.0, rate_limit=0, ...)."""
    key, secret = test_credentials()
    config = replace(HubConfig(api_key=key, api_secret=secret, host="127.0.0.1", port=0), **overrides)
    hub = await start_hub(config)
    try:
        yield HubHandle(hub.url, hub.http_url, hub.port, config.api_key, config.api_secret, hub)
    finally:
        await hub.close()


@contextlib.contextmanager
def hub_process(*extra_args: str, env: dict[str, str] | None = None, timeout: float = 20.0,
                host: str = "127.0.0.1", stderr: IO[bytes] | None = None, tls: bool = False,
                preexec_fn: Callable[[], None] | None = None) -> Iterator[HubHandle]:
    """``sigbridge hub`` as a child process, ready when /healthz answers 200; SIGTERM (then SIGKILL)
    on exit. Credentials: generated and passed in SIGBRIDGE_API_KEY/SECRET, unless ``env`` is given
    (then it is the whole environment, and the handle's key/secret are those it names, if any).
    ``host`` is the address it listens on; ``stderr``, a binary file to write its log to; ``tls``:
    the config gives it a certificate (https/wss URLs; trust it with SSL_CERT_FILE). ``preexec_fn``
    runs in the child before the hub starts (e.g. to set its rlimits)."""
    if env is None:
        key, secret = test_credentials()
        env = dict(os.environ, SIGBRIDGE_API_KEY=key, SIGBRIDGE_API_SECRET=secret)
    port = free_port()
    s = "s" if tls else ""
    with tempfile.TemporaryFile() if stderr is None else contextlib.nullcontext(stderr) as log:
        proc = subprocess.Popen([sys.executable, "-m", "bridge", "hub", "--listen", f"{host}:{port}",
                                 *extra_args], env=env, stdout=subprocess.DEVNULL, stderr=log,
                                preexec_fn=preexec_fn)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"sigbridge hub exited with {proc.returncode}: {log.read().decode()}")
                with contextlib.suppress(OSError), \
                        urllib.request.urlopen(f"http{s}://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("sigbridge hub did not answer /healthz in time")
                time.sleep(0.05)
            def read_log() -> str:
                # pread: the child shares the file offset, which a seek would move under its writes.
                fd = log.fileno()
                return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

            yield HubHandle(f"ws{s}://127.0.0.1:{port}", f"http{s}://127.0.0.1:{port}", port,
                            env.get("SIGBRIDGE_API_KEY", ""), env.get("SIGBRIDGE_API_SECRET", ""),
                            pid=proc.pid, stderr=read_log)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RawClient:
    """A bare wire-protocol v1 client over ``websockets`` (no reconnection, no checks): tests drive
    the hub frame by frame with it. ``connected`` is the hub's answer to the connect frame."""

    def __init__(self, ws: Any, connected: dict[str, Any]) -> None:
        self.ws = ws
        self.connected = connected
        self.id: str = connected.get("connection", {}).get("id", "")
        self._next_id = 0

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        obj = json.loads(await asyncio.wait_for(self.ws.recv(), timeout * _SCALE))
        assert isinstance(obj, dict)
        return obj

    async def signal(self, type: str = "t", data: str = "", to: str | None = None, retry: bool = True,
                     ) -> int:
        """Send a signal frame; returns its id (the caller reads the ack/nack)."""
        self._next_id += 1
        frame: dict[str, Any] = {"op": "signal", "id": self._next_id, "type": type, "data": data,
                                 "retry": retry}
        if to is not None:
            frame["to"] = to
        await self.send(**frame)
        return self._next_id

    async def close(self) -> None:
        await self.ws.close()


_SCALE = float(os.environ.get("SIGBRIDGE_TEST_TIMEOUT_SCALE", "1"))


async def raw_connect(handle: HubHandle, session_id: str, role: str = "publisher", data: str = "",
                      token: str | None = None, resume: dict[str, Any] | None = None) -> RawClient:
    """Open a WebSocket to ``session_id`` and send ``connect``; the hub's first answer (``connected``
    or ``error``) is in ``.connected``."""
    # max_queue=None: never stop reading the socket because the test has not read its frames yet
    # (websockets would, and then a close handshake would wait for its 10 s timeout).
    ws = await websockets.connect(handle.session_url(session_id), max_size=None, max_queue=None)
    frame: dict[str, Any] = {"op": "connect", "token": token or handle.token(session_id, role, data)}
    if resume is not None:
        frame["resume"] = resume
    await ws.send(json.dumps(frame))
    first = json.loads(await asyncio.wait_for(ws.recv(), 10 * _SCALE))
    return RawClient(ws, first)
