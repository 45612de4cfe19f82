"""Fault injection with real processes (issue 4, "Proof").

The rig (tests/helpers/fault_rig.py): ``sigbridge hub`` as a process behind a TCP proxy;
``sigbridge run`` as a process joining it through the proxy; a pty whose far side the test reads (the
*probe*: every command line carries the sender's sequence number, ``C <seq> <x>``); the rover simulator
on a second pty (heartbeat ``K`` at 5 Hz, its own 1 s silence watchdog); a real mosquitto for an MQTT
device. Operators are SessionClients connected straight to the hub.

What is broken, again and again: the bridge-hub link (proxy cut = RST, blackhole = silent dead link),
the hub (killed and started again on the same port), the bridge (``kill -9``, then started again), the
serial port (pty closed and re-created), the broker (restarted); plus floods from several senders and
hostile payloads. What is asserted, over every line that reaches the probe:

- no command line is older than ``max_age_ms`` when it is read (send time -> read time, which can only
  overstate the age at write time), none is written twice, none that was refused is written;
- every safe action arrives within its bound: ``on_disconnect`` after a cut within ``CUT_BOUND_S``, after
  a blackhole within the client's ``link_timeout_s`` + one keepalive tick; the watchdog line not before
  ``timeout_ms`` after the command and within ``timeout_ms`` + 100 ms of its line (plus the machine's
  own wake-up lateness measured meanwhile, ``WakeLateness``: a few ms, 25 ms with two CPU burners
  running and other suites on the 2 cores); the rover stops by itself within 1 s (+ one simulation
  tick) of the last line it got from a killed bridge;
- nothing is written while e-stopped; the bridge never crashes (it is alive after every fault, exits 0
  on SIGTERM after its on_shutdown line), and it recovers by itself (commands flow again).

The figures (faults, stale commands blocked, worst delay per safe action, recovery times) are written
to ``$SIGBRIDGE_FAULTS_REPORT`` (default: ``sigbridge-faults.json`` in the temp dir) and printed with
``-s``; docs/safety.md quotes a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bridge.client import SignalError
from tests.helpers.fault_rig import (
    BLACKHOLE_BOUND_S,
    CUT_BOUND_S,
    MAX_AGE_MS,
    ROVER_BOUND_S,
    SESSION,
    Operator,
    Rig,
    open_rig,
)
from tests.helpers.faults import Ledger, scaled
from tests.helpers.hostile import DEEP, HOSTILE
from tests.helpers.hub import HubHandle, raw_connect
from tests.helpers.mosquitto import Mosquitto

LEDGER = Ledger()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    """Write (and print, with -s) the figures measured by this module's tests."""
    yield
    path = Path(os.environ.get("SIGBRIDGE_FAULTS_REPORT",
                               Path(tempfile.gettempdir()) / "sigbridge-faults.json"))
    text = LEDGER.write(path)
    print(f"\nfault-injection figures ({path}):\n{text}")


@pytest.fixture
async def rig(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Rig]:
    async with open_rig(tmp_path, mosquitto, LEDGER) as r:
        yield r


# ---------------------------------------------------------------- session link and hub


async def test_link_cut_blackhole_and_hub_restart(rig: Rig) -> None:
    op = await rig.operator("moderator")
    await rig.command_flows(op)

    # Cuts (RST) with the hub unreachable meanwhile; commands sent during the first outage are buffered
    # by the hub for the bridge's connection and replayed at resume with their old timestamps.
    for n in range(3):
        start, mark = len(rig.probe.lines), rig.bridge.mark()
        rig.proxy.refuse(True)
        t_fault = time.time()
        await rig.proxy.cut()
        LEDGER.faults["link cut (RST)"] += 1
        d = await rig.probe.wait_text("D", start)
        assert d.t - t_fault <= scaled(CUT_BOUND_S), d.t - t_fault
        LEDGER.delay("on_disconnect after a link cut", d.t - t_fault)
        held: list[int] = []
        if n == 0:
            held = [await rig.book.go(op, 0.1) for _ in range(5)]
            await asyncio.sleep(MAX_AGE_MS / 1000 + 0.2)    # their age is what is under test
        rig.proxy.refuse(False)
        t_back = time.time()
        await rig.bridge.wait_for(r"connected as", after=mark)
        if held:
            acks = await op.wait_acks(held)
            assert set(acks.values()) == {"stale"}, acks
            rig.book.refused.update(acks)
            LEDGER.stale_blocked += len(held)
        LEDGER.recovery("link cut", await rig.command_flows(op) - t_back)

    # Blackhole: the link stays open but nothing passes; only the keepalive can notice.
    start, mark = len(rig.probe.lines), rig.bridge.mark()
    rig.proxy.blackhole(True)
    t_fault = time.time()
    LEDGER.faults["link blackhole"] += 1
    held = [await rig.book.go(op, 0.1) for _ in range(5)]   # forwarded by the hub into the void
    d = await rig.probe.wait_text("D", start, timeout=BLACKHOLE_BOUND_S + 10)
    rig.proxy.blackhole(False)
    t_back = time.time()
    assert d.t - t_fault <= scaled(BLACKHOLE_BOUND_S), d.t - t_fault
    LEDGER.delay("on_disconnect after a blackhole", d.t - t_fault)
    await rig.bridge.wait_for(r"connected as", after=mark)
    acks = await op.wait_acks(held)    # replayed by the hub after the resume, seconds old
    assert set(acks.values()) == {"stale"}, acks
    rig.book.refused.update(acks)
    LEDGER.stale_blocked += len(held)
    LEDGER.recovery("link blackhole", await rig.command_flows(op) - t_back)
    await rig.watchdog_in_time(op)

    # The hub crashes (SIGKILL) and then stops cleanly (SIGTERM); each time a new process takes the
    # port. The bridge's old connection is gone with the hub: it joins again as a new one.
    for how in ("SIGKILL", "SIGTERM"):
        start, mark = len(rig.probe.lines), rig.bridge.mark()
        t_fault = time.time()
        code = await (rig.hub.kill() if how == "SIGKILL" else rig.hub.stop())
        assert code == (-9 if how == "SIGKILL" else 0), code
        LEDGER.faults[f"hub restart ({how})"] += 1
        d = await rig.probe.wait_text("D", start)
        assert d.t - t_fault <= scaled(CUT_BOUND_S), d.t - t_fault
        LEDGER.delay("on_disconnect after the hub died", d.t - t_fault)
        await rig.drop_operators()
        await rig.hub.start()
        t_back = time.time()
        await rig.bridge.wait_for(r"connected as", after=mark, timeout=30)
        op = await rig.operator("moderator")
        LEDGER.recovery("hub restart", await rig.command_flows(op) - t_back)
    await rig.watchdog_in_time(op)
    await rig.finish()


# ---------------------------------------------------------------- the bridge dies


async def test_kill9_rover_stops_by_itself_and_bridge_recovers(rig: Rig) -> None:
    op = await rig.operator("moderator")
    for _ in range(2):
        # A joystick at 20 Hz keeps the rover moving (and the watchdog quiet) until the bridge dies.
        driving = asyncio.Event()

        async def drive(driving: asyncio.Event) -> None:
            while True:
                await rig.book.go(op, 0.5)
                if rig.rover.left != 0:
                    driving.set()
                await asyncio.sleep(0.05)   # the operator's send rate, not synchronisation

        driver = asyncio.create_task(drive(driving))
        try:
            await asyncio.wait_for(driving.wait(), scaled(10))
            stops_before = len(rig.watched.stops)
            t_kill = time.monotonic() * 1000
            assert await rig.bridge.kill9() == -9
            LEDGER.faults["bridge kill -9"] += 1
            # Commands keep coming while the bridge is dead: the hub holds them for its old connection,
            # which the restarted bridge never resumes: none of them may ever be written.
            sent_before = rig.book.next_seq
            async with asyncio.timeout(scaled(10)):
                while len(rig.watched.stops) == stops_before:
                    rig.watched.stopped.clear()
                    await rig.watched.stopped.wait()
        finally:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError, SignalError):
                await driver
        stop_ms, last_ms = rig.watched.stops[-1]
        assert rig.rover.left == rig.rover.right == 0
        assert (stop_ms - last_ms) / 1000 <= scaled(ROVER_BOUND_S), (stop_ms, last_ms)
        LEDGER.delay("rover firmware stop after its last line (bridge killed)", (stop_ms - last_ms) / 1000)
        LEDGER.delay("rover firmware stop after kill -9", (stop_ms - t_kill) / 1000)
        rig.book.lost.update(range(sent_before + 1, rig.book.next_seq + 1))
        LEDGER.never_delivered += rig.book.next_seq - sent_before

        mark = rig.bridge.mark()
        t_restart = time.time()
        await rig.bridge.start()
        await rig.bridge_up(mark)
        LEDGER.recovery("bridge kill -9 (process start to first command)",
                        await rig.command_flows(op) - t_restart)
    await rig.watchdog_in_time(op)
    await rig.finish()


# ---------------------------------------------------------------- devices


async def test_serial_port_and_broker_come_back(rig: Rig) -> None:
    op = await rig.operator("moderator")
    await rig.command_flows(op)
    for _ in range(2):
        mark = rig.bridge.mark()
        rig.probe.vanish()
        LEDGER.faults["serial port vanished"] += 1
        await rig.bridge.wait_for(r"device probe: down", after=mark)
        # Decided while the port is gone: the link does not queue them, so they are never written.
        gone = [await rig.book.go(op, 0.2) for _ in range(5)]
        await op.wait_acks(gone)
        rig.book.lost.update(gone)
        LEDGER.never_delivered += len(gone)
        t_back = time.time()
        rig.probe.recreate()
        await rig.bridge.wait_for(r"device probe: up", after=mark)
        LEDGER.recovery("serial port re-created", await rig.command_flows(op) - t_back)

    for _ in range(2):
        mark = rig.bridge.mark()
        await asyncio.to_thread(rig.broker.stop)
        LEDGER.faults["mosquitto restart"] += 1
        await rig.bridge.wait_for(r"device arm: down", after=mark)
        gone = [await rig.book.grip(op, 3) for _ in range(3)]
        await op.wait_acks(gone)
        rig.book.lost.update(gone)
        LEDGER.never_delivered += len(gone)
        t_back = time.time()
        await asyncio.to_thread(rig.broker.start)
        async with aiomqtt.Client("127.0.0.1", rig.broker.port) as sub:
            await sub.subscribe("arm/grip/#", qos=1)
            await rig.bridge.wait_for(r"device arm: up", after=mark)
            seq = await rig.book.grip(op, 7)
            async with asyncio.timeout(scaled(10)):
                async for msg in sub.messages:
                    got = json.loads(msg.payload)
                    assert got["seq"] not in rig.book.lost, got
                    age_ms = (time.time() - rig.book.sent[got["seq"]]) * 1000
                    assert age_ms <= MAX_AGE_MS, (got, age_ms)
                    if got == {"seq": seq, "force": 7}:
                        break
        LEDGER.recovery("mosquitto restart", time.time() - t_back)
    await rig.watchdog_in_time(op)
    await rig.finish()


# ---------------------------------------------------------------- floods and the e-stop


async def test_flood_from_several_senders_then_estop_latches(rig: Rig) -> None:
    senders = [await rig.operator() for _ in range(4)]
    noise = await rig.operator()
    mod = await rig.operator("moderator")
    window, windows = 40, 20          # 4 senders x 20 windows x 40 = 3200 commands

    async def flood(op: Operator) -> list[int]:
        # End-to-end flow control, as an operator app would do it: at most `window` commands of one
        # sender that the bridge has not answered yet.
        out: list[int] = []
        for _ in range(windows):
            seqs = list(await asyncio.gather(*(rig.book.go(op, 0.5) for _ in range(window))))
            await op.wait_acks(seqs)
            out += seqs
        return out

    async def junk() -> int:
        n = 0
        for _ in range(windows):
            await asyncio.gather(*(noise.client.signal("noise.unmatched", '{"x":1}',
                                                       retry_after_reconnect=False) for _ in range(window)))
            n += window
        return n

    start = len(rig.probe.lines)
    t0 = time.time()
    junk_task = asyncio.create_task(junk())
    batches = await asyncio.gather(*(flood(op) for op in senders))
    junk_sent = await junk_task
    statuses = {seq: op.acks[seq] for op, seqs in zip(senders, batches, strict=True) for seq in seqs}
    assert set(statuses.values()) <= {"applied", "stale"}, set(statuses.values())
    applied = {s for s, st in statuses.items() if st == "applied"}
    rig.book.refused.update({s: st for s, st in statuses.items() if st != "applied"})
    LEDGER.stale_blocked += len(statuses) - len(applied)
    assert len(applied) >= 0.9 * len(statuses), f"{len(statuses) - len(applied)} stale"
    i = start
    for _ in applied:     # each was written before its ack left the bridge; wait until all are read
        i = await rig.probe.wait(lambda s: s.startswith("C "), i, timeout=20) + 1
    written = {int(ln.text.split()[1]): ln.t for ln in rig.probe.lines[start:] if ln.text.startswith("C ")}
    assert set(written) == applied       # every applied command once, nothing else
    lat = sorted(written[s] - rig.book.sent[s] for s in applied)
    span = max(written.values()) - t0
    LEDGER.faults["flood (4 senders + 1 junk sender)"] += 1
    LEDGER.floods.append({"commands": len(statuses), "junk_signals": junk_sent, "seconds": round(span, 2),
                          "commands_per_s": round(len(applied) / span), "stale": len(statuses) - len(applied),
                          "latency_p50_ms": round(lat[len(lat) // 2] * 1000, 1),
                          "latency_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1),
                          "latency_max_ms": round(lat[-1] * 1000, 1)})

    # E-stop in the middle of a flood: from the E line on nothing is written; a publisher cannot reset.
    start = len(rig.probe.lines)
    rover_mark = len(rig.rover.received)
    latched = asyncio.Event()
    after_latch: list[int] = []

    async def drive(op: Operator) -> list[int]:
        out: list[int] = []
        extra = 0
        while extra < 5:
            if latched.is_set():
                extra += 1
            seqs = list(await asyncio.gather(*(rig.book.go(op, 0.5) for _ in range(20))))
            if latched.is_set() and extra:
                after_latch.extend(seqs)
            await op.wait_acks(seqs)
            out += seqs
        return out

    drivers = [asyncio.create_task(drive(op)) for op in senders[1:]]
    await rig.probe.wait(lambda s: s.startswith("C "), start)
    t_estop = time.time()
    await senders[0].client.signal("estop", "")
    LEDGER.faults["e-stop during a flood"] += 1
    e = await rig.probe.wait(lambda s: s == "E", start)
    LEDGER.delay("e-stop line after the e-stop signal was sent", rig.probe.lines[e].t - t_estop)
    await senders[0].client.signal("estop_reset", "")      # a publisher: refused, still latched
    latched.set()
    done = await asyncio.gather(*drivers)
    statuses = {seq: op.acks[seq] for op, seqs in zip(senders[1:], done, strict=True) for seq in seqs}
    assert {statuses[s] for s in after_latch} == {"estopped"}, "a command was not refused while latched"
    blocked = {s: st for s, st in statuses.items() if st == "estopped"}
    rig.book.refused.update(blocked)
    LEDGER.estopped_blocked += len(blocked)
    # A second e-stop writes E again: once it is read, every line written before it has been read.
    await mod.client.signal("estop", "")
    e2 = await rig.probe.wait(lambda s: s == "E", e + 1)
    assert not [ln for ln in rig.probe.lines[e:e2] if ln.text.startswith("C ")]
    rover = rig.rover.received[rover_mark:]
    last_move = max((i for i, ln in enumerate(rover) if ln.startswith("M")), default=-1)
    assert "S" in rover[last_move + 1:], "the rover's last move was not followed by a stop"
    assert rig.rover.left == rig.rover.right == 0

    await mod.client.signal("estop_reset", "")
    await rig.command_flows(mod)
    await rig.watchdog_in_time(mod)
    await rig.finish()


# ---------------------------------------------------------------- hostile payloads


async def test_hostile_payloads_never_reach_the_wire(rig: Rig) -> None:
    handle = HubHandle(f"ws://127.0.0.1:{rig.hub.port}", f"http://127.0.0.1:{rig.hub.port}", rig.hub.port,
                       rig.key, rig.secret)
    raw = await raw_connect(handle, SESSION, role="moderator")
    assert raw.connected["op"] == "connected", raw.connected
    answers: dict[int, dict[str, Any]] = {}
    acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    changed = asyncio.Event()

    async def read() -> None:
        while True:
            frame = await raw.recv(timeout=3600)
            if frame.get("op") in ("ack", "nack"):
                answers[frame["id"]] = frame
                changed.set()
            elif frame.get("op") == "signal" and frame.get("type") == "bridge.ack":
                acks.put_nowait(json.loads(frame["data"]))

    reader = asyncio.create_task(read())
    start = len(rig.probe.lines)
    try:
        for n, (type_, data, expect) in enumerate(HOSTILE, 1):
            await raw.send(op="signal", id=n, type=type_, data=data, retry=True)
            async with asyncio.timeout(scaled(10)):
                while n not in answers:
                    changed.clear()
                    await changed.wait()
            LEDGER.hostile_sent += 1
            answer = answers[n]
            if expect == "hub":
                assert answer["op"] == "nack", (type_, data, answer)
                LEDGER.refused_by_hub += 1
                continue
            assert answer["op"] == "ack", (type_, str(data)[:80], answer)
            if expect == "rejected":
                ack = await asyncio.wait_for(acks.get(), scaled(10))
                assert ack["status"] == "rejected", (type_, str(data)[:80], ack)
                LEDGER.rejected += 1
        # Garbage frames at the wire level, on a link of their own: the hub answers or drops that link.
        junk = await raw_connect(handle, SESSION)
        for frame in ("{", "[]", "null", '{"op":"signal","id":"x","type":"go","data":{}}', "\x00" * 100,
                      "[" * 100_000, '{"op":"signal","id":1,"type":"go","data":"","to":' + "[" * 50_000 + "}",
                      '{"op":"signal","id":1e999,"type":"go","data":"' + DEEP[:6000] + '"}'):
            with contextlib.suppress(Exception):
                await junk.ws.send(frame)
        with contextlib.suppress(Exception):
            await junk.close()
        LEDGER.hostile_sent += 8
        LEDGER.faults["hostile payloads"] += 1
        # Nothing reached the wire: the first line after all that is the good command sent last.
        await raw.send(op="signal", id=10**6, type="say", data='{"text":"all good"}', retry=True)
        assert (await rig.probe.wait_text("SAY all good", start)) == rig.probe.lines[start]
        assert (await asyncio.wait_for(acks.get(), scaled(10)))["status"] == "applied"
        assert acks.empty()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await raw.close()
    op = await rig.operator("moderator")
    await rig.command_flows(op)
    await rig.finish()
