"""A Python camera viewer (aiortc) for tests: ``python -m tests.helpers.camviewer URL SESSION TOKEN``.

Joins the session, sends camera.watch, answers the camera's offer (in parts, as any client must be
able to), prints ``LIVE <stream>`` on stdout at the first decoded frame and ``FRAMES n`` every 10
frames, until SIGTERM. It trickles no candidates (its answer carries them all), so the camera's
``camera.candidate`` handling is the browser tests' business.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiortc import RTCPeerConnection, RTCSessionDescription

from bridge.core.camera import signals as cs
from bridge.session import SessionClient, Signal


async def main(url: str, session: str, token: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pc = RTCPeerConnection()
    parts: dict[int, str] = {}
    async with SessionClient(url, session, token) as s:
        await s.signal(cs.WATCH, "{}", retry_after_reconnect=False)
        frames = 0

        async def receive(track: object) -> None:
            nonlocal frames
            while True:
                await track.recv()  # type: ignore[attr-defined]
                frames += 1
                if frames == 1:
                    print("LIVE", flush=True)
                if frames % 10 == 0:
                    print(f"FRAMES {frames}", flush=True)

        pc.on("track", lambda t: asyncio.ensure_future(receive(t)))

        async def events() -> None:
            async for ev in s.events():
                if not isinstance(ev, Signal) or ev.type != cs.OFFER:
                    continue
                msg = json.loads(ev.data)
                parts[msg["part"]] = msg["sdp"]
                if len(parts) < msg["parts"]:
                    continue
                await pc.setRemoteDescription(RTCSessionDescription("".join(parts[i] for i in sorted(parts)),
                                                                    "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                sdp = pc.localDescription.sdp
                chunks = [sdp[i:i + cs.PART_CHARS] for i in range(0, len(sdp), cs.PART_CHARS)]
                for i, chunk in enumerate(chunks):
                    await s.signal(cs.ANSWER, json.dumps({"stream": msg["stream"], "sdp": chunk, "part": i,
                                                          "parts": len(chunks)}), to=ev.from_id,
                                   retry_after_reconnect=False)

        task = asyncio.create_task(events())
        await stop.wait()
        task.cancel()
        await pc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
