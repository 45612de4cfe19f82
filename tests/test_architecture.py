"""The layering of docs/architecture.md, kept true: each package imports only what the table allows.

Read statically (every ``import``/``from`` in every module, including function-local ones), so a
forbidden import cannot hide behind a lazy import. The table is the one in docs/architecture.md
("What each part may not import"); change both together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "bridge"

# package prefix -> prefixes its modules must not import (first matching prefix wins: most specific first)
FORBIDDEN: list[tuple[str, tuple[str, ...]]] = [
    ("bridge.core.client", ("bridge.core.hub", "bridge.core.engine", "bridge.core.camera")),
    ("bridge.core.hub", ("bridge.core.client", "bridge.core.engine", "bridge.core.camera")),
    ("bridge.core.engine", ("bridge.core.client", "bridge.core.hub")),
    ("bridge.core.camera", ("bridge.core.client", "bridge.core.hub", "bridge.core.engine")),
    ("bridge.core", ("bridge.client", "bridge.hub", "bridge.daemon", "bridge.devices", "bridge.adapters",
                     "bridge.config", "bridge.tools", "bridge.camera", "bridge.cluster", "bridge.session",
                     "bridge.cli", "asyncio", "socket", "selectors", "websockets", "aiohttp", "serial",
                     "serial_asyncio_fast", "paho", "aiomqtt", "aiortc", "av", "redis",
                     "prometheus_client", "subprocess", "threading")),
    ("bridge.client", ("bridge.hub", "bridge.daemon", "bridge.devices", "bridge.config", "bridge.tools",
                       "bridge.cluster", "bridge.camera", "bridge.cli", "aiohttp")),
    ("bridge.hub", ("bridge.client", "bridge.daemon", "bridge.devices", "bridge.tools", "bridge.camera",
                    "bridge.cli")),
    ("bridge.cluster", ("bridge.client", "bridge.daemon", "bridge.devices", "bridge.tools", "bridge.camera",
                        "bridge.cli")),
    ("bridge.devices", ("bridge.client", "bridge.hub", "bridge.daemon", "bridge.tools", "bridge.cluster",
                        "bridge.camera", "bridge.cli")),
    ("bridge.config", ("bridge.client", "bridge.hub", "bridge.daemon", "bridge.tools", "bridge.cluster",
                       "bridge.camera", "bridge.cli")),
    ("bridge.adapters", ("bridge.client", "bridge.hub", "bridge.daemon", "bridge.devices", "bridge.tools",
                         "bridge.cluster", "bridge.camera", "bridge.cli")),
    ("bridge.daemon", ("bridge.tools", "bridge.cli", "bridge.camera")),
    ("bridge.camera", ("bridge.daemon", "bridge.hub", "bridge.devices", "bridge.tools", "bridge.cli")),
    ("bridge.tools", ("bridge.cli",)),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations() -> list[str]:
    bad: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        rule = next((f for p, f in FORBIDDEN if _matches(module, p)), None)
        if rule is None:
            continue
        for name in sorted(_imports(path, module)):
            hit = next((f for f in rule if _matches(name, f)), None)
            if hit is not None:
                bad.append(f"{module} imports {name} (may not import {hit})")
    return bad


def test_every_package_imports_only_what_the_architecture_allows() -> None:
    assert _violations() == []


def test_the_rules_see_a_forbidden_import(tmp_path: Path) -> None:
    """The scanner itself: a core module importing asyncio lazily, inside a function, is caught."""
    module = "bridge.core.engine.x"
    path = tmp_path / "x.py"
    path.write_text("def f():\n    import asyncio\n    from ...hub import server\n")
    names = _imports(path, module)
    assert "asyncio" in names and "bridge.hub.server" in names
