"""Issue 4 end to end, each with a real hub, a real `python -m bridge run` process and a real pty:
bridge.status, the audit log (one record of every decision), the control lease with on_controller_lost,
authorisation per rule (incl. REST signals through the official OpenTok SDK) and the device heartbeat
(its rate at the pty, and the rover firmware stopping by itself once the bridge is killed -9)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentok import Client

from bridge.client import SessionClient
from firmware_stubs.rover_sim import RoverSim
from tests.conftest import scaled
from tests.helpers.bridge import Operator, ack, bridge_process, next_status
from tests.helpers.hub import running_hub
from tests.helpers.poll import until
from tests.helpers.proxy import TcpProxy
from tests.helpers.pty import PtyPair

# ---------------------------------------------------------------- bridge.status


async def test_status_on_connect_on_device_and_estop_changes_and_on_describe(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: st, token: "{hub.token('st')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}", reopen_min_s: 0.05, reopen_max_s: 0.2}}}}}}
                rules: [{{signal: go, send: {{device: base, line: GO}}, ack: true}}]
                safety: {{estop: {{signal: stop, reset: reset, send: [{{device: base, line: S}}]}}}}
                """))
            # The operator is there first: it sees the bridge's announcement on connect.
            async with SessionClient(hub.url, "st", hub.token("st", role="moderator")) as c:
                op = Operator(c)
                async with bridge_process(config) as bridge:
                    first = await next_status(op)
                    assert set(first) == {"version", "state", "estopped", "lease", "devices", "counters"}
                    if first["state"] != "ready":           # the port opened after the link came up
                        await next_status(op, state="ready", devices={"base": "up"})
                    await op.send("go", {})
                    assert (await ack(op))["status"] == "applied"

                    pair.vanish()                                # USB adapter unplugged
                    await next_status(op, state="degraded", devices={"base": "down"})
                    pair.recreate()
                    await next_status(op, state="ready", devices={"base": "up"})
                    await op.send("stop", {})
                    await next_status(op, state="estopped", estopped=True)
                    await op.send("reset", {})
                    await next_status(op, state="ready", estopped=False)

                    await op.send("bridge.describe", {})
                    caps = await op.next("bridge.capabilities")
                    status = await next_status(op)
                    assert json.loads(caps.data)["estop"] == {"signal": "stop", "reset": "reset",
                                                              "reset_roles": ["moderator"]}
                    counters = status["counters"]
                    assert (counters["estops"], counters["decisions"]["applied"]) == (1, 1), counters
                    assert "device base: down" in "".join(bridge.stderr)


async def test_flapping_device_cannot_flood_the_session_with_status(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: fl, token: "{hub.token('fl')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}", reopen_min_s: 0.02, reopen_max_s: 0.05}}}}}}
                rules: [{{signal: go, send: {{device: base, line: GO}}}}]
                """))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "fl", hub.token("fl")) as c:
                op = Operator(c)
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                while not op.signals.empty():       # what was said before the flapping starts
                    op.signals.get_nowait()
                loop = asyncio.get_running_loop()
                start = loop.time()
                transitions = 0
                for _ in range(10):
                    mark = len(bridge.stderr)
                    pair.vanish()
                    await bridge.wait_for(r"device base: down", after=mark)
                    mark = len(bridge.stderr)
                    pair.recreate()
                    await bridge.wait_for(r"device base: up", after=mark)
                    transitions += 2
                # The last state always gets out (at the end of the coalescing interval at the latest).
                n = 0
                while True:
                    n += 1
                    status = json.loads((await op.next("bridge.status")).data)
                    if status["devices"] == {"base": "up"} and op.signals.empty():
                        break
                elapsed = loop.time() - start
                # At most one broadcast per 0.5 s (without coalescing: one per transition, 21 here).
                assert n <= elapsed / 0.5 + 2, (n, elapsed, transitions)


# ---------------------------------------------------------------- audit log


AUDIT_CONFIG = """\
session: {{url: "ws://127.0.0.1:{proxy}", session_id: au, token: "{token}"}}
devices: {{base: {{serial: {{port: "{port}"}}}}}}
rules:
  - signal: go
    params: {{n: {{type: int, min: 0, max: 10, on_range: clamp}}}}
    send: {{device: base, line: "GO {{n}}"}}
    max_age_ms: 300
    rate_limit: {{hz: 0.01, burst: 3}}
    ack: true
  - {{signal: admin, send: {{device: base, line: ADMIN}}, from_roles: [moderator], ack: true}}
control: {{lease: true}}
safety:
  estop: {{signal: stop, reset: reset, send: [{{device: base, line: ESTOP}}]}}
  on_disconnect: [{{device: base, line: STOP}}]
audit: {{path: "{audit}", max_bytes: 600, backups: 5}}
"""


async def test_audit_log_has_every_decision_with_sender_and_writes_and_rotates(tmp_path: Path) -> None:
    audit = tmp_path / "log" / "audit.jsonl"
    async with running_hub() as hub, TcpProxy("127.0.0.1", hub.port) as proxy:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(AUDIT_CONFIG.format(proxy=proxy.port, token=hub.token("au"), port=pair.path,
                                                  audit=audit))
            start = time.time()
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "au", hub.token("au", role="moderator", data="op-7")) as c1, \
                    SessionClient(hub.url, "au", hub.token("au", data="pub-1")) as c2:
                op, pub = Operator(c1), Operator(c2)
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                expected = []

                async def go(data: object, status: str, line: str | None = None) -> None:
                    await op.send("go", data)
                    assert (await ack(op))["status"] == status
                    if line is not None:
                        assert await pair.read_line(scaled(10)) == line
                    expected.append(("go", status))

                await go({"n": 1}, "no_lease")
                await op.send("control.acquire", {})
                assert (await ack(op))["status"] == "granted"
                await go({"n": 5}, "applied", "GO 5")
                await go({"n": 50}, "clamped", "GO 10")
                await go({"n": "x"}, "rejected")
                await go({"n": 2}, "rate_limited")                 # burst 3 spent, refills in 100 s
                await pub.send("admin", {})
                assert (await ack(pub))["status"] == "unauthorised"
                expected.append(("admin", "unauthorised"))
                await op.send("stop", {})
                assert await pair.read_line(scaled(10)) == "ESTOP"
                expected.append(("stop", "applied"))
                await go({"n": 1}, "estopped")
                await op.send("reset", {})
                await next_status(op, estopped=False)
                expected.append(("reset", "applied"))
                # Stale: the hub keeps a command for the bridge while its link is cut and replays it later.
                proxy.refuse(True)
                await proxy.cut()
                assert await pair.read_line(scaled(10)) == "STOP"
                mark = len(bridge.stderr)
                await op.send("go", {"n": 3})
                await asyncio.sleep(0.5)     # the command's age is what is under test (max_age_ms 300)
                proxy.refuse(False)
                await bridge.wait_for(r"connected as", after=mark)
                assert (await ack(op))["status"] == "stale"
                expected.append(("go", "stale"))
                assert pair.pending() == b""
                ids = {"op-7": c1.connection.id if c1.connection else None,
                       "pub-1": c2.connection.id if c2.connection else None}
            assert bridge.proc.returncode == 0

    files = [*sorted(audit.parent.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:])), audit]
    assert len(files) >= 3, files                        # 10 records of ~200 bytes, rotated at 600
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert [(r["type"], r["decision"]) for r in records] == expected
    for r in records:
        when = datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC).timestamp()
        assert start - 1 <= when <= time.time() + 1, r
        assert r["from"] == ids[r["from_data"]], r
        assert r["written"] == [] or r["decision"] in ("applied", "clamped"), r
        assert r["decision"] in ("applied", "clamped") or r.get("reason"), r
    by_decision = {r["decision"]: r for r in records if r["type"] == "go"}
    assert by_decision["applied"]["written"] == [{"device": "base", "line": "GO 5"}]
    assert by_decision["clamped"]["written"] == [{"device": "base", "line": "GO 10"}]
    assert "max_age_ms 300" in by_decision["stale"]["reason"]
    assert records[6]["written"] == [{"device": "base", "line": "ESTOP"}]


# ---------------------------------------------------------------- control lease


async def test_lease_acquire_release_observers_refused_and_controller_lost(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: ls, token: "{hub.token('ls')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules: [{{signal: move, params: {{x: {{type: int}}}}, send: {{device: base, line: "M {{x}}"}},
                          ack: true}}]
                control: {{lease: true}}
                safety: {{on_controller_lost: [{{device: base, line: S}}]}}
                """))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "ls", hub.token("ls")) as cb:
                b = Operator(cb)
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                async with SessionClient(hub.url, "ls", hub.token("ls")) as ca:
                    a = Operator(ca)
                    assert ca.connection is not None
                    a_id = ca.connection.id
                    await a.send("control.acquire", {"id": "a1"})
                    assert await ack(a) == {"id": "a1", "status": "granted", "reason": None}
                    await next_status(b, lease=a_id)
                    await b.send("move", {"x": 1})
                    refused = await ack(b)
                    assert refused["status"] == "no_lease" and a_id in refused["reason"]
                    await b.send("control.acquire", {})
                    assert (await ack(b))["status"] == "refused"
                    await a.send("move", {"x": 2})
                    assert await pair.read_line(scaled(10)) == "M 2"
                    assert (await ack(a))["status"] == "applied"
                    await a.send("control.release", {})
                    assert (await ack(a))["status"] == "released"
                    await next_status(b, lease=None)
                    await a.send("control.acquire", {})
                    assert (await ack(a))["status"] == "granted"
                    await next_status(b, lease=a_id)
                # A leaves: its connection is destroyed -> the safe action, the lease free, announced.
                assert await pair.read_line(scaled(10)) == "S"
                await next_status(b, lease=None)
                await b.send("control.acquire", {})
                assert (await ack(b))["status"] == "granted"
                await b.send("move", {"x": 3})
                assert await pair.read_line(scaled(10)) == "M 3"
                assert pair.pending() == b""


# ---------------------------------------------------------------- authorisation


async def test_authorisation_roles_data_and_rest_signals(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: az, token: "{hub.token('az')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules:
                  - {{signal: mod.go, send: {{device: base, line: MOD}}, from_roles: [moderator], ack: true}}
                  - {{signal: team.go, send: {{device: base, line: TEAM}}, from_data: '^team=red$',
                     ack: true}}
                  - {{signal: rest.go, send: {{device: base, line: REST}}, allow_rest: true}}
                  - {{signal: plain.go, send: {{device: base, line: PLAIN}}, ack: true}}
                """))
            rest = Client(hub.api_key, hub.api_secret, api_url=hub.http_url, timeout=10)

            async def via_rest(type_: str) -> None:
                await asyncio.to_thread(rest.send_signal, "az", {"type": type_, "data": "{}"})

            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "az", hub.token("az", data="team=blue")) as c1, \
                    SessionClient(hub.url, "az", hub.token("az", role="moderator", data="team=red")) as c2:
                pub, mod = Operator(c1), Operator(c2)
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                await pub.send("mod.go", {})
                assert (await ack(pub))["reason"] == "role publisher not in from_roles [moderator]"
                await pub.send("team.go", {})
                assert (await ack(pub))["status"] == "unauthorised"
                await mod.send("mod.go", {})
                assert await pair.read_line(scaled(10)) == "MOD"
                await mod.send("team.go", {})
                assert await pair.read_line(scaled(10)) == "TEAM"
                # REST signals (from null): only where allow_rest, whatever from_roles says elsewhere.
                await via_rest("plain.go")
                await via_rest("mod.go")
                await via_rest("rest.go")
                assert await pair.read_line(scaled(10)) == "REST"
                await pub.send("plain.go", {})
                assert await pair.read_line(scaled(10)) == "PLAIN"
                assert pair.pending() == b""


# ---------------------------------------------------------------- heartbeat


HEARTBEAT_CONFIG = """\
session: {{url: "{url}", session_id: hb, token: "{token}"}}
devices: {{base: {{serial: {{port: "{port}"}}, heartbeat: {{hz: {hz}, line: K}}}}}}
rules:
  - {{signal: move, params: {{x: {{type: float, min: -1, max: 1}}}},
     send: {{device: base, line: "M {{x}} 0"}}}}
"""


async def test_heartbeat_at_its_rate_and_silent_after_kill9(tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(HEARTBEAT_CONFIG.format(url=hub.url, token=hub.token("hb"), port=pair.path,
                                                      hz=10))
            async with bridge_process(config) as bridge:
                await bridge.wait_for(r"device base: up")
                loop = asyncio.get_running_loop()
                assert await pair.read_line(scaled(10)) == "K"
                stamps = []
                for _ in range(11):
                    assert await pair.read_line(scaled(5)) == "K"
                    stamps.append(loop.time())
                gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
                assert 0.08 <= gaps[len(gaps) // 2] <= 0.12 + scaled(0.05), gaps     # 10 Hz
                assert stamps[-1] - stamps[0] >= 0.9, stamps                      # never faster
                bridge.proc.kill()
                assert await bridge.proc.wait() == -9
                drained = 0     # what the dead process had written before it died (one line at most)
                with contextlib.suppress(TimeoutError):
                    while drained < 3:
                        await pair.read_line(0.05)
                        drained += 1
                assert drained <= 1
                with pytest.raises(TimeoutError):
                    await pair.read_line(0.5)        # five heartbeat intervals of silence


async def test_rover_firmware_keeps_moving_on_heartbeats_and_stops_by_itself_after_kill9(
        tmp_path: Path) -> None:
    sim = RoverSim(telemetry=False)
    port = await sim.start()
    try:
        async with running_hub() as hub:
            config = tmp_path / "bridge.yaml"
            config.write_text(HEARTBEAT_CONFIG.format(url=hub.url, token=hub.token("hb"), port=port, hz=5))
            async with bridge_process(config) as bridge, SessionClient(hub.url, "hb", hub.token("hb")) as c:
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                await c.signal("move", '{"x": 0.5}')
                await until(lambda: sim.left == 0.5)
                moved = time.monotonic()
                # Well past the firmware's 1 s watchdog with no new command: the heartbeats keep it going.
                await until(lambda: time.monotonic() - moved >= 1.5 and sim.received.count("K") >= 5)
                assert sim.left == 0.5, sim.received
                bridge.proc.kill()
                killed = time.monotonic()
                assert await bridge.proc.wait() == -9
                await until(lambda: sim.left == 0.0, timeout=5)
                stopped = time.monotonic()
                # The last K came at most 0.2 s (5 Hz, more on a loaded machine) before the kill; the firmware
                # stops 1 s after it, by itself: not at once (the port stays open on the rover's side).
                assert 0.5 <= stopped - killed <= 1.0 + scaled(0.15), stopped - killed
    finally:
        await sim.close()


# ---------------------------------------------------------------- deadman watchdog bound


async def test_watchdog_stop_line_within_timeout_plus_100ms(tmp_path: Path) -> None:
    """The deadman's safe line arrives no sooner than timeout_ms after the last applied command and no
    later than timeout_ms + 100 ms (both read at the pty), over several stop cycles."""
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(textwrap.dedent(f"""\
                session: {{url: "{hub.url}", session_id: wd, token: "{hub.token('wd')}"}}
                devices: {{base: {{serial: {{port: "{pair.path}"}}}}}}
                rules:
                  - signal: move
                    params: {{x: {{type: int}}}}
                    send: {{device: base, line: "M {{x}}"}}
                    watchdog: {{timeout_ms: 250, send: {{device: base, line: STOP}}}}
                """))
            async with bridge_process(config) as bridge, SessionClient(hub.url, "wd", hub.token("wd")) as c:
                await bridge.wait_for(r"device base: up")
                await bridge.wait_for(r"READY")
                loop = asyncio.get_running_loop()
                delays = []
                for i in range(5):
                    await c.signal("move", json.dumps({"x": i}))
                    assert await pair.read_line(scaled(10)) == f"M {i}"
                    written = loop.time()
                    assert await pair.read_line(scaled(10)) == "STOP"
                    delays.append(loop.time() - written)
                # Never early; on time (the median: a timer that fired late by design, say on a coarse
                # tick, would be late every cycle); and never badly late, even when this 2-core machine
                # is loaded and one cycle's read of the pty is delayed by the scheduler.
                assert all(d >= 0.25 - 0.02 for d in delays), delays
                assert sorted(delays)[len(delays) // 2] <= 0.25 + scaled(0.1), delays
                assert max(delays) <= 0.25 + scaled(0.4), delays
