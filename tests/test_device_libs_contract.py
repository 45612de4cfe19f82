"""What the device links rely on below their libraries' public APIs, checked against the installed
versions: aiomqtt's paho client (``bridge.devices.mqtt_link``: the outgoing queue it purges, the
method it wraps so an expired message is never sent, the publish callback it chains) and
pyserial-asyncio-fast's transport (``bridge.devices.serial_transport``: the internals its
back-pressure fixes override). pyproject.toml pins each below the release that may change them
(aiomqtt <2.6, pyserial-asyncio-fast <0.17); a release that moves any of it fails here first.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from importlib.metadata import version

import aiomqtt
import paho.mqtt.client as paho
import serial
import serial_asyncio_fast

from bridge.devices.serial_transport import SerialTransport


def _major_minor(dist: str) -> tuple[int, int]:
    major, minor, *_ = version(dist).split(".")
    return int(major), int(minor)


def test_the_pins_hold() -> None:
    assert (2, 5) <= _major_minor("aiomqtt") < (2, 6)
    assert (0, 16) <= _major_minor("pyserial-asyncio-fast") < (0, 17)
    assert _major_minor("paho-mqtt")[0] == 2


async def test_aiomqtt_wraps_a_paho_client_with_the_internals_the_link_uses() -> None:
    client = aiomqtt.Client("127.0.0.1", 1883, max_inflight_messages=4, max_queued_outgoing_messages=8)
    inner = client._client
    assert isinstance(inner, paho.Client)
    # The queue purge: paho's outgoing messages by mid, under paho's own re-entrant lock.
    assert isinstance(inner._out_messages, dict)
    lock = inner._out_message_mutex
    assert isinstance(lock, type(threading.RLock()))
    with lock, lock:   # re-entrant: the wrapped _update_inflight takes it again inside the purge
        pass
    # The state a queued (not yet sent) message has, which the purge tests for.
    assert isinstance(paho.mqtt_ms_queued, int)
    message = paho.MQTTMessage(mid=1, topic=b"t")
    assert message.mid == 1 and isinstance(message.state, int)
    # The method wrapped so expired messages are dropped before paho sends the queued ones: an
    # instance attribute set on the client must be what paho calls (it calls self._update_inflight()).
    assert inspect.signature(inner._update_inflight).parameters == {}
    source = inspect.getsource(paho.Client)
    assert "self._update_inflight()" in source
    # The publish callback (API v2) aiomqtt installs and the link chains.
    assert inner.on_publish is not None
    assert list(inspect.signature(inner.on_publish).parameters)[:3] == ["client", "userdata", "mid"]


def test_serial_transport_internals_the_fixes_override() -> None:
    base = serial_asyncio_fast.SerialTransport
    assert issubclass(SerialTransport, base)
    for name in ("_write_ready", "_ensure_writer", "_remove_writer", "_maybe_pause_protocol",
                 "_maybe_resume_protocol", "write"):
        assert callable(getattr(base, name)), name
    assert list(inspect.signature(base.__init__).parameters) == ["self", "loop", "protocol",
                                                                 "serial_instance"]

    async def transport_on_a_pty() -> None:
        master, slave = os.openpty()
        port = serial.serial_for_url(os.ttyname(slave), do_not_open=False)
        try:
            loop = asyncio.get_running_loop()
            transport = SerialTransport(loop, asyncio.Protocol(), port)
            # The attributes the overrides read and write, as the library's __init__ leaves them.
            assert len(transport._write_buffer) == 0 and hasattr(transport._write_buffer, "append")
            assert transport._closing is False
            transport.write(b"hello\n")
            assert os.read(master, 64) == b"hello\n"
            transport.close()
            await asyncio.sleep(0)
        finally:
            os.close(master)
            os.close(slave)

    asyncio.run(transport_on_a_pty())
