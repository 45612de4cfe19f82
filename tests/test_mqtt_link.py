"""MqttLink against a real mosquitto (the `mosquitto` fixture): publish/subscribe, availability and last
will, broker restarts, TCP_NODELAY on the real socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from bridge.core.model import MqttDeviceConfig
from bridge.devices import mqtt_link
from bridge.devices.mqtt_link import MqttLink
from bridge.devices.topics import check_filter
from tests.conftest import scaled
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.poll import until

LOGGER = "bridge.devices.mqtt_link"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Harness:
    link: MqttLink
    messages: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)
    states: asyncio.Queue[bool] = field(default_factory=asyncio.Queue)

    async def message(self) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.messages.get(), scaled(10))

    async def state(self) -> bool:
        return await asyncio.wait_for(self.states.get(), scaled(10))


def config(broker: Mosquitto, **kw: object) -> MqttDeviceConfig:
    base: dict[str, object] = {"port": broker.port, "client_id": "arm-bridge", "reconnect_min_s": 0.02,
                               "reconnect_max_s": 0.2}
    return MqttDeviceConfig(**{**base, **kw})  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(broker: Mosquitto, subs: tuple[str, ...] = (), **kw: object) -> AsyncIterator[Harness]:
    h_messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    h_states: asyncio.Queue[bool] = asyncio.Queue()
    link = MqttLink("arm", config(broker, **kw), subs, lambda t, p: h_messages.put_nowait((t, p)),
                    lambda _n, up: h_states.put_nowait(up))
    task = asyncio.create_task(link.run())
    try:
        yield Harness(link, h_messages, h_states)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not link.up


@contextlib.asynccontextmanager
async def peer(broker: Mosquitto, *subs: str) -> AsyncIterator[aiomqtt.Client]:
    """Another MQTT client (the device, or an observer), subscribed before it is handed out."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=None) as c:
        for s in subs:
            await c.subscribe(s, qos=1)
        yield c


async def next_message(c: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(scaled(10)):
        return await anext(aiter(c.messages))


async def test_publish_reaches_subscriber_never_retained(mosquitto: Mosquitto) -> None:
    async with running(mosquitto) as h, peer(mosquitto, "arm/grip/set") as device:
        assert await h.state() is True
        assert h.link.publish("arm/grip/set", b'{"force": 40}', qos=1)
        m = await next_message(device)
        assert (m.topic.value, m.payload, m.retain) == ("arm/grip/set", b'{"force": 40}', False)
        await until(lambda: h.link.stats["published"] == 1)
        # A late subscriber gets no retained command: the first thing it sees is our sentinel.
        async with peer(mosquitto, "arm/grip/set") as late:
            await late.publish("arm/grip/set", b"sentinel", qos=1)
            assert (await next_message(late)).payload == b"sentinel"


async def test_publishes_keep_their_order(mosquitto: Mosquitto) -> None:
    async with running(mosquitto) as h, peer(mosquitto, "arm/seq") as device:
        assert await h.state() is True
        for qos in (0, 1):      # MQTT orders messages per topic and QoS level
            for i in range(200):
                assert h.link.publish("arm/seq", str(i).encode(), qos=qos)
            got = [int((await next_message(device)).payload) for _ in range(200)]  # type: ignore[arg-type]
            assert got == list(range(200))
        await until(lambda: h.link.stats["published"] == 400)   # QoS 0 counted once written too


async def test_subscriptions_with_wildcards(mosquitto: Mosquitto) -> None:
    async with running(mosquitto, ("arm/state/#", "sensors/+/temp")) as h, peer(mosquitto) as device:
        assert await h.state() is True
        for topic in ("arm/state/grip", "sensors/a/b/temp", "other/x", "sensors/a/temp", "arm/state/end"):
            await device.publish(topic, topic.encode(), qos=1)
        got = [await h.message() for _ in range(3)]
        assert got == [("arm/state/grip", b"arm/state/grip"), ("sensors/a/temp", b"sensors/a/temp"),
                       ("arm/state/end", b"arm/state/end")]
        assert h.messages.empty()


async def test_refuses_while_down_and_bad_topics(mosquitto: Mosquitto) -> None:
    link = MqttLink("arm", config(mosquitto), [], lambda t, p: None)
    assert not link.publish("arm/grip/set", b"{}")
    assert link.stats["publishes_while_down"] == 1
    with pytest.raises(ValueError, match="whole levels"):
        MqttLink("arm", config(mosquitto), ["arm/#/x"], lambda t, p: None)
    for good in ("a/#", "+/b/+", "#", "a"):
        check_filter(good)
    async with running(mosquitto) as h:
        assert await h.state() is True
        assert not h.link.publish("arm/#", b"x")
        assert not h.link.publish("", b"x")
        assert not h.link.publish("arm/x", b"x", qos=3)
        assert h.link.stats["bad_publish_refused"] == 3


async def test_availability_online_then_offline_on_clean_stop(mosquitto: Mosquitto) -> None:
    topic = "sigbridge/arm-bridge/availability"
    async with running(mosquitto) as h:
        assert await h.state() is True
        async with peer(mosquitto, topic) as obs:
            m = await next_message(obs)
            assert (m.payload, m.retain) == (b"online", True)
    async with peer(mosquitto, topic) as obs:           # after the clean stop, retained
        m = await next_message(obs)
        assert (m.payload, m.retain) == (b"offline", True)


CHILD = """
import asyncio, sys
from bridge.core.model import MqttDeviceConfig
from bridge.devices.mqtt_link import MqttLink
async def main():
    link = MqttLink("arm", MqttDeviceConfig(port=int(sys.argv[1]), client_id="doomed"), [], lambda t, p: None,
                    lambda n, up: print("UP" if up else "DOWN", flush=True))
    await link.run()
asyncio.run(main())
"""


async def test_last_will_offline_when_the_process_is_killed(mosquitto: Mosquitto) -> None:
    topic = "sigbridge/doomed/availability"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(mosquitto.port),
                                                stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), scaled(20))
        assert line == b"UP\n"
        async with peer(mosquitto, topic) as obs:
            assert (await next_message(obs)).payload == b"online"
            proc.send_signal(signal.SIGKILL)             # no DISCONNECT packet: the broker sends the will
            m = await next_message(obs)
            assert (m.topic.value, m.payload) == (topic, b"offline")
        async with peer(mosquitto, topic) as late:
            m = await next_message(late)
            assert (m.payload, m.retain) == (b"offline", True)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_broker_restart_recovers_and_resubscribes(mosquitto: Mosquitto,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    async with running(mosquitto, ("arm/state/#",)) as h:
        assert await h.state() is True
        mosquitto.stop()
        assert await h.state() is False
        assert not h.link.publish("arm/grip/set", b"stale")   # dropped now, never replayed later
        await until(lambda: h.link.stats["connect_failures"] >= 3)
        mosquitto.start()
        assert await h.state() is True
        async with peer(mosquitto, "arm/grip/set", "sigbridge/arm-bridge/availability") as device:
            m = await next_message(device)                  # "online" announced again, retained
            assert (m.topic.value, m.payload, m.retain) == ("sigbridge/arm-bridge/availability", b"online",
                                                             True)
            await device.publish("arm/state/grip", b'{"force": 3}', qos=1)
            assert await h.message() == ("arm/state/grip", b'{"force": 3}')   # resubscribed
            assert h.link.publish("arm/grip/set", b"fresh", qos=1)
            assert (await next_message(device)).payload == b"fresh"  # the stale one never came
        await until(lambda: any(r.levelno == logging.INFO for r in caplog.records))  # outage over
        mosquitto.restart()                                  # and once more, straight through
        assert await h.state() is False
        assert await h.state() is True
        await until(lambda: sum(r.levelno == logging.INFO for r in caplog.records) == 2)
    records = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.INFO]
    assert [r.levelname for r in records] == ["WARNING", "INFO", "WARNING", "INFO"], \
        [r.getMessage() for r in records]
    assert h.link.stats["publishes_while_down"] == 1


def _nodelay_sockets_to(port: int) -> list[int]:
    """TCP_NODELAY of every socket of this process connected to 127.0.0.1:port (via /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(fd)))
            try:
                if s.family == socket.AF_INET and s.type == socket.SOCK_STREAM and s.getpeername()[1] == port:
                    found.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            finally:
                s.close()
    return found


async def test_tcp_nodelay_is_set_on_the_socket(mosquitto: Mosquitto) -> None:
    assert _nodelay_sockets_to(mosquitto.port) == []
    async with running(mosquitto) as h:
        assert await h.state() is True
        flags = _nodelay_sockets_to(mosquitto.port)
        assert len(flags) == 1 and flags[0] != 0, flags


async def test_callback_error_does_not_break_the_link(mosquitto: Mosquitto) -> None:
    got: list[bytes] = []

    def on_message(topic: str, payload: bytes) -> None:
        got.append(payload)
        if payload == b"boom":
            raise RuntimeError("consumer bug")

    states: asyncio.Queue[bool] = asyncio.Queue()
    link = MqttLink("arm", config(mosquitto), ["t"], on_message, lambda _n, up: states.put_nowait(up))
    task = asyncio.create_task(link.run())
    try:
        assert await asyncio.wait_for(states.get(), scaled(10)) is True
        async with peer(mosquitto) as device:
            await device.publish("t", b"boom", qos=1)
            await device.publish("t", b"after", qos=1)
            await until(lambda: len(got) == 2)
        assert got == [b"boom", b"after"] and link.up
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _tls_broker(tmp: Path) -> Mosquitto:
    """A mosquitto that only takes TLS (our own CA) with username/password."""
    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=ca")
    run("openssl", "req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "srv.crt", "-days", "2", "-extfile", "san.ext")
    run("mosquitto_passwd", "-b", "-c", "pw", "bridge", "s3cret")
    broker = Mosquitto()
    # "user root": when the tests run as root, keep it, so the broker can read files in a 0700 tmp dir.
    broker.conf.write_text(
        f"user root\nlistener {broker.port} 127.0.0.1\ncafile {tmp}/ca.crt\ncertfile {tmp}/srv.crt\n"
        f"keyfile {tmp}/srv.key\nallow_anonymous false\npassword_file {tmp}/pw\npersistence false\n")
    broker.start()
    return broker


async def test_tls_with_username_and_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    broker = _tls_broker(tmp_path)
    try:
        ca = str(tmp_path / "ca.crt")
        async with running(broker, ("arm/state/#",), tls=True, ca_file=ca, username="bridge",
                           password="s3cret") as h:
            assert await h.state() is True
            async with aiomqtt.Client("127.0.0.1", broker.port, username="bridge", password="s3cret",
                                      tls_params=aiomqtt.TLSParameters(ca_certs=ca)) as device:
                await device.subscribe("arm/grip/set", qos=1)
                assert h.link.publish("arm/grip/set", b'{"force": 1}', qos=1)
                assert (await next_message(device)).payload == b'{"force": 1}'
                await device.publish("arm/state/grip", b"{}", qos=1)
                assert await h.message() == ("arm/state/grip", b"{}")
        caplog.clear()
        async with running(broker, tls=True, ca_file=ca, username="bridge", password="wrong") as h:
            await until(lambda: h.link.stats["connect_failures"] >= 3)
            assert not h.link.up
        warnings = [r.getMessage() for r in caplog.records
                    if r.name.startswith(LOGGER) and r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "Not authorized" in warnings[0], warnings
    finally:
        broker.close()


async def _collect(c: aiomqtt.Client, n: int) -> list[int]:
    got: list[int] = []
    async with asyncio.timeout(scaled(30)):
        async for m in c.messages:
            got.append(int(m.payload))  # type: ignore[arg-type]
            if len(got) == n:
                return got
    return got


async def test_qos1_burst_is_queued_not_lost_and_arrives_in_order(mosquitto: Mosquitto) -> None:
    # A burst far past the in-flight window, in one go (no loop turn: nothing can be acknowledged
    # meanwhile). The broker keeps all (max_queued_messages 0); so must the link.
    n = mqtt_link.MAX_QUEUED
    assert n > 10 * mqtt_link.MAX_INFLIGHT
    async with running(mosquitto) as h, peer(mosquitto, "arm/burst") as device:
        assert await h.state() is True
        accepted = [h.link.publish("arm/burst", str(i).encode(), qos=1) for i in range(n)]
        assert all(accepted), f"refused {accepted.count(False)} of {n}"
        assert await _collect(device, n) == list(range(n))
        await until(lambda: h.link.stats["published"] == n)
        assert h.link.stats["publish_overflow"] == h.link.stats["publish_errors"] == 0


async def test_full_queue_refuses_the_newest_and_counts(mosquitto: Mosquitto,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_link, "MAX_QUEUED", 300)
    async with running(mosquitto) as h, peer(mosquitto, "arm/burst") as device:
        assert await h.state() is True
        accepted = [h.link.publish("arm/burst", str(i).encode(), qos=1) for i in range(310)]
        assert accepted == [True] * 300 + [False] * 10          # the older ones are kept, in order
        assert h.link.stats["publish_overflow"] == 10
        assert await _collect(device, 300) == list(range(300))
        await until(lambda: h.link.stats["published"] == 300)
        assert h.link.publish("arm/burst", b"300", qos=1)          # drained: room again
        assert await _collect(device, 1) == [300]
        await until(lambda: h.link.stats["published"] == 301)     # its PUBACK too: nothing waiting
        accepted = [h.link.publish("arm/burst", str(i).encode(), qos=0) for i in range(301, 611)]
        assert accepted == [True] * 300 + [False] * 10          # QoS 0 not yet written: same bound
        assert await _collect(device, 300) == list(range(301, 601))


async def test_the_queue_is_short_enough_that_nothing_waits_long(mosquitto: Mosquitto) -> None:
    # The real bound, not a patched one: a queue is a delay, and a robot must not act on commands that
    # waited seconds in it. 1,000 leave a local broker in ~0.3 s.
    assert mqtt_link.MAX_QUEUED <= 1_000
    async with running(mosquitto) as h, peer(mosquitto, "arm/burst") as device:
        assert await h.state() is True
        started = time.monotonic()
        accepted = [h.link.publish("arm/burst", str(i).encode(), qos=1) for i in range(1_001)]
        assert accepted.count(True) == mqtt_link.MAX_QUEUED and accepted[-1] is False
        assert await _collect(device, mqtt_link.MAX_QUEUED) == list(range(mqtt_link.MAX_QUEUED))
        print(f"{mqtt_link.MAX_QUEUED} queued publishes delivered in {time.monotonic() - started:.2f} s")


async def test_queue_at_an_outage_is_dropped_never_replayed(mosquitto: Mosquitto) -> None:
    async with running(mosquitto) as h:
        assert await h.state() is True
        n = mqtt_link.MAX_QUEUED
        assert all([h.link.publish("arm/grip/set", f"stale {i}".encode(), qos=1) for i in range(n)])
        mosquitto.stop()      # blocks the loop: most of the burst is still in paho's queue
        assert await h.state() is False
        assert not h.link.publish("arm/grip/set", b"stale while down", qos=1)
        assert h.link.stats["publishes_while_down"] == 1
        # Every accepted publish is accounted for: acknowledged before the outage, or dropped by it.
        assert h.link.stats["published"] + h.link.stats["inflight_cancelled"] == n
        assert h.link.stats["inflight_cancelled"] > 0
        mosquitto.start()
        async with peer(mosquitto, "arm/grip/set") as device:
            assert await h.state() is True
            assert h.link.publish("arm/grip/set", b"fresh", qos=1)
            assert (await next_message(device)).payload == b"fresh"   # nothing stale came first
