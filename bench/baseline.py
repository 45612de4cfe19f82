"""The minimal baseline the bridge is measured against, run as two child processes:

``python -m bench.baseline relay --port P``
    a bare `websockets` relay: every text frame a client sends is forwarded, untouched, to the other
    clients connected on the same path (a path is a "room", like a session). No auth, no acks, no
    validation, no JSON: the least a relay can do.
``python -m bench.baseline device --url ws://127.0.0.1:P/room --pty PATH [--mqtt-port M]``
    a bare client doing the bridge's job with none of its checks: a ``robot.move`` frame becomes the
    line ``M {x:.2f} {y:.2f} {n}`` written to the pty; an ``arm.grip`` frame becomes a paho QoS 1
    publish of ``{"force":..,"n":..}`` on ``--topic``; a ``T <n> <speed>`` line read from the pty
    becomes a ``robot.telemetry`` frame. paho is driven from the asyncio loop through its
    external-loop hooks (no network thread), with TCP_NODELAY.
``python -m bench.baseline onehop --port P --pty PATH``
    the one-hop baseline: a bare `websockets` server that does the device client's job for the frames
    its clients send (``robot.move`` -> the same line on the pty), with no relay in between. This is
    how a one-hop tool (Node-RED's ws-in -> function -> serial) is shaped, and what the bridge's
    embedded session is measured against.

Both print ``READY`` on stdout once usable. Frames are ``{"op":"signal","type":..,"data":..}``, the
shape of wire protocol v1, so the bench's operator code is the same for both paths.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import tty
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast, serve

TELEMETRY = re.compile(rb"^T (?P<n>\d+) (?P<speed>-?[\d.]+)$")


async def relay(port: int) -> None:
    rooms: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        room = rooms.setdefault(ws.request.path if ws.request else "/", set())
        room.add(ws)
        try:
            async for frame in ws:
                broadcast([c for c in room if c is not ws], frame)  # imported once: the package
                # attribute `websockets.broadcast` is a lazy import on every access (7% of the relay)
        finally:
            room.discard(ws)

    stop = _stop_event()
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=1 << 16, max_queue=None):
        print("READY", flush=True)
        await stop.wait()


class _Mqtt:
    """paho-mqtt without its thread: the socket is registered with the asyncio loop (as aiomqtt does)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.loop = asyncio.get_running_loop()
        self.connected = asyncio.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-baseline-{os.getpid()}",
                        protocol=mqtt.MQTTv311)

        def closed(_c: object, _u: object, sock: Any) -> None:
            self.loop.remove_reader(sock)

        def want_write(_c: object, _u: object, sock: Any) -> None:
            self.loop.add_writer(sock, c.loop_write)

        def written(_c: object, _u: object, sock: Any) -> None:
            self.loop.remove_writer(sock)

        c.on_connect = lambda *_: self.connected.set()
        c.on_socket_open = lambda _c, _u, sock: self._opened(sock)
        c.on_socket_close = closed
        c.on_socket_register_write = want_write
        c.on_socket_unregister_write = written
        self.client = c
        c.connect("127.0.0.1", port, keepalive=60)
        self._misc = self.loop.create_task(self._tick())

    def _opened(self, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.loop.add_reader(sock, self.client.loop_read)

    async def _tick(self) -> None:
        while True:
            self.client.loop_misc()
            await asyncio.sleep(1)  # paho's keepalive timer, not synchronisation

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1)


async def device(url: str, pty_path: str, mqtt_port: int | None, topic: str) -> None:
    fd = os.open(pty_path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    mq = _Mqtt(mqtt_port) if mqtt_port else None
    if mq is not None:
        await asyncio.wait_for(mq.connected.wait(), 10)
    loop = asyncio.get_running_loop()
    stop = _stop_event()
    async with connect(url, compression=None, max_size=1 << 16, max_queue=None) as ws:
        buf = b""
        pending: set[asyncio.Task[None]] = set()

        def readable() -> None:  # telemetry: pty line -> frame
            nonlocal buf
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:  # the pty is gone: stop, rather than spin on a dead descriptor
                loop.remove_reader(fd)
                stop.set()
                return
            data = buf + chunk
            *lines, buf = data.split(b"\n")
            for line in lines:
                m = TELEMETRY.match(line.rstrip(b"\r"))
                if m:
                    fields = {"n": int(m["n"]), "speed": float(m["speed"])}
                    payload = json.dumps(fields)
                    frame = json.dumps({"op": "signal", "type": "robot.telemetry", "data": payload})
                    task = loop.create_task(ws.send(frame))
                    pending.add(task)
                    task.add_done_callback(pending.discard)

        loop.add_reader(fd, readable)
        print("READY", flush=True)
        receiving = asyncio.create_task(_commands(ws, fd, mq, topic))
        await asyncio.wait([receiving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        receiving.cancel()


async def onehop(port: int, pty_path: str) -> None:
    fd = os.open(pty_path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)

    async def handler(ws: ServerConnection) -> None:
        await _commands(ws, fd, None, "")

    stop = _stop_event()
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=1 << 16, max_queue=None):
        print("READY", flush=True)
        await stop.wait()


async def _commands(ws: Any, fd: int, mq: _Mqtt | None, topic: str) -> None:
    async for frame in ws:
        msg = json.loads(frame)
        kind = msg.get("type")
        data = json.loads(msg.get("data") or "{}")
        if kind == "robot.move":
            line = f"M {float(data['x']):.2f} {float(data['y']):.2f} {int(data['n'])}\n".encode()
            view = memoryview(line)
            while view:  # the fd is blocking: a full pty buffer is back-pressure, as on a real UART
                view = view[os.write(fd, view):]
        elif kind == "arm.grip" and mq is not None:
            mq.publish(topic, json.dumps({"force": int(data["force"]), "n": int(data["n"])}))


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.baseline")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--port", type=int, required=True)
    d = sub.add_parser("device")
    d.add_argument("--url", required=True)
    d.add_argument("--pty", required=True)
    d.add_argument("--mqtt-port", type=int)
    d.add_argument("--topic", default="arm/grip/set")
    o = sub.add_parser("onehop")
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--pty", required=True)
    a = p.parse_args()
    if a.cmd == "relay":
        asyncio.run(relay(a.port))
    elif a.cmd == "onehop":
        asyncio.run(onehop(a.port, a.pty))
    else:
        asyncio.run(device(a.url, a.pty, a.mqtt_port, a.topic))


if __name__ == "__main__":
    main()
