"""Generate the config reference from the schema: the key tables of docs/config.md and the JSON
Schemas of docs/schema/ (bridge, hub and camera config, for editors such as VS Code's YAML extension).

``python -m bridge.config.docs --write`` rewrites them; without ``--write`` it exits 1 naming the
stale files (what the test does). In docs/config.md a table lives between ``<!-- schema: BLOCK -->``
(``BLOCK`` a block path of `bridge.config.keys`, ``top`` the top level, ``BLOCK:KIND`` only a device
kind's keys) and
``<!-- /schema -->``; the prose around the markers is kept as written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.config import camera, hub, keys
from bridge.config.schema import Block, json_schema, markdown_table

ROOT = Path(__file__).resolve().parents[2]
CONFIG_MD = Path("docs/config.md")
_TABLE = re.compile(r"(<!-- schema: ([\w.\[\]]*)(?::(\w+))? -->\n).*?(<!-- /schema -->)", re.DOTALL)


def _document(title: str, top: Block, blocks: Mapping[str, Block],
              defs: Mapping[str, Block] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title,
                           **json_schema(top, blocks)}
    if defs:
        out["$defs"] = {name: json_schema(block, blocks) for name, block in defs.items()}
    return out


def schemas() -> dict[Path, dict[str, Any]]:
    """The JSON Schema of each config file, by its path under the repository."""
    return {
        Path("docs/schema/bridge.schema.json"): _document(
            "signal-bridge bridge.yaml (sigbridge run / check)", keys.TOP, keys.BLOCKS,
            {"action": keys.ACTION}),
        Path("docs/schema/hub.schema.json"): _document("signal-bridge hub.yaml (sigbridge hub -c)", hub.TOP,
                                                       hub.BLOCKS),
        Path("docs/schema/camera.schema.json"): _document("signal-bridge camera.yaml (sigbridge camera)",
                                                          camera.TOP, camera.BLOCKS),
    }


def render_markdown(text: str) -> str:
    """``text`` with every marked table regenerated from the schema."""
    def table(m: re.Match[str]) -> str:
        block = keys.BLOCKS["" if m.group(2) == "top" else m.group(2)]
        return f"{m.group(1)}{markdown_table(block, m.group(3) or '')}\n{m.group(4)}"
    return _TABLE.sub(table, text)


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file's path and the content it should have."""
    out = {path: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for path, doc in schemas().items()}
    out[CONFIG_MD] = render_markdown((root / CONFIG_MD).read_text(encoding="utf-8"))
    return out


def stale(root: Path = ROOT) -> list[Path]:
    """The generated files whose committed content differs from what the schema gives."""
    return [path for path, text in generated(root).items()
            if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.config.docs", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the stale files")
    args = parser.parse_args(argv)
    files = stale()
    if args.write:
        for path, text in generated().items():
            if path in files:
                (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
                (ROOT / path).write_text(text, encoding="utf-8")
                print(f"wrote {path}")
        return 0
    for path in files:
        print(f"{path} is stale: run python -m bridge.config.docs --write", file=sys.stderr)
    return 1 if files else 0


if __name__ == "__main__":
    sys.exit(main())
