"""The rover sketch as the Uno runs it: built with avr-gcc and Debian's Arduino core (warnings are
errors), its flash and RAM use kept under a budget, and the ELF run on simavr's ATmega328P through
firmware_stubs/avr/uno_runner.c (paced to the wall clock, UART0 on a pty, motor pins logged)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

from firmware_stubs import avr_build
from firmware_stubs.rover_sim import RoverProtocol
from firmware_stubs.uno_emulator import EmulatedUno
from tests.conftest import scaled
from tests.helpers.uno import uno_build

__all__ = ["uno_build"]

#: The budget the sketch must stay under (bytes): a quarter of the Uno's flash, and a quarter of its
#: RAM for static data so that the stack and Serial's buffers keep the rest. Raise it on purpose only.
FLASH_BUDGET = 8064
RAM_BUDGET = 512


def test_flash_and_ram_use_stay_under_budget(uno_build: avr_build.Build) -> None:
    claw = avr_build.build(rover=avr_build.CLAW)     # the RoboClaw packet serial sketch, same budget
    for build in (uno_build, claw):
        print(build.report())
        assert 1000 < build.flash <= FLASH_BUDGET, build.report()
        assert 100 < build.ram <= RAM_BUDGET, build.report()


def test_a_warning_in_the_sketch_fails_the_build(tmp_path: Path) -> None:
    rover = tmp_path / "rover"
    shutil.copytree(avr_build.ROVER, rover, ignore=shutil.ignore_patterns("host", "build"))
    ino = rover / "rover.ino"
    ino.write_text(ino.read_text().replace("void loop() {", "void loop() {\n  int unused_here = 1;", 1))
    with pytest.raises(avr_build.BuildError, match="unused_here"):
        avr_build.build(tmp_path / "out", rover)


class Port:
    """The test's end of the emulator's pty (raw)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.buf = bytearray()

    def write(self, data: bytes) -> float:
        os.write(self.fd, data)
        return time.monotonic()

    async def line(self, timeout: float = 5.0, skip_telemetry: bool = True) -> str:
        async with asyncio.timeout(scaled(timeout)):
            while True:
                while (i := self.buf.find(b"\n")) >= 0:
                    line = self.buf[:i].decode()
                    del self.buf[: i + 1]
                    # (the first line read may be the tail of one sent before the port was opened)
                    if not skip_telemetry or line.startswith(("OK", "ERR")):
                        return line
                try:
                    self.buf += os.read(self.fd, 4096)
                except BlockingIOError:
                    await asyncio.sleep(0.005)

    def close(self) -> None:
        os.close(self.fd)


async def test_emulated_uno_replies_drives_the_pins_reads_a0_and_stops_by_itself(
        uno_build: avr_build.Build) -> None:
    async with EmulatedUno(uno_build, a0_mv=4000) as uno:
        port = Port(uno.port)
        try:
            sent, slipped = port.write(b"M 0.5 0.25\n"), uno.slipped_s
            assert await port.line() == "OK"
            await uno.wait(lambda: uno.motors() == (0.75, 0.25), scaled(5))
            # 4000 mV on A0 -> ADC 818 -> 7996 mV at the battery -> 79 %; speed = mean output.
            tele = [await port.line(skip_telemetry=False) for _ in range(4)]
            assert "T 79 0.50" in tele, tele
            assert uno.pins[5] == 191 and uno.pins[6] == 64           # 0.75 * 255, 0.25 * 255 (rounded)
            assert (uno.pins[7], uno.pins[8], uno.pins[9], uno.pins[10]) == (1, 0, 1, 0)
            moved = next(c for c in uno.changes if c.pin == 5 and c.value == 191)
            port.write(b"M 2 0\n")
            assert await port.line() == "ERR range"
            await uno.wait(lambda: uno.motors() == (0.0, 0.0), scaled(5))
            stopped = next(c for c in uno.changes if c.pin == 5 and c.value == 0 and c.sim_s > moved.sim_s)
            # The firmware's 1 s watchdog in MCU time, and (paced) in wall time too: not ~0.28 s unpaced.
            assert 0.99 <= stopped.sim_s - moved.sim_s <= 1.01
            late = uno.slipped_s - slipped        # what a starved emulator fell behind meanwhile
            assert 0.95 <= stopped.wall_s - sent <= 1.0 + late + scaled(0.3), (stopped, sent, late)
        finally:
            port.close()


def test_the_emulator_never_outlives_its_parent(uno_build: avr_build.Build) -> None:
    """A test killed mid-way must not leave a paced MCU running (a quarter of a core, for ever)."""
    argv = [str(uno_build.runner), str(uno_build.elf)]
    code = ("import subprocess, sys, time\n"
            f"p = subprocess.Popen({argv!r}, stdout=subprocess.DEVNULL)\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    runner = int(parent.stdout.readline())
    time.sleep(0.3)
    assert Path(f"/proc/{runner}").exists()
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + scaled(5)
    status = Path(f"/proc/{runner}/stat")

    def running() -> bool:              # gone, or a zombie waiting for init to reap it
        with contextlib.suppress(OSError):
            return status.read_text().split()[2] != "Z"
        return False

    while running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(), "uno_runner outlived its parent"


async def test_the_uno_build_replies_line_for_line_as_the_simulator(uno_build: avr_build.Build) -> None:
    """The AVR build (float is 32-bit, the code is what an Uno runs) against rover_sim's parser: the
    documented cases of firmware_stubs/README.md and 150 fuzzed lines give the same replies, and every
    accepted move the same motor outputs at the pins (to the PWM's 1/255)."""
    documented = [b"M 0.5 0.25", b"M -1 0", b"M 1 1", b"M 0.8 -0.6", b"K", b"S", b"M .5 -0.00\r",
                  b"M +0.50 0", b"X", b"m 0.1 0.1", b"MM 0 0", b"   ", b"M 0.5", b"M 0.1 0.1 0.1",
                  b"S now", b"K 1",
                  b"M nan 0", b"M 0 inf", b"M 1e-1 0", b"M 0x1 0", b"M - 0", b"M 1. 0", b"M 0.1234567 0",
                  b"M 1234567 0", b"M 0,5 0", b"M 1.01 0", b"M 0 -2", b"M 999999 0", b"M 0.5\t0.5",
                  b"M \x00 0", b"\xff\xfe", "M 0.5 0.5é".encode(), b"M " + b"1" * 100,
                  b"M 000000.000000" + b" " * 31 + b"0", b"M -0.333333 0.333333"]
    rng = random.Random(2024)
    words = [b"M", b"S", b"K", b"X", b"0.5", b"-1", b"1.5", b".25", b"nan", b"1e3", b"-0.333333", b"+1",
             b"0.1234567", b"\x01", b"\xc3\xa9", b"   ", b"0.999999", b"-.000001"]
    fuzzed = [b" ".join(rng.choice(words) for _ in range(rng.randrange(1, 5))) for _ in range(150)]
    sim = RoverProtocol()
    async with EmulatedUno(uno_build) as uno:
        port = Port(uno.port)
        try:
            for line in documented + fuzzed:
                expected = sim.feed(line + b"\n", 0.0)
                port.write(line + b"\n")
                got = [await port.line()] if expected else []
                assert got == expected, line
                if expected == ["OK"]:
                    want = (round(sim.left, 2), round(sim.right, 2))
                    duty = (int(abs(sim.left) * 255 + 0.5), int(abs(sim.right) * 255 + 0.5))
                    await uno.wait(lambda d=duty: (uno.pins.get(5), uno.pins.get(6)) == d, scaled(2))
                    assert uno.motors() == pytest.approx(want, abs=0.01), line
        finally:
            port.close()
