"""The stale guard against wall-clock steps on the bridge host, end to end: a real hub, a real
`sigbridge run` process whose wall clock the test steps (tests/helpers/steppedclock.py, test only), a
real pty. Neither a forward nor a backward step may trip or disable the guard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import textwrap
from pathlib import Path

from bridge.client import SessionClient
from tests.conftest import scaled
from tests.helpers.bridge import Bridge, Operator, bridge_process
from tests.helpers.hub import running_hub
from tests.helpers.proxy import TcpProxy
from tests.helpers.pty import PtyPair

ROOT = Path(__file__).resolve().parent.parent


def stepped_bridge(config: Path) -> contextlib.AbstractAsyncContextManager[Bridge]:
    """`sigbridge -v run -c CONFIG` with a steppable wall clock (SIGUSR1 +10 s, SIGUSR2 -10 s)."""
    return bridge_process(config, env={"PYTHONPATH": str(ROOT), "STEPPED_CLOCK_STEP_S": "10"},
                          module="tests.helpers.steppedclock")


async def step(bridge: Bridge, signum: int, offset: str) -> None:
    mark = len(bridge.stderr)
    bridge.proc.send_signal(signum)
    await bridge.wait_for(rf"steppedclock: wall clock offset now {offset} s", after=mark)


async def test_a_wall_clock_step_neither_trips_nor_disables_the_stale_guard(tmp_path: Path) -> None:
    async with running_hub() as hub, TcpProxy("127.0.0.1", hub.port) as proxy:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            # Keep-alive pings far apart: no new clock sample is taken during the test except at the
            # resume, so a wall-clock based estimate would keep the offset measured before each step.
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "ws://127.0.0.1:{proxy.port}", session_id: clk, token: "{hub.token('clk')}",
                          keepalive_ms: 30000, link_timeout_ms: 60000}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules:
                  - {{signal: robot.move, params: {{n: {{type: int}}}},
                     send: {{device: base, line: "M {{n}}"}}, max_age_ms: 300, ack: true}}
                safety: {{on_disconnect: [{{device: base, line: STOP}}]}}
                """))
            async with stepped_bridge(config) as bridge, SessionClient(
                    hub.url, "clk", hub.token("clk", role="moderator")) as c:
                op = Operator(c)
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")

                async def move(n: int, expected: str) -> None:
                    await op.send("robot.move", {"n": n, "id": n})
                    answer = json.loads((await op.next("bridge.ack")).data)
                    assert (answer["id"], answer["status"]) == (n, expected), answer

                await move(1, "applied")
                assert await pair.read_line(scaled(10)) == "M 1"
                await step(bridge, signal.SIGUSR1, r"\+10\.0")       # forward 10 s: must not trip it
                await move(2, "applied")
                assert await pair.read_line(scaled(10)) == "M 2"
                await step(bridge, signal.SIGUSR2, r"\+0\.0")
                await step(bridge, signal.SIGUSR2, r"-10\.0")       # back 10 s: must not disable it
                await move(3, "applied")
                assert await pair.read_line(scaled(10)) == "M 3"
                # A 3 s old move: kept by the hub for the bridge while its link is cut, replayed on resume.
                mark = len(bridge.stderr)
                proxy.refuse(True)
                await proxy.cut()
                assert await pair.read_line(scaled(10)) == "STOP"
                await op.send("robot.move", {"n": 4, "id": 4})      # retry: the hub keeps it
                await asyncio.sleep(3.0)     # the move's age is what is under test
                proxy.refuse(False)
                await bridge.wait_for(r"connected as", after=mark)
                answer = json.loads((await op.next("bridge.ack")).data)
                assert (answer["id"], answer["status"]) == (4, "stale"), answer
                assert "max_age_ms 300" in answer["reason"]
                await move(5, "applied")
                assert await pair.read_line(scaled(10)) == "M 5"     # M 4 never reached the wire
