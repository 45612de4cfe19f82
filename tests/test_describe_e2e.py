"""bridge.describe cannot starve the bridge's acks, with real processes: a real hub whose per-connection
rate limit is 20 signals/s, a real `python -m bridge run`, a real pty. One publisher floods describes
as fast as the hub lets it (each answer used to cost the bridge 2 signals, against the same 20/s its
acks need); meanwhile an operator sends 20 commands with ``ack: true``: every ack arrives, and the
flooder still gets answers (coalesced: about one a second). And with no ``signal_rate`` configured,
the bridge paces itself under the limit the hub announces in ``connected``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from bridge.client import SessionClient
from bridge.core.events import Signal
from tests.conftest import scaled
from tests.helpers.bridge import Operator, bridge_process
from tests.helpers.hub import running_hub
from tests.helpers.pty import PtyPair

CONFIG = """\
session: {{url: "{url}", session_id: ds, token: "{token}", signal_rate: {{hz: 15, burst: 15}}}}
devices: {{base: {{serial: {{port: "{port}"}}}}}}
rules:
  - signal: go
    params: {{n: {{type: int, min: 0, max: 100}}}}
    send: {{device: base, line: "GO {{n}}"}}
    ack: true
"""


async def test_describe_flood_from_one_operator_another_operators_20_acks_all_arrive(tmp_path: Path) -> None:
    async with running_hub(rate_limit=20, rate_burst=20) as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, token=hub.token("ds"), port=pair.path))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "ds", hub.token("ds")) as flooder, \
                    SessionClient(hub.url, "ds", hub.token("ds")) as c:
                op = Operator(c)
                await bridge.wait_for("READY")
                await bridge.wait_for("device base: up")
                answers = 0

                def on_event(event: object) -> None:
                    nonlocal answers
                    if isinstance(event, Signal) and event.type == "bridge.capabilities":
                        answers += 1
                flooder.set_event_handler(on_event)

                async def flood() -> None:
                    while True:         # as fast as the hub takes them (its 429s are ignored)
                        with contextlib.suppress(Exception):
                            await flooder.signal("bridge.describe", "{}")

                task = asyncio.create_task(flood())
                try:
                    await asyncio.sleep(0.5)         # the flood is on
                    acks = []
                    for n in range(20):
                        await op.send("go", {"n": n, "id": n})
                        await asyncio.sleep(0.1)
                    async with asyncio.timeout(scaled(5)):
                        while len(acks) < 20:
                            acks.append(json.loads((await op.next("bridge.ack")).data))
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                assert [a["id"] for a in acks] == list(range(20))
                assert all(a["status"] == "applied" for a in acks)
                assert [await pair.read_line(scaled(5)) for _ in range(20)] == [f"GO {n}" for n in range(20)]
                assert answers >= 2, answers       # the flooder is answered, ~1/s, not starved
                print(f"\ndescribe flood: 20/20 acks; the flooder got {answers} answers")


async def test_a_burst_of_acks_over_the_hubs_limit_is_paced_not_lost(tmp_path: Path) -> None:
    """Two operators send 15 commands each at once: 30 acks in one burst, over the hub's 20 for the
    bridge's connection. Paced at 15/s (burst 15), all 30 arrive, in order per operator."""
    async with running_hub(rate_limit=20, rate_burst=20) as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.format(url=hub.url, token=hub.token("ds"), port=pair.path))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "ds", hub.token("ds")) as c1, \
                    SessionClient(hub.url, "ds", hub.token("ds")) as c2:
                ops = [Operator(c1), Operator(c2)]
                await bridge.wait_for("READY")
                await bridge.wait_for("device base: up")
                await asyncio.sleep(1.5)     # the start-up broadcasts' tokens are back
                await asyncio.gather(*(op.send("go", {"n": n, "id": n}) for op in ops for n in range(15)))
                for op in ops:
                    async with asyncio.timeout(scaled(5)):
                        ids = [json.loads((await op.next("bridge.ack")).data)["id"] for _ in range(15)]
                    assert ids == list(range(15))
                lines = {await pair.read_line(scaled(5)) for _ in range(30)}
                assert lines == {f"GO {n}" for n in range(15)}


async def test_with_no_signal_rate_configured_the_bridge_paces_under_the_hubs_announced_limit(
        tmp_path: Path) -> None:
    """The same burst of 30 acks with the default signal_rate (500/s, burst 1000): the hub announces
    20/s burst 20 in ``connected`` and the bridge paces under it (old code: ~10 acks lost to 429s)."""
    async with running_hub(rate_limit=20, rate_burst=20) as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(CONFIG.replace(", signal_rate: {{hz: 15, burst: 15}}", "").format(
                url=hub.url, token=hub.token("ds"), port=pair.path))
            assert "signal_rate" not in config.read_text().splitlines()[0]   # the session line
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "ds", hub.token("ds")) as c1, \
                    SessionClient(hub.url, "ds", hub.token("ds")) as c2:
                ops = [Operator(c1), Operator(c2)]
                await bridge.wait_for("READY")
                await bridge.wait_for("device base: up")
                await asyncio.sleep(1.5)     # the start-up broadcasts' tokens are back
                await asyncio.gather(*(op.send("go", {"n": n, "id": n}) for op in ops for n in range(15)))
                for op in ops:
                    async with asyncio.timeout(scaled(5)):
                        ids = [json.loads((await op.next("bridge.ack")).data)["id"] for _ in range(15)]
                    assert ids == list(range(15))
                assert {await pair.read_line(scaled(5)) for _ in range(30)} == {f"GO {n}" for n in range(15)}
