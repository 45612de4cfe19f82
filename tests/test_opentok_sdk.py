"""The official `opentok` PyPI server SDK pointed at the hub with ``api_url=``: sessions, JWT and
legacy tokens, REST signals (``from`` null at receivers), force disconnect, and its error mapping.

The SDK is synchronous (requests), so its calls run in a thread while the hub serves in the loop.
"""

from __future__ import annotations

import asyncio

import opentok
import pytest
from opentok import Client, Roles

from tests.helpers.hub import HubHandle, raw_connect, running_hub


def _client(h: HubHandle, secret: str | None = None) -> Client:
    return Client(h.api_key, secret or h.api_secret, api_url=h.http_url, timeout=10)


async def test_sdk_session_tokens_signal_and_force_disconnect() -> None:
    async with running_hub() as h:
        ot = _client(h)
        session = await asyncio.to_thread(ot.create_session)
        sid = session.session_id
        assert sid.startswith("1_")
        jwt_token = ot.generate_token(sid, role=Roles.moderator, data="name=op")
        legacy = ot.generate_token(sid, role=Roles.publisher, data="name=robot", use_jwt=False)
        assert legacy.startswith("T1==")
        op = await raw_connect(h, sid, token=jwt_token)
        assert op.connected["op"] == "connected", op.connected
        assert op.connected["connection"]["role"] == "moderator"
        assert op.connected["connection"]["data"] == "name=op"
        robot = await raw_connect(h, sid, token=legacy)
        assert robot.connected["op"] == "connected", robot.connected
        assert robot.connected["connection"]["data"] == "name=robot"
        assert (await op.recv())["op"] == "connection_created"

        await asyncio.to_thread(ot.send_signal, sid, {"type": "robot.move", "data": '{"x":1}'})
        for c in (op, robot):
            s = await c.recv()
            assert (s["op"], s["type"], s["data"], s["from"]) == ("signal", "robot.move", '{"x":1}', None)
        await asyncio.to_thread(ot.send_signal, sid, {"type": "only", "data": "r"}, robot.id)
        s = await robot.recv()
        assert (s["type"], s["from"], s["seq"]) == ("only", None, 2)

        # The SDK turns every non-2xx answer of send_signal into RequestError(message, status).
        for args, status in [((sid, {"type": "t", "data": "x" * 8193}), 413),
                             ((sid, {"type": "t" * 129}), 413),
                             ((sid, {"type": "bad type", "data": ""}), 400),
                             ((sid, {"type": "t"}, "no-such-connection"), 404)]:
            with pytest.raises(opentok.exceptions.RequestError) as e:
                await asyncio.to_thread(ot.send_signal, *args)
            assert e.value.args[1] == status, args
        with pytest.raises(opentok.exceptions.RequestError) as e:
            await asyncio.to_thread(_client(h, "f" * 40).send_signal, sid, {"type": "t"})
        assert e.value.args[1] == 403

        await asyncio.to_thread(ot.force_disconnect, sid, robot.id)
        assert await robot.recv() == {"op": "disconnected", "reason": "forceDisconnected"}
        f = await op.recv()
        assert (f["op"], f["reason"], f["connection"]["id"]) == ("connection_destroyed", "forceDisconnected",
                                                                  robot.id)
        with pytest.raises(opentok.exceptions.ForceDisconnectError):  # 404 now
            await asyncio.to_thread(ot.force_disconnect, sid, robot.id)
        await op.close()


async def test_sdk_create_session_with_wrong_credentials_is_refused() -> None:
    async with running_hub() as h:
        with pytest.raises(opentok.exceptions.OpenTokException):
            await asyncio.to_thread(_client(h, "e" * 40).create_session)
