"""A command is never executed more than its rule's max_age_ms after the operator issued it, whatever
queue it waited in (issue 11, item 3).

The client says how long a signal waited in its own queue (``queued_ms``) and the hub stamps ``ts``
that much earlier; the bridge's stale guard then sees the age the operator sees. Real parts: a hub
(a ``sigbridge hub`` process for the end-to-end test), a TCP proxy cut for the outage, ``sigbridge
run`` with a pty as the rover.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

from bridge.client import SessionClient
from bridge.core import wire
from bridge.core.client import Outbox
from bridge.core.events import Signal
from tests.conftest import scaled
from tests.helpers.bridge import Operator, bridge_process
from tests.helpers.hub import hub_process, raw_connect, running_hub
from tests.helpers.proxy import TcpProxy
from tests.helpers.pty import PtyPair


def test_a_frame_that_waited_says_how_long() -> None:
    box: Outbox[str] = Outbox()
    out = box.new("robot.move", '{"x":1}', None, True, "ticket", now=100.0)
    assert box.frame_at(out, 100.0) == out.frame and "queued_ms" not in out.frame  # written at once
    late = json.loads(box.frame_at(out, 108.25))
    assert late["queued_ms"] == 8250 and late["id"] == out.id and late["data"] == '{"x":1}'
    assert wire.parse_client_frame(box.frame_at(out, 108.25)).queued_ms == 8250  # type: ignore[union-attr]


async def test_hub_stamps_ts_at_issue_and_refuses_a_bad_queued_ms() -> None:
    async with running_hub() as hub:
        sender = await raw_connect(hub, "age")
        receiver = await raw_connect(hub, "age")
        await sender.recv()  # connection_created (the receiver)
        before = int(time.time() * 1000)
        await sender.send(op="signal", id=1, type="t", data="", to=receiver.id, queued_ms=5000)
        assert (await sender.recv())["op"] == "ack"
        got = await receiver.recv()
        assert before - 5000 <= got["ts"] <= int(time.time() * 1000) - 5000
        for bad in (-1, 1.5, "5", True, None):
            await sender.send(op="signal", id=2, type="t", data="", queued_ms=bad)
            nack = await sender.recv()
            assert (nack["op"], nack["code"]) == ("nack", 400), bad
        await sender.close()
        await receiver.close()


async def test_python_client_queued_signal_arrives_with_its_issue_time() -> None:
    async with running_hub() as hub, TcpProxy("127.0.0.1", hub.port) as proxy, \
            SessionClient(hub.url, "age2", hub.token("age2")) as robot, \
            SessionClient(f"ws://127.0.0.1:{proxy.port}", "age2", hub.token("age2"), reconnect_min_s=0.05,
                          reconnect_max_s=0.2) as op:
        proxy.refuse(True)
        await proxy.cut()
        issued = int(time.time() * 1000)
        queued = asyncio.create_task(op.signal("robot.move", "{}", to=robot.connection.id))  # type: ignore[union-attr]
        await asyncio.sleep(1.2)   # the outage: its length is what is under test
        proxy.refuse(False)
        await asyncio.wait_for(queued, scaled(10))
        move = None
        async with asyncio.timeout(scaled(10)):
            async for event in robot.events():
                if isinstance(event, Signal) and event.type == "robot.move":
                    move = event
                    break
        assert move is not None
        assert issued - 50 <= move.ts <= issued + 600      # issued, not received, > 1 s later
        assert int(time.time() * 1000) - move.ts >= 1200


async def test_move_queued_through_an_8s_outage_is_refused_as_stale(tmp_path: Path) -> None:
    """The operator's link is down 8 s; a robot.move (max_age_ms 300) sent meanwhile with the default
    retry is queued, sent on resume, and refused as stale by the bridge: nothing reaches the pty."""
    with hub_process() as hub, PtyPair(tmp_path / "rover") as pair:
        config = tmp_path / "bridge.yaml"
        config.write_text(textwrap.dedent(f"""\
            session: {{url: "{hub.url}", session_id: s8, token: "{hub.token('s8')}"}}
            devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
            rules:
              - signal: robot.move
                params: {{x: {{type: float, min: -1, max: 1}}, y: {{type: float, min: -1, max: 1}}}}
                max_age_ms: 300
                send: {{device: base, line: "M {{x:.2f}} {{y:.2f}}"}}
                ack: true
            """))
        async with bridge_process(config) as bridge, TcpProxy("127.0.0.1", hub.port) as proxy:
            await bridge.wait_for(r"READY")
            await bridge.wait_for(r"device base: up")
            async with SessionClient(f"ws://127.0.0.1:{proxy.port}", "s8", hub.token("s8", role="moderator"),
                                     reconnect_min_s=0.05, reconnect_max_s=0.5) as c:
                op = Operator(c)
                proxy.refuse(True)
                await proxy.cut()
                sent = asyncio.create_task(op.send("robot.move", {"x": 0.9, "y": 0.0, "id": "late"}))
                await asyncio.sleep(8.0)   # the outage: its length is what is under test
                assert c.state == "reconnecting" and not sent.done()
                proxy.refuse(False)
                await asyncio.wait_for(sent, scaled(15))    # acked by the hub after the resume
                ack = json.loads((await op.next("bridge.ack", timeout=15)).data)
                assert (ack["id"], ack["status"]) == ("late", "stale"), ack
                assert c.stats["reconnects"] == 1
                await op.send("robot.move", {"x": 0.1, "y": 0.0})
                assert await pair.read_line(scaled(10)) == "M 0.10 0.00"   # the late one never got written
