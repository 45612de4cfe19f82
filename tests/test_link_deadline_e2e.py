"""A command is never written more than its rule's max_age_ms after it was issued, even when it waited in
a device link's own queue. Real processes: a real hub, a real `python -m bridge run`, a real pty (a
device that stops reading, then reads again), a real mosquitto frozen with SIGSTOP (the TCP connection
stays up, nothing is acknowledged, so QoS 1 messages wait in the link's queue).

Each test waits past max_age_ms before the device (or broker) resumes: the moves still queued in the
link are dropped unwritten, counted in bridge.status (``writes_expired``); the safe actions queued
behind them (a watchdog stop) carry no deadline and are written. The old code wrote every queued move
late. What was already in the kernel's pty buffer (or on the wire to the broker) left the bridge in
time and is out of its reach. Last, the serial link alone with a two-byte newline (exact line
accounting, never half a line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiomqtt

from bridge.client import SessionClient
from bridge.core.model import SerialDeviceConfig
from bridge.devices.serial_link import SerialLink
from tests.conftest import scaled
from tests.helpers.bridge import Operator, bridge_process
from tests.helpers.hub import running_hub
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.pty import PtyPair

MAX_AGE_MS = 1000      # room for a loaded machine: every move is decided well within it

SERIAL_CONFIG = """\
session: {{url: "{url}", session_id: late, token: "{token}"}}
devices: {{base: {{serial: {{port: "{port}"}}}}}}
rules:
  - signal: robot.path
    params: {{p: {{type: string, pattern: "[a-z]{{1,200}}"}}}}
    max_age_ms: {max_age}
    send: {{device: base, line: "P {{p}}"}}
    watchdog: {{timeout_ms: 600, send: {{device: base, line: HALT}}}}
"""


async def status_counters(op: Operator) -> dict[str, Any]:
    """The bridge's counters now (a describe answer carries a targeted bridge.status)."""
    while not op.signals.empty():      # older broadcasts (the one on connect)
        op.signals.get_nowait()
    await op.send("bridge.describe", {})
    counters: dict[str, Any] = json.loads((await op.next("bridge.status")).data)["counters"]
    return counters


async def test_moves_queued_for_a_device_that_stopped_reading_are_dropped_once_too_old(
        tmp_path: Path) -> None:
    async with running_hub() as hub:
        with PtyPair(tmp_path / "rover") as pair:
            config = tmp_path / "bridge.yaml"
            config.write_text(SERIAL_CONFIG.format(url=hub.url, token=hub.token("late"), port=pair.path,
                                                   max_age=MAX_AGE_MS))
            async with bridge_process(config) as bridge, \
                    SessionClient(hub.url, "late", hub.token("late", role="moderator")) as c:
                op = Operator(c)
                await bridge.wait_for(r"READY")
                await bridge.wait_for(r"device base: up")
                # 300 x 202 bytes: more than the kernel's buffer holds, less than the link's 64 KiB (no
                # move refused overloaded, whatever the kernel took).
                moves = [f"P {chr(97 + i % 26) * 200}" for i in range(300)]
                for line in moves:                 # nobody reads the pty: kernel buffer, then the link's
                    await c.signal("robot.path", json.dumps({"p": line[2:]}))
                last_sent = time.monotonic()
                # The device reads again after every move is older than max_age_ms (and the watchdog
                # has queued its HALT behind them).
                await asyncio.sleep(max(0.0, last_sent + 1.5 * MAX_AGE_MS / 1000 - time.monotonic()))
                got = []
                while (line := await pair.read_line(scaled(10))) != "HALT":
                    got.append(line)
                assert got == moves[: len(got)], "not whole lines in order"
                assert len(got) < len(moves) - 50, f"{len(got)} of {len(moves)} moves written late"
                counters = await status_counters(op)
                assert counters["writes_expired"] == len(moves) - len(got), counters
                assert counters["decisions"]["applied"] == len(moves), counters
                await op.send("robot.path", {"p": "fresh"})       # the link works on
                assert await pair.read_line(scaled(5)) == "P fresh"
                assert pair.pending() == b""
                print(f"\nserial link queue: {len(got)} of {len(moves)} moves were in the kernel's buffer; "
                      f"{counters['writes_expired']} queued ones dropped past max_age_ms "
                      f"({MAX_AGE_MS} ms), never written; the watchdog's HALT written")


MQTT_CONFIG = """\
session: {{url: "{url}", session_id: lateq, token: "{token}"}}
devices:
  arm: {{mqtt: {{host: 127.0.0.1, port: {mqtt}, client_id: late-arm, keepalive: 60}}}}
rules:
  - signal: arm.grip
    params: {{force: {{type: int, min: 0, max: 1000}}}}
    max_age_ms: {max_age}
    send: {{device: arm, topic: arm/grip, payload: {{force: "{{force}}"}}, qos: 1}}
    watchdog: {{timeout_ms: 600, send: {{device: arm, topic: arm/grip, payload: {{stop: 1}}, qos: 1}}}}
"""


async def test_grips_queued_in_the_mqtt_link_while_the_broker_is_frozen_are_never_published_late(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_hub() as hub:
        config = tmp_path / "bridge.yaml"
        config.write_text(MQTT_CONFIG.format(url=hub.url, token=hub.token("lateq"), mqtt=mosquitto.port,
                                             max_age=MAX_AGE_MS))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub, \
                bridge_process(config) as bridge, \
                SessionClient(hub.url, "lateq", hub.token("lateq", role="moderator")) as c:
            op = Operator(c)
            await sub.subscribe("arm/grip", qos=0)    # QoS 0 to us: in the order the broker got them
            await bridge.wait_for(r"READY")
            await bridge.wait_for(r"device arm: up")
            assert mosquitto.proc is not None
            grips = 300
            # Frozen: after 64 in flight (the link's window) the grips wait in the link's queue.
            os.kill(mosquitto.proc.pid, signal.SIGSTOP)
            try:
                for i in range(grips):
                    await c.signal("arm.grip", json.dumps({"force": i}))
                last_sent = time.monotonic()
                await asyncio.sleep(max(0.0, last_sent + 1.5 * MAX_AGE_MS / 1000 - time.monotonic()))
            finally:
                os.kill(mosquitto.proc.pid, signal.SIGCONT)
            got: list[bytes] = []
            async with asyncio.timeout(scaled(10)):
                async for message in sub.messages:
                    got.append(bytes(message.payload) if isinstance(message.payload, bytes) else b"")
                    if got[-1] == b'{"stop":1}':
                        break
            with contextlib.suppress(TimeoutError):    # and nothing after the stop
                async with asyncio.timeout(scaled(1)):
                    async for message in sub.messages:
                        got.append(bytes(message.payload) if isinstance(message.payload, bytes) else b"")
            sent = [json.dumps({"force": i}, separators=(",", ":")).encode() for i in range(grips)]
            assert got[-1] == b'{"stop":1}' and got.count(b'{"stop":1}') == 1, got[-3:]
            moved = got[:-1]
            assert moved == sent[: len(moved)], "not the first grips in order"
            assert len(moved) <= 64, f"{len(moved)} grips published, more than were on the wire in time"
            counters = await status_counters(op)
            assert counters["writes_expired"] == grips - len(moved), counters
            print(f"\nmqtt link queue, broker frozen {1.5 * MAX_AGE_MS:.0f}+ ms: {len(moved)} of {grips} "
                  f"grips were on the wire in time; {counters['writes_expired']} queued ones dropped past "
                  f"max_age_ms, never published; the watchdog stop published")


async def test_the_serial_link_alone_drops_only_expired_whole_lines_with_a_two_byte_newline(
        tmp_path: Path) -> None:
    """SerialLink on a pty, newline CRLF, the device not reading: 1,500 lines in one loop turn, every
    other one with a deadline 0.3 s ahead. Past it, the device reads: the lines the kernel held (the
    one it took part of completed), then only the lines without a deadline, in order; the dropped ones
    are exactly the others, reported to on_expired without their newline."""
    expired: list[str] = []
    with PtyPair(tmp_path / "tty") as dev:
        states: asyncio.Queue[bool] = asyncio.Queue()
        link = SerialLink("base", SerialDeviceConfig(port=dev.path, newline="\r\n"), lambda line: None,
                          lambda name, up: states.put_nowait(up),
                          on_expired=lambda name, lines: expired.extend(lines))
        task = asyncio.create_task(link.run())
        try:
            assert await asyncio.wait_for(states.get(), scaled(10)) is True
            deadline = time.monotonic() + 0.3
            lines = [f"{'M' if i % 2 == 0 else 'K'} {i} " + "y" * (i % 37) for i in range(1500)]
            for i, line in enumerate(lines):
                assert link.write_line(line, deadline if i % 2 == 0 else None)
            await asyncio.sleep(0)                          # handed to the transport: most wait there
            assert getattr(link._transport, "mid_line", None) is True, "the kernel took whole lines only"
            await asyncio.sleep(max(0.0, deadline + 0.05 - time.monotonic()))
            assert link.write_line("END")
            got = []
            while (line := await dev.read_line(scaled(10), b"\r\n")) != "END":
                got.append(line)
            held = next(i for i, line in enumerate(got) if line != lines[i])   # the kernel's prefix
            assert 0 < held < 1000
            assert got[held:] == [line for line in lines[held:] if line.startswith("K")]
            assert expired == [line for line in lines[held:] if line.startswith("M")]
            assert link.stats["expired"] == len(expired)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
