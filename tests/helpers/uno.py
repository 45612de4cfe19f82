"""The rover sketch built for the Uno once per test session (cached on disk by source hash under
build/avr/, so an unchanged tree costs a hash, not a build) and the emulator around it."""

from __future__ import annotations

import pytest

from firmware_stubs import avr_build


@pytest.fixture(scope="session")
def uno_build() -> avr_build.Build:
    """The firmware ELF and the simavr runner. A machine without the AVR toolchain fails here, loudly
    (scripts/bootstrap.sh test installs it): the emulated-MCU tests are never skipped."""
    missing = avr_build.missing_tools()
    assert not missing, f"install the Debian packages {' '.join(missing)} (scripts/bootstrap.sh test)"
    return avr_build.build()
