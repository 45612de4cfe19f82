"""A simulated MQTT gripper: the device behind the demo's ``arm`` (firmware_stubs/README.md).

    python firmware_stubs/gripper_sim.py [--host 127.0.0.1] [--port 1883]

Commands on ``arm/grip/set``: JSON ``{"force": <int 0-100>}``. After each accepted command, and once on
connecting, the state goes to ``arm/state/grip``: JSON ``{"force": <int>, "closed": <bool>}`` (closed when
force > 0). A bad command changes nothing and is answered on ``arm/state/error`` with
``{"error": "<reason>", "payload": "<what came, cut to 200 chars>"}``. Prints ``READY`` each time it has
subscribed (so a test or a script can wait for it), reconnects by itself, exits 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys

import aiomqtt

COMMAND_TOPIC = "arm/grip/set"
STATE_TOPIC = "arm/state/grip"
ERROR_TOPIC = "arm/state/error"


def apply_command(payload: bytes) -> tuple[int | None, str | None]:
    """(new force, None) for a valid command, else (None, reason)."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None, "not JSON"
    if not isinstance(doc, dict) or set(doc) != {"force"}:
        return None, 'expected {"force": <int 0-100>}'
    force = doc["force"]
    if isinstance(force, bool) or not isinstance(force, int):
        return None, "force must be an integer"
    if not 0 <= force <= 100:
        return None, "force out of range 0-100"
    return force, None


class Gripper:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.force = 0

    def state(self) -> bytes:
        return json.dumps({"force": self.force, "closed": self.force > 0}).encode()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                        self.host, self.port,
                        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as client:
                    await client.subscribe(COMMAND_TOPIC, qos=1)
                    await client.publish(STATE_TOPIC, self.state(), qos=1)
                    print("READY", flush=True)
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        force, error = apply_command(payload)
                        if force is None:
                            err = {"error": error, "payload": payload[:200].decode(errors="replace")}
                            await client.publish(ERROR_TOPIC, json.dumps(err).encode(), qos=1)
                            continue
                        self.force = force
                        await client.publish(STATE_TOPIC, self.state(), qos=1)
            except aiomqtt.MqttError as exc:
                print(f"gripper: broker lost ({exc}); reconnecting", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)


async def _main(args: argparse.Namespace) -> int:
    task = asyncio.create_task(Gripper(args.host, args.port).run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    # The clean MQTT disconnect normally takes milliseconds; never let it hold the exit up for long.
    await asyncio.wait({task}, timeout=3)
    exc = task.exception() if task.done() and not task.cancelled() else None
    if exc is not None:
        raise exc
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Simulated MQTT gripper.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
