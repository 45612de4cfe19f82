"""Hub relay rate: signals/s one ``sigbridge hub`` process relays from one sender to one receiver.

    python -m bench.hub_relay [--seconds 5] [--window 100] [--size 32]

The hub runs as a real child process (bench/rig.py ``start_hub``, rate limit off); the sender (in this
process) and the receiver (a child process) are bare wire-protocol-v1 clients (``websockets``). The
sender keeps ``window`` signals sent and not yet acked (``retry: true``, targeted at the receiver), so
the figure is what the hub sustains with its acks as flow control, not how fast a queue fills. The
receiver only counts the frames and checks the last ``seq``. Reported: signals/s relayed over the
measured span after a one-second warm-up (acks/s: the hub acks a signal once its frame is in the
receiver's outbox), the hub's CPU over that span (near 100 % of one core: the hub is the limit), the
rate from first send to last arrival, and loss (must be 0; exit 1 otherwise).

Not part of ``python -m bench all``: the end-to-end figures are there; this one isolates the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from bench.common import PYTHON, Child, cpu_seconds
from bench.rig import start_hub, token_for

SESSION = "relay-bench"


async def _join(port: int) -> tuple[ClientConnection, str]:
    ws = await connect(f"ws://127.0.0.1:{port}/v1/session/{SESSION}", compression=None, max_size=None,
                       max_queue=None)
    await ws.send(json.dumps({"op": "connect", "token": token_for(SESSION)}))
    hello = json.loads(await ws.recv())
    if hello.get("op") != "connected":
        raise RuntimeError(f"hub refused the bench client: {hello}")
    return ws, hello["connection"]["id"]


async def receiver(port: int) -> int:
    """The receiving client (a child process, so that it does not share a core with the sender):
    prints ``ready ID``, counts signal frames, and prints ``done COUNT LAST_SEQ`` at the end marker."""
    ws, me = await _join(port)
    print(f"ready {me}", flush=True)
    count = last_seq = 0
    async for frame in ws:
        if isinstance(frame, str) and frame.startswith('{"op":"signal"'):
            if '"bench.end"' in frame:
                break
            count += 1
            last_seq = int(frame[21:frame.index(",", 21)])
    print(f"done {count} {last_seq}", flush=True)
    await ws.close()
    return 0


async def measure(port: int, hub_pid: int, seconds: float, window: int, size: int) -> dict[str, float]:
    recv = await Child("receiver", [PYTHON, "-m", "bench.hub_relay", "--receive", str(port)]).start()
    try:
        receiver_id = (await recv.wait_line("ready ", 20)).split()[1]
        sender, _ = await _join(port)
        data = json.dumps("x" * size)[1:-1]
        prefix = '{"op":"signal","id":'
        suffix = f',"type":"bench.relay","data":"{data}","to":"{receiver_id}","retry":true}}'
        acked = 0
        credit = asyncio.Semaphore(window)
        stop_at = time.perf_counter() + 1.0 + seconds
        marks: dict[str, tuple[float, int, float]] = {}

        async def acks() -> None:
            nonlocal acked
            async for frame in sender:
                if isinstance(frame, str) and frame.startswith('{"op":"ack"'):
                    acked += 1  # the hub acks once the frame is in the receiver's outbox
                    credit.release()
                elif isinstance(frame, str) and frame.startswith('{"op":"nack"'):
                    raise RuntimeError(f"hub refused a bench signal: {frame}")

        async def send() -> int:
            n = 0
            while time.perf_counter() < stop_at:
                await credit.acquire()
                n += 1
                await sender.send(prefix + str(n) + suffix)
            return n

        async def sample() -> None:
            await asyncio.sleep(1.0)  # warm-up: connections, caches, TCP windows
            marks["start"] = (time.perf_counter(), acked, cpu_seconds(hub_pid))
            await asyncio.sleep(seconds)
            marks["end"] = (time.perf_counter(), acked, cpu_seconds(hub_pid))

        reader = asyncio.create_task(acks())
        try:
            t_first = time.perf_counter()
            sent, _ = await asyncio.gather(send(), sample())
            await sender.send(prefix + str(sent + 1) + f',"type":"bench.end","to":"{receiver_id}"}}')
            _, count, last_seq = (await recv.wait_line("done ", 30)).split()
            t_done = time.perf_counter()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await sender.close()
    finally:
        await recv.stop()
    (t0, n0, c0), (t1, n1, c1) = marks["start"], marks["end"]
    return {"signals_per_s": (n1 - n0) / (t1 - t0), "hub_cpu_percent": 100 * (c1 - c0) / (t1 - t0),
            "overall_per_s": sent / (t_done - t_first), "sent": sent, "arrived": int(count),
            "lost": sent - int(count), "last_seq": int(last_seq)}


async def _main(args: argparse.Namespace) -> int:
    if args.receive:
        return await receiver(args.receive)
    with tempfile.TemporaryDirectory(prefix="sigbridge-relay-") as tmp:
        hub, port = await start_hub(Path(tmp))
        try:
            res = await measure(port, hub.pid, args.seconds, args.window, args.size)
        finally:
            await hub.stop()
    print(f"hub relay, 1 sender -> 1 receiver, window {args.window}, data {args.size} B: "
          f"{res['signals_per_s']:,.0f} signals/s sustained (hub CPU {res['hub_cpu_percent']:.0f} % of one "
          f"core); {res['overall_per_s']:,.0f}/s first sent to last received; sent {res['sent']:,.0f}, "
          f"arrived {res['arrived']:,.0f}, lost {res['lost']:,.0f}")
    return 0 if res["lost"] == 0 and res["last_seq"] == res["arrived"] else 1


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hub_relay", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measured span (after 1 s of warm-up)")
    p.add_argument("--window", type=int, default=100, help="signals sent and not yet acked")
    p.add_argument("--size", type=int, default=32, help="bytes of data per signal")
    p.add_argument("--receive", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the child's role
    return asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
