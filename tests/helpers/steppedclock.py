"""TEST ONLY: ``python -m tests.helpers.steppedclock ARGS`` runs ``sigbridge ARGS`` in a process whose
wall clock the test can step, as an NTP correction steps a host's clock.

SIGUSR1 steps ``time.time()`` / ``time.time_ns()`` forward by ``STEPPED_CLOCK_STEP_S`` seconds (default
10), SIGUSR2 back by as much; each step is confirmed on stderr with ``steppedclock: wall clock offset
now <N> s``. ``time.monotonic()`` is left alone, as a real step leaves CLOCK_MONOTONIC alone. Nothing in
the ``bridge`` package knows about this module: the patch is applied here, before the CLI starts.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

_real_time = time.time
_real_time_ns = time.time_ns
_offset_s = 0.0


def _time() -> float:
    return _real_time() + _offset_s


def _time_ns() -> int:
    return _real_time_ns() + int(_offset_s * 1e9)


def _stepper(sign: int, step_s: float) -> Callable[[int, FrameType | None], None]:
    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        global _offset_s
        _offset_s += sign * step_s
        # os.write, not print: a handler may run while the daemon is inside a write to stderr.
        os.write(2, f"steppedclock: wall clock offset now {_offset_s:+.1f} s\n".encode())
    return on_signal


def main() -> int:
    step_s = float(os.environ.get("STEPPED_CLOCK_STEP_S", "10"))
    time.time = _time
    time.time_ns = _time_ns
    signal.signal(signal.SIGUSR1, _stepper(+1, step_s))
    signal.signal(signal.SIGUSR2, _stepper(-1, step_s))
    from bridge.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
