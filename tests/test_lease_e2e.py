"""The control lease end to end (a real hub, a real `sigbridge run` process, a real pty): a
lowest-privilege publisher cannot squat it, an idle lease expires (the safe action written, the change
announced), and a moderator takes it over."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.bridge import Operator, ack, bridge_process, next_status
from tests.helpers.hub import running_hub
from tests.helpers.pty import PtyPair

IDLE_MS = 1500


async def test_a_publisher_cannot_squat_the_lease_idle_expires_moderator_takes_over(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: sq, token: "{hub.token('sq')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules: [{{signal: move, params: {{x: {{type: int}}}}, send: {{device: base, line: "M {{x}}"}},
                          ack: true, from_roles: [moderator]}}]
                control: {{lease: true, idle_timeout_ms: {IDLE_MS}}}
                safety: {{on_controller_lost: [{{device: base, line: S}}]}}
                """))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "sq", hub.token("sq", role="moderator")) as cm, \
                    SessionClient(hub.url, "sq", hub.token("sq", role="publisher")) as cp:
                mod, pub = Operator(cm), Operator(cp)
                assert cm.connection is not None
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                # The squatter: a publisher that no rule lets drive, trying first, while the lease is free.
                await pub.send("control.acquire", {"id": "squat"})
                answer = await ack(pub)
                assert (answer["id"], answer["status"]) == ("squat", "forbidden"), answer
                await pub.send("move", {"x": 9})
                assert (await ack(pub))["status"] == "unauthorised"
                await mod.send("bridge.describe", {})
                status = json.loads((await mod.next("bridge.status")).data)
                assert status["lease"] is None
                # The moderator gets the free lease and drives.
                await mod.send("control.acquire", {})
                assert (await ack(mod))["status"] == "granted"
                await next_status(mod, lease=cm.connection.id)
                sent = time.monotonic()       # the lease check of this move comes after this instant
                await mod.send("move", {"x": 1})
                assert await pair.read_line(scaled(10)) == "M 1"
                assert (await ack(mod))["status"] == "applied"
                # ... then goes idle: the lease expires, the safe action is written, all announced.
                assert await pair.read_line(scaled(10)) == "S"
                idle = time.monotonic() - sent
                assert idle >= IDLE_MS / 1000, idle       # never before the idle timeout
                status = await next_status(mod, lease=None)
                assert status["counters"]["lease_expired"] == 1
                await pub.send("control.acquire", {})
                assert (await ack(pub))["status"] == "forbidden"          # still not the squatter's
                # A second moderator takes a held lease over: the first one's control ends safely.
                await mod.send("control.acquire", {})
                assert (await ack(mod))["status"] == "granted"
                async with SessionClient(hub.url, "sq", hub.token("sq", role="moderator")) as cm2:
                    mod2 = Operator(cm2)
                    assert cm2.connection is not None
                    await mod2.send("control.acquire", {"id": "take"})
                    answer = await ack(mod2)
                    assert (answer["status"], cm.connection.id in answer["reason"]) == ("granted", True)
                    assert await pair.read_line(scaled(10)) == "S"
                    status = await next_status(mod, lease=cm2.connection.id)
                    assert status["counters"]["lease_taken_over"] == 1
                    await mod.send("move", {"x": 2})
                    assert (await ack(mod))["status"] == "no_lease"
                    await mod2.send("move", {"x": 3})
                    assert await pair.read_line(scaled(10)) == "M 3"
                    assert pair.pending() == b""
                print(f"lease e2e: expired after {idle * 1000:.0f} ms idle (idle_timeout_ms {IDLE_MS})")
