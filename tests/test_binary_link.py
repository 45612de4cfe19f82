"""SerialLink with ``framing: binary`` on a real pty: every byte passes both ways exactly as it is (NUL,
CR, LF and 0xFF included: no line framing, no decoding), a frame is refused and counted while the port
is down, and the audit record of a frame is its hex bytes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bridge.core.decisions import FrameWrite
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


def test_a_purge_never_splits_a_binary_frame() -> None:
    """Binary frames have no terminator to look for: the sizes of the frames handed on tell how much of
    the unsent bytes is the rest of a frame partly on the wire (kept by a purge) and what is whole."""
    from collections import deque

    from bridge.devices.serial_link import _unsent_rest

    sizes = deque([5, 7, 4])
    assert _unsent_rest(sizes, 0) == 0          # everything left
    assert _unsent_rest(sizes, 4) == 0          # the last frame whole: dropped entirely
    assert _unsent_rest(sizes, 6) == 2          # 2 bytes of the 7-byte frame still to go: kept
    assert _unsent_rest(sizes, 11) == 0         # two whole frames
    assert _unsent_rest(sizes, 15) == 4         # 4 bytes of the first frame still to go
