"""The frame code survives the camera's VP8 encoder: synthetic frames encoded by the encoder the
camera's senders use (bridge/camera/vp8.py), decoded by libvpx, read back by sampling each cell's
centre as bridge/console/video.js does. aiortc's own encoder (its denoiser on) leaves stale
macroblocks: a few percent of frames, or more, then read as a bad code; the test shows both."""

from __future__ import annotations

import fractions

import pytest

pytest.importorskip("aiortc", reason="the camera extra (aiortc) is not installed")

import av
from aiortc.codecs import vpx

from bridge.camera.source import SyntheticTrack
from bridge.camera.vp8 import Vp8Encoder
from bridge.core.camera import framecode

FRAMES = 300
RATE = 800_000          # the test camera's bitrate_kbps (tests/helpers/camera.py)


def bad_codes(encoder: vpx.Vp8Encoder) -> int:
    """Frames whose code does not decode after the encoder and libvpx's decoder."""
    encoder.target_bitrate = RATE
    track = SyntheticTrack(320, 240, 15, lambda: 0.0)
    decoder = av.CodecContext.create("libvpx", "r")
    c = framecode.cell(320)
    bad = 0
    for n in range(FRAMES):
        frame = track.draw(n, 1_700_000_000_000 + n * 67)
        frame.pts, frame.time_base = n * 6000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame)
        # RTP VP8 payloads: each a descriptor, then a piece of the frame.
        data = b"".join(vpx.VpxPayloadDescriptor.parse(p)[1] for p in payloads)
        for out in decoder.decode(av.Packet(data)):
            plane = out.planes[0]
            luma = bytes(plane)
            bits = [1 if luma[(c * (1 + r) + c // 2) * plane.line_size + c * (1 + col) + c // 2] > 128 else 0
                    for r in range(framecode.ROWS) for col in range(framecode.COLUMNS)]
            bad += framecode.decode(bits) is None
    return bad


def test_the_cameras_vp8_encoder_keeps_every_frame_code_readable() -> None:
    assert bad_codes(Vp8Encoder()) == 0


def test_aiortcs_own_encoder_loses_codes_so_the_test_above_can_fail() -> None:
    assert bad_codes(vpx.Vp8Encoder()) > 0
