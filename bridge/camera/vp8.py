"""aiortc's VP8 encoder without libvpx's temporal denoiser.

aiortc 1.16 opens libvpx with ``noise-sensitivity 4`` together with ``static-thresh 1``. With both,
libvpx skips macroblocks that did change: the viewer is shown blocks of the previous frame, crisp
and stale. Measured on the synthetic source (320x240, 800 kbps, encode then decode with libvpx):
6-21 % of frames carried at least one stale cell of the frame code (bridge/core/camera/framecode.py), so a
viewer read a wrong code; with the denoiser off none did, and encoding took ~25 % less CPU
(tests/test_camera_codec.py). A real camera's picture loses the same detail, so every source gets it.

:func:`install` makes aiortc's senders use :class:`Vp8Encoder` for VP8 (aiortc has no API for
encoder options; aiortc is pinned with == in pyproject.toml for this reason).
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import av
from aiortc import rtcrtpsender
from aiortc.codecs import get_encoder as _aiortc_get_encoder
from aiortc.codecs import vpx

#: aiortc 1.16's libvpx options (aiortc/codecs/vpx.py), the denoiser off.
_OPTIONS = {"cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0", "noise-sensitivity": "0",
            "overshoot-pct": "15", "partitions": "0", "static-thresh": "1", "undershoot-pct": "100"}


class Vp8Encoder(vpx.Vp8Encoder):
    """Opens the libvpx context itself (aiortc's settings, the denoiser off) whenever aiortc would
    open a new one: first frame, new size, target bitrate off by more than 10 %. aiortc then keeps it."""

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        codec, rate = self.codec, self.target_bitrate
        if (codec is None or (frame.width, frame.height) != (codec.width, codec.height)
                or not codec.bit_rate or abs(rate - codec.bit_rate) / codec.bit_rate > 0.1):
            codec = av.CodecContext.create("libvpx", "w")
            codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "yuv420p"
            codec.bit_rate = rate
            codec.gop_size, codec.qmin, codec.qmax = 3000, 2, 56
            # bufsize, minrate = maxrate = bit rate: CBR with a one-second buffer, as aiortc sets it.
            codec.options = {**_OPTIONS, "bufsize": str(rate), "minrate": str(rate), "maxrate": str(rate)}
            codec.thread_count = vpx.number_of_threads(frame.width * frame.height,
                                                       multiprocessing.cpu_count())
            self.codec = codec
        return super().encode(frame, force_keyframe)


def _get_encoder(codec: Any) -> Any:
    if codec.mimeType.lower() == "video/vp8":
        return Vp8Encoder()
    return _aiortc_get_encoder(codec)


def install() -> None:
    """Every aiortc sender created from now on encodes VP8 with :class:`Vp8Encoder` (idempotent)."""
    setattr(rtcrtpsender, "get_encoder", _get_encoder)  # noqa: B010
