"""What the session client relies on below websockets' public API (bridge.client.link.Writer), checked
against the installed websockets: each attribute is there with the signature used, and a real
connection on 127.0.0.1 behaves as the fast write path assumes. A websockets release that changes any
of it fails here (pyproject.toml pins websockets below the next major version)."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import Protocol, State

from bridge.client.link import WEBSOCKETS_INTERNALS, Writer
from tests.conftest import scaled


def params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_the_internals_used_exist_with_the_signatures_used() -> None:
    for name in ("send_data", "pause_writing", "resume_writing"):
        assert callable(getattr(ClientConnection, name, None)), name
    for name in ("send_text", "data_to_send"):
        assert callable(getattr(Protocol, name, None)), name
    assert params(ClientConnection.send_data) == ["self"]
    assert params(Protocol.send_text)[:3] == ["self", "data", "fin"]
    assert params(Protocol.data_to_send) == ["self"]
    assert State.OPEN in State
    assert set(WEBSOCKETS_INTERNALS) == {"protocol", "transport", "paused", "send_data", "state",
                                         "send_text", "data_to_send"}   # what is checked here


async def test_a_real_connection_takes_the_fast_writes_in_order_and_refuses_once_closing() -> None:
    got: list[str] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            got.append(str(message))
            if len(got) == 5:
                done.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None)
        # The instance attributes the writer reads, with the types it assumes.
        assert isinstance(ws.protocol, Protocol) and ws.protocol.state is State.OPEN
        assert ws.paused is False
        ws.pause_writing()              # the transport's buffer is over its high-water mark
        assert ws.paused is True and not Writer().write_now(ws, "dropped", False)
        ws.resume_writing()
        assert callable(ws.transport.is_closing) and ws.transport.is_closing() is False
        writer = Writer()
        assert writer.write_now(ws, "f0", False)          # alone: leaves at once
        assert ws.protocol.data_to_send() == []
        # A burst in one loop turn: the first leaves at once, the others stay in the protocol's
        # buffer (bytes) until the end-of-turn write.
        assert all(writer.write_now(ws, f"f{i}", True) for i in range(1, 5))
        pending = ws.protocol.data_to_send()
        assert len(pending) == 3 and all(isinstance(c, bytes) and c for c in pending)
        for chunk in pending:           # taken out above: hand them over as _write_turn would
            ws.transport.write(chunk)
        await asyncio.wait_for(done.wait(), scaled(10))
        assert got == ["f0", "f1", "f2", "f3", "f4"]
        ws.transport.abort()
        assert not writer.write_now(ws, "late", False)   # a closing link takes nothing
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), scaled(5))
