"""Tests never import other test modules as libraries: what several modules share lives in
tests/helpers/ (or tests/conftest.py for fixtures). Importing a test module runs its module-level
set-up again, registers its tests twice under xdist, and ties one test's edits to another's."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_test_modules(source: str, package: str = "tests") -> list[str]:
    """The test modules (``tests.test_*``) that ``source`` imports, however spelt."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith(f"{package}.test_")]
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            if base.lstrip(".").startswith("test_") or base.startswith(f"{package}.test_"):
                found.append(base)
            elif base in (package, "."):
                found += [f"{base}.{a.name}" for a in node.names if a.name.startswith("test_")]
    return found



def test_no_test_module_imports_another() -> None:
    offenders = {str(p.relative_to(TESTS)): found for p in sorted(TESTS.rglob("*.py"))
                 if (found := imported_test_modules(p.read_text()))}
    assert offenders == {}, f"move the shared pieces into tests/helpers/: {offenders}"


def test_the_check_sees_every_spelling() -> None:
    for source in ("from tests.test_engine import send", "import tests.test_engine",
                   "from tests import test_engine", "from .test_engine import send",
                   "from . import test_engine", "def f():\n    from tests.test_cli_ops import rig\n"):
        assert imported_test_modules(source), source
    assert imported_test_modules("from tests.helpers.engine import send\nimport tests.conftest") == []
