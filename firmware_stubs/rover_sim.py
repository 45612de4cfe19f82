"""The rover of firmware_stubs/rover/ in Python, on a pseudo-terminal: what the demo and the tests drive
when no Arduino is plugged in. Same line protocol (firmware_stubs/README.md), same replies, same 1 s
watchdog; it also simulates motion (the speed follows the motors with some inertia) and battery drain,
so its telemetry changes.

Command line::

    python firmware_stubs/rover_sim.py [--hz 10] [--no-telemetry] [--log FILE] [--link PATH]

prints ``PORT /dev/pts/N`` as its first line of stdout (the path a bridge opens; ``--link`` also makes a
stable symlink to it), then runs until SIGTERM or SIGINT. ``--log FILE`` appends every received line.

In-process (asyncio tests)::

    sim = RoverSim(hz=10)
    path = await sim.start()          # open the pty; the simulation runs as a task
    ...  sim.received, sim.left, sim.right, sim.speed, sim.battery
    await sim.close()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pty
import signal
import sys
import time
import tty
from collections.abc import Callable
from pathlib import Path

MAX_LINE = 47              # rover_protocol.h kMaxLine
WATCHDOG_MS = 1000         # kWatchdogMs
MAX_OUT_BUFFER = 64 * 1024  # nobody reading the port: drop telemetry rather than grow forever
TICK_S = 0.02              # simulation step (watchdog resolution)


def parse_decimal(s: str) -> float | None:
    """rover_protocol.cpp parse_decimal: [+-]?d{0,6}(.d{1,6})?, at least one digit; else None."""
    body = s[1:] if s[:1] in ("+", "-") else s
    whole, dot, frac = body.partition(".")
    if (not whole.isascii() or not frac.isascii() or (whole and not whole.isdigit())
            or (frac and not frac.isdigit()) or (dot and not frac) or not (whole or frac)
            or len(whole) > 6 or len(frac) > 6):
        return None
    value = float(body)
    return -value if s.startswith("-") else value


class RoverProtocol:
    """Byte-for-byte the parser, mixer and watchdog of rover_protocol.cpp (checked against the compiled
    C++ by tests/test_firmware.py). Times are in milliseconds."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._overlong = False
        self._bad_char = False
        self.left = 0.0
        self.right = 0.0
        self.last_command_ms = 0.0

    def feed(self, data: bytes, now_ms: float, on_line: Callable[[str], None] | None = None) -> list[str]:
        """Feed received bytes; returns the replies of the lines they completed. ``on_line`` sees every
        completed line as received (before it is judged)."""
        replies: list[str] = []
        for c in data:
            if c == 0x0D:
                continue
            if c != 0x0A:
                if self._overlong:
                    continue
                if len(self._line) == MAX_LINE:
                    self._overlong = True
                    continue
                if c < 0x20 or c > 0x7E:
                    self._bad_char = True
                self._line.append(c)
                continue
            line = self._line.decode("latin-1")
            if on_line is not None:
                on_line(line)
            if self._overlong:
                replies.append("ERR too_long")
            elif self._bad_char:
                replies.append("ERR bad_char")
            elif line:
                replies.append(self._execute(line, now_ms))
            self._line.clear()
            self._overlong = self._bad_char = False
        return replies

    def _execute(self, line: str, now_ms: float) -> str:
        tok = [t for t in line.split(" ") if t]
        if not tok or len(tok[0]) != 1:
            return "ERR unknown"
        cmd = tok[0]
        if cmd == "M":
            if len(tok) != 3:
                return "ERR args"
            x, y = parse_decimal(tok[1]), parse_decimal(tok[2])
            if x is None or y is None:
                return "ERR number"
            if not (-1 <= x <= 1 and -1 <= y <= 1):
                return "ERR range"
            left, right = x + y, x - y
            big = max(abs(left), abs(right))
            if big > 1:
                left, right = left / big, right / big
            self.left, self.right = left, right
        elif cmd in ("S", "K"):
            if len(tok) != 1:
                return "ERR args"
            if cmd == "S":
                self.left = self.right = 0.0
        else:
            return "ERR unknown"
        self.last_command_ms = now_ms
        return "OK"

    def tick(self, now_ms: float) -> bool:
        """The watchdog: True when it has just stopped the motors."""
        if now_ms - self.last_command_ms < WATCHDOG_MS or (self.left == 0 and self.right == 0):
            return False
        self.left = self.right = 0.0
        return True


def format_telemetry(battery: float, speed: float) -> str:
    """rover_protocol.cpp format_telemetry: ``T <0-100> <speed, 2 decimals>``."""
    pct = max(0, min(100, round(battery)))
    speed = max(-9.99, min(9.99, speed))
    text = f"{speed:.2f}"
    return f"T {pct} {'0.00' if text == '-0.00' else text}"


class RoverSim:
    """The simulated rover on a pty. ``start()`` returns the slave path to give a SerialLink."""

    def __init__(self, hz: float = 10.0, telemetry: bool = True, log_path: str | None = None,
                 link: str | None = None, battery: float = 100.0, drain_per_s: float = 0.5) -> None:
        self.hz = hz
        self.telemetry = telemetry
        self.log_path = log_path
        self.link = link
        self.battery = battery
        self.drain_per_s = drain_per_s        # % per second at full motor power (idle: 1/20 of it)
        self.speed = 0.0                      # simulated, follows the motors with a 0.3 s time constant
        self.protocol = RoverProtocol()
        self.received: list[str] = []
        self.replies: list[str] = []
        self.path = ""
        self._master = self._slave = -1
        self._out = bytearray()
        self._writing = False
        self._task: asyncio.Task[None] | None = None
        self.line_event = asyncio.Event()

    @property
    def left(self) -> float:
        return self.protocol.left

    @property
    def right(self) -> float:
        return self.protocol.right

    async def start(self) -> str:
        self._master, self._slave = pty.openpty()
        # Our own slave fd stays open so the master never sees EIO while no bridge has the port open.
        tty.setraw(self._master)
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        if self.link:
            tmp = Path(self.link + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.path)
            os.replace(tmp, self.link)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._master, self._on_readable)
        self._task = asyncio.create_task(self._simulate())
        return self.path

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        loop = asyncio.get_running_loop()
        if self._master >= 0:
            loop.remove_reader(self._master)
            loop.remove_writer(self._master)
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._master = self._slave = -1
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)

    # ------------------------------------------------------------ bytes in / out

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:          # EAGAIN: spurious wake-up; EIO cannot happen while we hold the slave
            return
        now = time.monotonic() * 1000
        for reply in self.protocol.feed(data, now, self._on_line):
            self.replies.append(reply)
            self._send(reply)

    def _on_line(self, line: str) -> None:
        self.received.append(line)
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8", errors="replace") as f:
                f.write(line + "\n")
        self.line_event.set()

    def _send(self, line: str) -> None:
        if len(self._out) > MAX_OUT_BUFFER:
            return
        self._out += line.encode() + b"\n"
        self._flush()

    def _flush(self) -> None:
        # A non-blocking pty write can be partial: write what fits, wait for writability for the rest.
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._out.clear()
                break
            del self._out[:n]
        loop = asyncio.get_running_loop()
        if self._out and not self._writing:
            loop.add_writer(self._master, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            loop.remove_writer(self._master)
            self._writing = False

    # ------------------------------------------------------------ physics

    async def _simulate(self) -> None:
        last = time.monotonic()
        next_telemetry = last
        while True:
            now = time.monotonic()
            dt, last = now - last, now
            self.protocol.tick(now * 1000)
            target = (self.protocol.left + self.protocol.right) / 2
            self.speed += (target - self.speed) * min(1.0, dt / 0.3)
            if abs(self.speed) < 0.005 and target == 0:
                self.speed = 0.0
            power = (abs(self.protocol.left) + abs(self.protocol.right)) / 2
            self.battery = max(0.0, self.battery - self.drain_per_s * dt * (0.05 + power))
            if self.telemetry and now >= next_telemetry:
                self._send(format_telemetry(self.battery, self.speed))
                next_telemetry = max(next_telemetry + 1 / self.hz, now)
            await asyncio.sleep(min(TICK_S, 1 / self.hz))


async def _main(args: argparse.Namespace) -> int:
    sim = RoverSim(hz=args.hz, telemetry=not args.no_telemetry, log_path=args.log, link=args.link)
    path = await sim.start()
    print(f"PORT {path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Simulated two-motor rover on a pseudo-terminal.")
    p.add_argument("--hz", type=float, default=10.0, help="telemetry rate (default 10)")
    p.add_argument("--no-telemetry", action="store_true", help="send no T lines")
    p.add_argument("--log", metavar="FILE", help="append every received line to FILE")
    p.add_argument("--link", metavar="PATH", help="also make PATH a symlink to the port")
    args = p.parse_args(argv)
    if args.hz <= 0:
        p.error("--hz must be > 0")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
