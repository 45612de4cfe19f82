"""camera.yaml: every problem reported as file:line: key.path: message (the bridge config's machinery),
the example config loads, `sigbridge camera` refuses a bad file or token with its exit status before
streaming anything, and the synthetic source draws a frame code that reads back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.config.camera import load_camera_config
from bridge.config.tree import ConfigError
from tests.helpers.hub import running_hub

ROOT = Path(__file__).resolve().parent.parent
GOOD = """\
session: {url: "ws://127.0.0.1:8765", session_id: lab-1, token: abc}
camera:
  source: synthetic
  width: 320
  height: 240
"""


def errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "camera.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as exc:
        load_camera_config(path, {})
    return [str(e).replace(str(path), "camera.yaml") for e in exc.value.errors]


def test_defaults_and_the_example(tmp_path: Path) -> None:
    path = tmp_path / "camera.yaml"
    path.write_text(GOOD)
    cfg = load_camera_config(path, {})
    cam = cfg.camera
    assert (cam.width, cam.fps, cam.codec, cam.bitrate_kbps) == (320, 30, "vp8", 1000)
    assert cfg.viewers.roles == {"moderator", "publisher"} and cfg.viewers.max_viewers == 2
    assert cfg.ice_servers == ()
    (tmp_path / "camera.token").write_text("tok\n")
    example = (ROOT / "config" / "camera.example.yaml").read_text().replace(
        "/etc/sigbridge/camera.token", str(tmp_path / "camera.token"))
    path.write_text(example)
    cfg = load_camera_config(path, {"TURN_PASSWORD": "x"})
    assert (cfg.camera.source, cfg.camera.device) == ("v4l2", "/dev/video0")
    assert cfg.viewers.stall_timeout_ms == 5000


def test_every_error_with_its_line(tmp_path: Path) -> None:
    assert errors(tmp_path, """\
        session: {url: "http://hub", session_id: lab-1, token: abc}
        camera:
          source: webcam
          width: 321
          height: 60
          fps: 90
          bitrate_kbps: 50
          codec: av1
          colour: red
        viewers:
          roles: [moderator, subscriber, admin]
          max: 0
          stall_timeout_ms: 10
        ice:
          servers:
            - urls: http://stun.example
            - urls: [turn:turn.example:3478]
        """) == [
        "camera.yaml:1: session.url: expected a ws:// or wss:// URL with a host, got 'http://hub'",
        "camera.yaml:3: camera.source: expected one of synthetic, v4l2, got 'webcam'",
        "camera.yaml:4: camera.width: must be even (the encoders sample colour in 2x2 blocks), got 321",
        "camera.yaml:5: camera.height: must be at least 120, got 60",
        "camera.yaml:6: camera.fps: must be at most 60, got 90",
        "camera.yaml:7: camera.bitrate_kbps: must be at least 100, got 50",
        "camera.yaml:8: camera.codec: expected one of vp8, h264, got 'av1'",
        "camera.yaml:9: camera.colour: unknown key; expected one of: name, source, device, width, "
        "height, fps, bitrate_kbps, codec",
        "camera.yaml:11: viewers.roles[1]: a subscriber connection cannot send signals, so it could "
        "never ask for the picture; allowed: moderator, publisher",
        "camera.yaml:11: viewers.roles[2]: unknown role 'admin'; expected one of moderator, publisher, "
        "publisheronly, subscriber",
        "camera.yaml:12: viewers.max: must be at least 1, got 0",
        "camera.yaml:13: viewers.stall_timeout_ms: must be at least 2000, got 10",
        "camera.yaml:16: ice.servers[0].urls: expected a stun:, stuns:, turn: or turns: URL, got "
        "'http://stun.example'",
        "camera.yaml:17: ice.servers[1]: a TURN server needs username and credential (from your TURN "
        "server's configuration, e.g. coturn's user=...)",
    ]


def test_missing_sections_env_and_a_device_for_the_synthetic_source(tmp_path: Path) -> None:
    assert errors(tmp_path, "camera: {source: synthetic}\n") == [
        "camera.yaml:1: missing required key 'session'"]
    assert errors(tmp_path, GOOD + "  device: /dev/video0\n") == [
        "camera.yaml:6: camera.device: device is only used with source: v4l2"]
    assert errors(tmp_path, GOOD + "ice: {servers: [{urls: 'turn:t', username: u, credential: '${PW}'}]}\n") \
        == ["camera.yaml:6: ice.servers[0].credential: environment variable 'PW' is not set (set it, or "
            "give a default: ${PW:-...})"]


def run_camera(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "camera", "-c", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=dict(os.environ))


def test_sigbridge_camera_exits_2_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "camera.yaml"
    path.write_text(GOOD.replace("320", "99"))
    out = run_camera(path)
    assert out.returncode == 2
    assert f"{path}:4: camera.width: must be at least 160, got 99" in out.stderr
    assert out.stderr.strip().endswith("1 error; not starting") and "READY" not in out.stderr


async def test_sigbridge_camera_exits_78_when_the_hub_refuses_its_token(tmp_path: Path) -> None:
    async with running_hub() as hub:
        path = tmp_path / "camera.yaml"
        path.write_text(GOOD.replace("ws://127.0.0.1:8765", hub.url).replace("token: abc",
                                                                              "token: not-a-jwt"))
        out = await asyncio.to_thread(run_camera, path)
    assert out.returncode == 78, out.stderr
    assert "the hub refused the camera's token (401" in out.stderr and "READY" not in out.stderr


def test_the_synthetic_frame_carries_its_code() -> None:
    from bridge.camera.source import SyntheticTrack
    from bridge.core.camera import framecode

    for width, height in ((160, 120), (320, 240), (640, 480)):
        track = SyntheticTrack(width, height, 30, lambda: 0.0)
        frame = track.draw(4242, 1_764_760_000_123)
        luma = bytes(frame.planes[0])
        stride = frame.planes[0].line_size
        c = framecode.cell(width)
        bits = [1 if luma[(c * (1 + r) + c // 2) * stride + c * (1 + col) + c // 2] > 128 else 0
                for r in range(framecode.ROWS) for col in range(framecode.COLUMNS)]
        assert framecode.decode(bits) == (4242, 1_764_760_000_123 % 2**32), (width, height)
        assert frame.width == width and frame.height == height
