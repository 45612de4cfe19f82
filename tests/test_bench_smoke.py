"""The benchmark harness still runs: ``python -m bench all --quick`` end to end (real hub, bridge,
baseline relay and client, mosquitto, ptys), and prints a figure for every measurement.

Only completion and the presence of figures are checked, never a timing: benchmarks are not tests."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import scaled

ROOT = Path(__file__).resolve().parent.parent

# section -> metrics that must each carry a number for signal-bridge (not "n/a")
EXPECTED = {
    "command latency": ["p50", "p99"],
    "telemetry latency": ["p50"],
    "mqtt latency": ["p50"],
    "mqtt throughput": ["signals/s"],
    "throughput": ["signals/s", "lost/dup/reordered"],
    "footprint": ["bridge CPU per 10k signals", "hub CPU per 10k signals", "bridge peak RSS", "hub peak RSS"],
    "start-up": ["to connection in session", "to first command written"],
    "hub scale": ["1 in one session: fan-out p50", "10 in one session: fan-out last", "hub peak RSS"],
    "hub memory": ["100 idle connections: per connection", "300 idle connections: RSS"],
    "one-hop latency": ["p50", "p99"],
}
# section -> metrics whose baseline column must carry a number (the one-hop bare server beside the
# embedded session)
EXPECTED_BASELINE = {"one-hop latency": ["p50", "p99"]}


def _value(cell: str) -> float:
    m = re.match(r"([\d,.]+|n/a)", cell.strip())
    assert m, f"no figure in {cell!r}"
    return math.nan if m.group(1) == "n/a" else float(m.group(1).replace(",", ""))


def test_every_benchmark_runs_and_prints_figures(tmp_path: Path) -> None:
    table = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "all", "--quick", "--markdown", str(table)],
                          cwd=ROOT, capture_output=True, text=True, timeout=scaled(90),
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== results" in proc.stdout
    rows: dict[tuple[str, str], list[str]] = {}
    for line in table.read_text().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = cells
    assert ("setup", "bridge side") not in rows, rows.get(("setup", "bridge side"))
    for section, metrics in EXPECTED.items():
        for metric in metrics:
            cells = rows.get((section, metric))
            assert cells is not None, f"missing row {section} / {metric}:\n{proc.stdout[-3000:]}"
            assert not math.isnan(_value(cells[2])), f"{section} / {metric} has no figure: {cells}"
    for section, metrics in EXPECTED_BASELINE.items():
        for metric in metrics:
            cells = rows.get((section, metric))
            assert cells is not None, f"missing row {section} / {metric}:\n{proc.stdout[-3000:]}"
            assert not math.isnan(_value(cells[3])), f"{section} / {metric} has no baseline: {cells}"
