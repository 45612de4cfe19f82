"""Video sources for the camera daemon, and the fan-out that feeds one source to every viewer.

- :class:`SyntheticTrack`: a moving test pattern (scrolling colour bars), a visible clock and frame
  counter, and the machine-readable frame code of `bridge.core.camera.framecode` (frame number and capture
  time on the hub's clock). Drawn in YUV 4:2:0 with row copies, so no image library is needed.
- :func:`open_source`: the configured source as an aiortc track (V4L2 through aiortc's MediaPlayer).
- :class:`Fanout`: reads the source only while somebody watches, and hands each viewer the latest
  frame (never a queue: a slow encoder skips frames instead of holding them).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from bridge.config.camera import CameraSource
from bridge.core.camera import framecode

log = logging.getLogger(__name__)
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
#: Colour bars (Y, U, V): white, yellow, cyan, green, magenta, red, blue, black.
_BARS = ((235, 128, 128), (210, 16, 146), (170, 166, 16), (145, 54, 34),
         (106, 202, 222), (81, 90, 240), (41, 240, 110), (16, 128, 128))


class SyntheticTrack(MediaStreamTrack):
    """``fps`` frames a second of ``width`` x ``height``, paced on the monotonic clock (pts in
    1/90000 s from the frame number: aiortc's own ``next_timestamp`` assumes 30 fps). ``hub_time_ms``
    gives the capture time written into each frame's code."""

    kind = "video"

    def __init__(self, width: int, height: int, fps: int, hub_time_ms: Callable[[], float]) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._hub_time_ms = hub_time_ms
        self._start: float | None = None
        self.frames = 0
        self._c = framecode.cell(width)
        self._scale = max(1, (self._c * framecode.COLUMNS) // (4 * 12))    # 12 characters a line
        self._panel_w = min(width, self._c * (framecode.COLUMNS + 2))
        self._panel_h = min(height, self._c * (framecode.ROWS + 2) + 12 * self._scale + self._c)
        self._bars_y, self._bars_u, self._bars_v = (self._bar_row(width, i) for i in range(3))

    @staticmethod
    def _bar_row(width: int, channel: int) -> bytes:
        n = width if channel == 0 else width // 2
        row = bytes(_BARS[min(7, x * 8 // n)][channel] for x in range(n))
        return row + row                       # doubled: any rotation is one slice

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self.frames / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 1.0:                  # the loop was stalled: start a new pace, no burst
            self._start = now - self.frames / self.fps
        frame = self.draw(self.frames, int(self._hub_time_ms()))
        frame.pts = self.frames * 90000 // self.fps
        frame.time_base = VIDEO_TIME_BASE
        self.frames += 1
        return frame

    def draw(self, counter: int, ts_ms: int) -> VideoFrame:
        w, h, c = self.width, self.height, self._c
        frame = VideoFrame(w, h, "yuv420p")
        ys, us, vs = (p.line_size for p in frame.planes)
        shift = (counter * 4) % w
        y = bytearray(_pad(self._bars_y[shift:shift + w], ys) * h)
        u = bytearray(_pad(self._bars_u[shift // 2:shift // 2 + w // 2], us) * (h // 2))
        v = bytearray(_pad(self._bars_v[shift // 2:shift // 2 + w // 2], vs) * (h // 2))
        pw, ph = self._panel_w, self._panel_h
        grey = bytes([framecode.GREY]) * pw
        for row in range(ph):
            y[row * ys:row * ys + pw] = grey
        neutral = bytes([128]) * (pw // 2)
        for row in range(ph // 2):
            u[row * us:row * us + pw // 2] = neutral
            v[row * vs:row * vs + pw // 2] = neutral
        bits = framecode.encode(counter, ts_ms)
        white, black = bytes([framecode.WHITE]) * c, bytes([framecode.BLACK]) * c
        for r in range(framecode.ROWS):
            line = b"".join(white if b else black
                            for b in bits[r * framecode.COLUMNS:(r + 1) * framecode.COLUMNS])
            for dy in range(c):
                at = (c * (1 + r) + dy) * ys + c
                y[at:at + len(line)] = line
        clock = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        top = c * (framecode.ROWS + 2)
        self._text(y, ys, c, top, clock)
        self._text(y, ys, c, top + 6 * self._scale, f"{counter:>12d}"[-12:])
        frame.planes[0].update(bytes(y))
        frame.planes[1].update(bytes(u))
        frame.planes[2].update(bytes(v))
        return frame

    def _text(self, y: bytearray, stride: int, x0: int, y0: int, text: str) -> None:
        s = self._scale
        on, off = bytes([framecode.WHITE]) * s, bytes([framecode.GREY]) * s
        for fr in range(5):
            line = b"".join(b"".join(on if px == "#" else off for px in framecode.FONT.get(ch, "   ")[fr])
                            + off for ch in text)
            line = line[:max(0, self._panel_w - x0)]
            for dy in range(s):
                row = y0 + fr * s + dy
                if row < self.height:
                    y[row * stride + x0:row * stride + x0 + len(line)] = line


def _pad(row: bytes, stride: int) -> bytes:
    return row + bytes(stride - len(row)) if stride > len(row) else row


def open_source(cfg: CameraSource, hub_time_ms: Callable[[], float]) -> tuple[MediaStreamTrack, Any]:
    """(track, owner) for the configured source; ``owner`` is what must be kept alive (the player).
    Raises OSError-like errors (av's) when the device cannot be opened."""
    if cfg.source == "synthetic":
        return SyntheticTrack(cfg.width, cfg.height, cfg.fps, hub_time_ms), None
    from aiortc.contrib.media import MediaPlayer

    player = MediaPlayer(cfg.device, format="v4l2",
                         options={"video_size": f"{cfg.width}x{cfg.height}", "framerate": str(cfg.fps)})
    if player.video is None:
        raise OSError(f"{cfg.device} has no video stream")
    return player.video, player


class Fanout:
    """One source, many viewers. ``subscribe()`` opens the source for the first viewer; when the last
    one stops, the source is stopped (a V4L2 device is released). ``on_end(reason)`` is called when
    the source itself ends (a camera unplugged), after every viewer track has been ended."""

    def __init__(self, opener: Callable[[], tuple[MediaStreamTrack, Any]],
                 on_end: Callable[[str], None]) -> None:
        self._opener = opener
        self._on_end = on_end
        self._source: MediaStreamTrack | None = None
        self._owner: Any = None
        self._pump: asyncio.Task[None] | None = None
        self._viewers: set[ViewerTrack] = set()
        self.frames = 0

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def subscribe(self) -> ViewerTrack:
        if self._source is None:
            self._source, self._owner = self._opener()
            self._pump = asyncio.get_running_loop().create_task(self._run(self._source), name="camera-source")
        track = ViewerTrack(self)
        self._viewers.add(track)
        return track

    def _leave(self, track: ViewerTrack) -> None:
        self._viewers.discard(track)
        if not self._viewers:
            self._close_source()

    def _close_source(self) -> None:
        source, self._source, self._owner = self._source, None, None
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if source is not None:
            source.stop()
            log.info("camera: source stopped (no viewer)")

    async def _run(self, source: MediaStreamTrack) -> None:
        reason = "the camera source ended"
        try:
            while True:
                frame = await source.recv()
                if not isinstance(frame, VideoFrame):
                    continue                   # a packet: only a pre-encoded source would give one
                self.frames += 1
                for viewer in self._viewers:
                    viewer.put(frame)
        except MediaStreamError:
            pass
        except Exception as exc:  # a driver or decoder error must end the streams, not the daemon
            reason = f"the camera source failed: {type(exc).__name__}: {exc}"
        log.warning("%s", reason)
        for viewer in list(self._viewers):
            viewer.put(None)
        self._viewers.clear()
        self._pump = None
        self._close_source()
        self._on_end(reason)

    async def close(self) -> None:
        pump = self._pump
        self._viewers.clear()
        self._close_source()
        if pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await pump


class ViewerTrack(MediaStreamTrack):
    """One viewer's track: the latest frame of the fan-out, each at most once."""

    kind = "video"

    def __init__(self, fanout: Fanout) -> None:
        super().__init__()
        self._fanout: Fanout | None = fanout
        self._frame: VideoFrame | None = None
        self._new = asyncio.Event()
        self._ended = False

    def put(self, frame: VideoFrame | None) -> None:
        if frame is None:
            self._ended = True
        else:
            self._frame = frame
        self._new.set()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._new.wait()
        self._new.clear()
        if self._ended or self._frame is None:
            self.stop()
            raise MediaStreamError
        return self._frame

    def stop(self) -> None:
        super().stop()
        fanout, self._fanout = self._fanout, None
        if fanout is not None:
            fanout._leave(self)
