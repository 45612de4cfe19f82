"""bridge.core must stay free of I/O: importing it must not pull in any network or device library."""

import subprocess
import sys

FORBIDDEN = ["asyncio", "websockets", "aiohttp", "serial", "paho", "aiomqtt", "aiortc", "av"]


def test_core_imports_no_io_library() -> None:
    code = (
        "import pkgutil, importlib, sys, bridge.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('bridge.core.' + m.name)\n"
        f"bad = [n for n in {FORBIDDEN!r} if n in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"bridge.core imports I/O modules: {out.stdout.strip()}"
