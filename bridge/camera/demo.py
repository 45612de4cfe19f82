"""The demo's camera: ``sigbridge demo`` calls :func:`start_demo_camera` once its bridge is ready.

Optional: when aiortc is not installed it starts nothing and says how to enable it. The camera runs
as its own process (``sigbridge camera -c config/demo-camera.yaml``), as on a robot.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo-camera.yaml"


async def start_demo_camera(env: dict[str, str]) -> tuple[asyncio.subprocess.Process | None, str]:
    """(the camera process or None, one line for the demo to print). ``env`` carries SIGBRIDGE_URL,
    SIGBRIDGE_SESSION and SIGBRIDGE_TOKEN (a publisher token of its own)."""
    if importlib.util.find_spec("aiortc") is None:
        return None, ("camera:          off (aiortc not installed: pip install 'signal-bridge[camera]' "
                      "and the demo shows a synthetic camera)")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", "camera", "-c", str(CONFIG),
                                                env=env)
    return proc, "camera:          synthetic 640x480@30 (press Watch in the console's Camera panel)"
