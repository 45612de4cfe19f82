"""SerialLink with ``framing: binary`` on a real pty: every byte passes both ways exactly as it is (NUL,
CR, LF and 0xFF included: no line framing, no decoding), a frame is refused and counted while the port
is down, and the audit record of a frame is its hex bytes. Frames queued for a device that stopped
reading are dropped whole (deadline, purge), never split."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bridge.core.engine.decisions import FrameWrite
from bridge.core.model import SerialDeviceConfig
from bridge.devices.serial_link import SerialLink
from tests.conftest import scaled
from tests.helpers.pty import PtyPair

RAW = bytes(range(256)) + b"\r\n\n\x00\xff"


async def test_binary_link_passes_bytes_unchanged_both_ways(tmp_path: Path) -> None:
    got = bytearray()
    arrived = asyncio.Event()
    up = asyncio.Event()

    def on_bytes(data: bytes) -> None:
        got.extend(data)
        arrived.set()

    def on_line(line: str) -> None:
        raise AssertionError(f"a binary device has no lines: {line!r}")

    with PtyPair(tmp_path / "claw") as pair:
        config = SerialDeviceConfig(port=pair.path, framing="binary", reopen_min_s=0.02, reopen_max_s=0.1)
        link = SerialLink("claw", config, on_line, lambda _n, is_up: up.set() if is_up else None, on_bytes)
        assert not link.write_frame(b"\x80\x00")                   # not open yet: refused, counted
        assert link.stats["writes_while_down"] == 1
        task = asyncio.create_task(link.run())
        try:
            await asyncio.wait_for(up.wait(), scaled(10))
            pair.write(RAW)
            async with asyncio.timeout(scaled(10)):
                while len(got) < len(RAW):
                    arrived.clear()
                    await arrived.wait()
            assert bytes(got) == RAW
            end = b"\xfe\xfd\xfc\xfb"                         # not in RAW: where the test stops reading
            assert link.write_frame(RAW) and link.write_frame(end)
            assert await pair.read_until(end, scaled(10)) == RAW + end
            stats = link.stats
            assert (stats["bytes_in"], stats["frames_out"], stats["lines_in"]) == (len(RAW), 2, 0)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert FrameWrite("claw", b"\x80\x22\x00").to_obj() == {"device": "claw", "frame": "80 22 00"}


async def test_a_purge_or_a_deadline_never_splits_a_binary_frame(tmp_path: Path) -> None:
    """Binary frames have no terminator to look for: the link tells its transport the size of each
    frame it hands on. A device that stopped reading; 3,000 frames in one loop turn (the kernel takes
    part of one); every other one with a deadline 0.3 s ahead. Past it, the device reads: the frames
    the kernel held (the split one completed), then only those without a deadline, whole, in order."""
    up = asyncio.Event()
    expired: list[str] = []
    with PtyPair(tmp_path / "claw") as pair:
        config = SerialDeviceConfig(port=pair.path, framing="binary")
        link = SerialLink("claw", config, lambda _line: None, lambda _n, is_up: up.set() if is_up else None,
                          on_expired=lambda _n, frames: expired.extend(frames))
        task = asyncio.create_task(link.run())
        try:
            await asyncio.wait_for(up.wait(), scaled(10))
            frames = [bytes([0x80, i % 256, i // 256]) + b"\x00" * (i % 5) + b"\x7f" for i in range(3000)]
            deadline = asyncio.get_running_loop().time() + 0.3
            for i, frame in enumerate(frames):
                assert link.write_frame(frame, deadline if i % 2 == 0 else None)
            await asyncio.sleep(0)
            assert getattr(link._transport, "mid_line", None) is True, "the kernel took whole frames only"
            await asyncio.sleep(0.35)
            end = b"\xfe\xfd\xfc\xfb"
            assert link.write_frame(end)
            data = await pair.read_until(end, scaled(10))
            pos, seen = 0, []
            for frame in frames:                        # the kernel's prefix: every frame, whole
                if data.startswith(frame, pos):
                    seen.append(frame)
                    pos += len(frame)
                else:
                    break
            rest = [f for j, f in enumerate(frames) if j >= len(seen) and j % 2 == 1]   # no deadline
            assert data[pos:] == b"".join(rest) + end, "a frame split or an expired one written"
            assert len(expired) == link.stats["expired"] == len(frames[len(seen):]) - len(rest)
            link.purge()                                # nothing waits: a no-op
            assert link.stats["purged_bytes"] == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
