"""Shared fixtures. Everything is real: sockets on 127.0.0.1, pty pairs, a mosquitto process.

Timeouts scale with SIGBRIDGE_TEST_TIMEOUT_SCALE (default 1) for slow, shared machines; use
``scaled(seconds)`` rather than bare numbers when waiting for something to happen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers.mosquitto import Mosquitto, free_port, running_mosquitto

TIMEOUT_SCALE = float(os.environ.get("SIGBRIDGE_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A fresh broker for one test (restartable: ``mosquitto.restart()``)."""
    with running_mosquitto() as broker:
        yield broker


# Fixtures that several test modules use, defined with their helpers (imported last: the helpers
# import ``scaled`` from here). A test module never imports another one (tests/test_layout_tests.py).
from tests.helpers.cli import rig  # noqa: E402, F401
from tests.helpers.systemd import short_dir  # noqa: E402, F401
