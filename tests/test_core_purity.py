"""bridge.core must stay free of I/O: importing it must not pull in any network or device library."""

import subprocess
import sys

FORBIDDEN = ["asyncio", "websockets", "aiohttp", "serial", "paho", "aiomqtt", "aiortc", "av", "redis",
             "prometheus_client"]


def test_core_imports_no_io_library() -> None:
    code = (
        "import pkgutil, importlib, sys, bridge.core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'bridge.core.'): importlib.import_module(m.name)\n"
        f"bad = [n for n in {FORBIDDEN!r} if n in sys.modules]\n"
        "print(','.join(bad))\n"
        "print(len([m for m in sys.modules if m.startswith('bridge.core.')]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    bad, imported = out.stdout.split("\n")[:2]
    assert bad == "", f"bridge.core imports I/O modules: {bad}"
    # Every module of every sub-package was imported (engine/, client/, hub/, wire/, camera/ ...).
    assert int(imported) >= 40
