"""The aiohttp internals the hub relies on (pinned <4 in pyproject.toml): this fails when the next
release changes one of them, before the hub misbehaves in a way the other tests would only hint at.

* ``HubRunner`` (bridge/hub/http.py) swaps the request handler class: ``AppRunner._make_server``
  returns a ``web_server.Server`` whose ``__call__`` builds ``RequestHandler(self, loop=self._loop,
  **self._kwargs)``, and ``RequestHandler.handle_error(request, status, exc, message)`` answers errors.
* ``WsLink`` (bridge/hub/links.py) runs ``WebSocketResponse.send_str`` to completion in one step while
  the transport's buffer is empty, and writes its own unmasked text frames to the request's transport.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version

import aiohttp
from aiohttp import web, web_protocol, web_server

from bridge.hub.http import HubRunner
from bridge.hub.links import _text_frame


def test_aiohttp_major_version_is_the_pinned_one() -> None:
    assert int(version("aiohttp").split(".")[0]) == 3


def test_request_handler_internals_used_by_hub_runner() -> None:
    params = list(inspect.signature(web_protocol.RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    init = inspect.signature(web_protocol.RequestHandler.__init__).parameters
    assert list(init)[:2] == ["self", "manager"] and "loop" in init


async def test_hub_runner_builds_its_handler_class_and_answers_bad_requests_bare() -> None:
    seen: list[int] = []
    runner = HubRunner(web.Application(), lambda status, exc: seen.append(status), access_log=None,
                       handle_signals=False)
    await runner.setup()
    try:
        server = runner.server
        assert isinstance(server, web_server.Server)
        assert hasattr(server, "_loop") and isinstance(server._kwargs, dict)  # what our __call__ reads
        assert type(server()).__name__ == "_HubRequestHandler"
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /\x00<script> HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        assert answer.split(b" ")[1] == b"400" and answer.endswith(b"\r\n\r\n400 Bad Request\n")
        assert b"<script>" not in answer and seen == [400]
    finally:
        await runner.cleanup()


async def test_websocket_send_str_completes_in_one_step_and_hand_built_frames_are_read() -> None:
    outcome: dict[str, object] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        coro = ws.send_str("direct")
        try:
            coro.send(None)
            outcome["steps"] = "suspended"
            coro.close()
        except StopIteration:
            outcome["steps"] = "one"
        transport = request.transport
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_text_frame(b"built") + _text_frame(b"x" * 300))
        await ws.receive()  # until the client closes
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/") as ws:
            got = [(await ws.receive(timeout=10)).data for _ in range(3)]
        assert outcome["steps"] == "one" and got == ["direct", "built", "x" * 300]
    finally:
        await runner.cleanup()
