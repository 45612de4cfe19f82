"""``python -m bench.hil --quick`` still runs end to end (the emulated Uno, rover_sim and the RoboClaw
simulator behind one real bridge) and prints a figure for each measurement. Only completion and the
presence of figures are checked, never a timing: a benchmark is not a test."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import scaled
from tests.helpers.cli import ROOT
from tests.helpers.uno import uno_build

__all__ = ["uno_build"]


def test_hil_benchmark_runs_and_prints_figures(uno_build: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.hil", "--quick"], capture_output=True, text=True,
                          cwd=ROOT, timeout=scaled(120))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for name in ("emulated Uno (PWM pin 5)", "rover_sim.py (line completed)"):
        row = re.search(re.escape(name) + r"\s+30\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out)
        assert row is not None, out
    flood = re.search(r"([\d,]+) frames/s \((\d+) of 300 accepted, (\d+) lost, (\d+) CRC errors", out)
    assert flood is not None and flood[4] == "0", out      # a pty never corrupts a frame
    assert re.search(r"sketch: flash \d+ bytes, RAM \d+ bytes", out), out
