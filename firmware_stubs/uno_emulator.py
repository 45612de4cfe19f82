"""The rover firmware on an emulated Arduino Uno, as an asyncio object: runs ``uno_runner`` (see
``avr/uno_runner.c``) on the ELF built by `firmware_stubs.avr_build`, and follows its pin log.

::

    build = avr_build.build()
    async with EmulatedUno(build) as uno:       # uno.port: the pty to give the bridge
        await uno.wait(lambda: uno.motors() == (0.5, 0.5), timeout=5)
        uno.changes                             # every PinChange, in order

The motor outputs are read back from the pins exactly as the sketch drives an L298N: PWM duty on pins
5 (left) and 6 (right), direction on 7/8 (left: 7 high = forward, 8 high = back) and 9/10 (right).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from firmware_stubs.avr_build import Build

LEFT = (5, 7, 8)      # PWM pin, forward pin, backward pin
RIGHT = (6, 9, 10)


@dataclass(frozen=True, slots=True)
class PinChange:
    pin: int
    value: int          # duty 0-255 on a PWM pin, 0/1 on a direction pin
    sim_s: float        # MCU time since reset
    wall_s: float       # time.monotonic() of the change


class EmulatedUno:
    """One emulator process. ``a0_mv`` is the voltage on A0 (the battery divider), 0-5000 mV."""

    def __init__(self, build: Build, a0_mv: int = 4000, log_path: str | None = None) -> None:
        self.build = build
        self.a0_mv = a0_mv
        self.log_path = log_path
        self.port = ""
        self.pins: dict[int, int] = {}
        self.changes: list[PinChange] = []
        #: Wall-clock seconds the emulator fell behind and slipped (a starved host; see uno_runner.c):
        #: a firmware timeout of T seconds takes T plus what slipped meanwhile.
        self.slipped_s = 0.0
        self.changed = asyncio.Event()
        self.stderr = b""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> str:
        args = [str(self.build.elf), "--a0-mv", str(self.a0_mv)]
        if self.log_path:
            args += ["--log", self.log_path]
        self._proc = await asyncio.create_subprocess_exec(
            str(self.build.runner), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self._proc.stdout is not None
        async with asyncio.timeout(timeout):
            while not self.port:
                line = await self._proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"uno_runner exited: {await self._proc.stderr.read()!r}"
                                       if self._proc.stderr else "uno_runner exited")
                if line.startswith(b"PORT "):
                    self.port = line[5:].decode().strip()
        self._reader = asyncio.create_task(self._read())
        return self.port

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            parts = line.split()
            if len(parts) == 5 and parts[0] == b"PIN":
                pin, value, sim_us, wall_us = (int(p) for p in parts[1:])
                self.pins[pin] = value
                self.changes.append(PinChange(pin, value, sim_us / 1e6, wall_us / 1e6))
                self.changed.set()
            elif len(parts) == 4 and parts[0] == b"SLIP":
                self.slipped_s += int(parts[1]) / 1e6
        self.changed.set()

    def motor(self, pins: tuple[int, int, int]) -> float:
        """One motor's output in [-1, 1] as the H-bridge sees it (duty / 255, sign from direction)."""
        pwm, forward, back = pins
        duty = self.pins.get(pwm, 0) / 255
        if self.pins.get(forward, 0) and not self.pins.get(back, 0):
            return duty
        if self.pins.get(back, 0) and not self.pins.get(forward, 0):
            return -duty
        return 0.0

    def motors(self) -> tuple[float, float]:
        """(left, right), each rounded to 2 decimals (the PWM has 8 bits)."""
        return round(self.motor(LEFT), 2), round(self.motor(RIGHT), 2)

    async def wait(self, condition: Callable[[], bool], timeout: float) -> None:
        """Until ``condition()`` holds, re-checked on every pin change; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not condition():
                if self._proc is not None and self._proc.returncode is not None:
                    raise RuntimeError("uno_runner exited")
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if proc is not None and proc.stderr is not None:
            self.stderr = await proc.stderr.read()

    async def __aenter__(self) -> EmulatedUno:
        await self.start()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
