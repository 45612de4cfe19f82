"""A BasicMicro RoboClaw motor controller in packet serial mode, simulated on a pseudo-terminal: the
binary device signal-bridge's ``framing: binary`` is tested against (config/roboclaw.example.yaml).

Packet serial, as the RoboClaw user manual describes it: ``[address, command, data..., CRC16]`` with
the CRC-16 (poly 0x1021, init 0, MSB first) computed over every byte before it; a valid write is
acknowledged with one byte 0xFF, an invalid packet (bad CRC, wrong address, unknown command) gets no
reply and is discarded; a gap of more than 10 ms between the bytes of a packet discards it. A read
sends ``[address, command]`` and receives ``[value..., CRC16]``, the CRC covering the address and
command sent and the value received. Multi-byte values are big-endian. Implemented here:

====  ==============================  ==========================  =========================
cmd   what                            data sent                   reply
====  ==============================  ==========================  =========================
0/1   M1 forward / backward           speed u8 0-127              0xFF
4/5   M2 forward / backward           speed u8 0-127              0xFF
14    serial timeout (a watchdog)     u8, tenths of a second      0xFF
24    read main battery voltage       -                           u16 tenths of a volt, CRC
32/33 M1 / M2 signed duty             s16 -32767..32767           0xFF
34    M1 and M2 signed duty           s16, s16                    0xFF
35/36 M1 / M2 signed speed (qpps)     s32                         0xFF
37    M1 and M2 signed speed          s32, s32                    0xFF
====  ==============================  ==========================  =========================

With a serial timeout set (command 14, or ``timeout_ms``), both motors stop when no valid packet came
for that long. Command line::

    python firmware_stubs/roboclaw_sim.py [--address 128] [--battery 12.1] [--timeout-ms 0] [--link PATH]

prints ``PORT /dev/pts/N`` first, then runs until SIGTERM/SIGINT. In-process: ``sim = RoboClawSim();
path = await sim.start(); sim.duty, sim.speed, sim.packets, sim.crc_errors; await sim.close()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pty
import signal
import struct
import sys
import time
import tty
from pathlib import Path

PACKET_GAP_S = 0.010       # the manual's packet timeout
#: command -> bytes of data in the packet (between the command and the CRC)
WRITES = {0: 1, 1: 1, 4: 1, 5: 1, 14: 1, 32: 2, 33: 2, 34: 4, 35: 4, 36: 4, 37: 8}
READS = {24}
ACK = b"\xff"


def crc16(data: bytes) -> int:
    """The RoboClaw manual's CRC16, as its C example computes it (bit by bit)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def with_crc(data: bytes) -> bytes:
    return data + struct.pack(">H", crc16(data))


class RoboClawProtocol:
    """The packet parser and motor state, with times in seconds (pure; the sim feeds it)."""

    def __init__(self, address: int = 0x80, battery_v: float = 12.1, timeout_s: float = 0.0) -> None:
        self.address = address
        self.battery_v = battery_v
        self.timeout_s = timeout_s
        self.duty = [0, 0]          # signed duty -32767..32767 (M1, M2); 0 also while in speed mode
        self.speed = [0, 0]         # signed qpps
        self.packets = 0            # valid packets executed
        self.crc_errors = 0
        self.discarded = 0          # bytes thrown away (wrong address, unknown command, timeouts)
        self.timeouts = 0           # serial timeout stops
        self._buf = bytearray()
        self._last_byte = 0.0
        self._last_valid = 0.0

    def feed(self, data: bytes, now: float) -> bytes:
        """Bytes in; returns the reply bytes."""
        if self._buf and now - self._last_byte > PACKET_GAP_S:
            self.discarded += len(self._buf)
            self._buf.clear()
        self._last_byte = now
        out = bytearray()
        for b in data:
            self._buf.append(b)
            out += self._step(now)
        return bytes(out)

    def _step(self, now: float) -> bytes:
        buf = self._buf
        if buf[0] != self.address:
            self.discarded += 1
            buf.clear()
            return b""
        if len(buf) < 2:
            return b""
        cmd = buf[1]
        if cmd in READS:
            buf.clear()
            self.packets += 1
            self._last_valid = now
            value = struct.pack(">H", round(self.battery_v * 10))
            # The reply's CRC covers the address and command sent as well as the value.
            return value + struct.pack(">H", crc16(bytes((self.address, cmd)) + value))
        if cmd not in WRITES:
            self.discarded += len(buf)
            buf.clear()
            return b""
        size = 2 + WRITES[cmd] + 2
        if len(buf) < size:
            return b""
        packet = bytes(buf)
        buf.clear()
        if struct.unpack(">H", packet[-2:])[0] != crc16(packet[:-2]):
            self.crc_errors += 1
            return b""
        self._execute(cmd, packet[2:-2])
        self.packets += 1
        self._last_valid = now
        return ACK

    def _execute(self, cmd: int, data: bytes) -> None:
        if cmd in (0, 1, 4, 5):
            value = min(data[0], 127) * 32767 // 127
            self._set_duty(0 if cmd < 4 else 1, -value if cmd in (1, 5) else value)
        elif cmd == 14:
            self.timeout_s = data[0] / 10
        elif cmd in (32, 33):
            self._set_duty(cmd - 32, max(-32767, struct.unpack(">h", data)[0]))
        elif cmd == 34:
            m1, m2 = struct.unpack(">hh", data)
            self._set_duty(0, max(-32767, m1))
            self._set_duty(1, max(-32767, m2))
        elif cmd in (35, 36):
            self._set_speed(cmd - 35, struct.unpack(">i", data)[0])
        elif cmd == 37:
            m1, m2 = struct.unpack(">ii", data)
            self._set_speed(0, m1)
            self._set_speed(1, m2)

    def _set_duty(self, motor: int, duty: int) -> None:
        self.duty[motor], self.speed[motor] = duty, 0

    def _set_speed(self, motor: int, speed: int) -> None:
        self.duty[motor], self.speed[motor] = 0, speed

    def tick(self, now: float) -> bool:
        """The serial timeout: True when it has just stopped the motors."""
        if not self.timeout_s or now - self._last_valid < self.timeout_s or self.stopped:
            return False
        self.duty, self.speed = [0, 0], [0, 0]
        self.timeouts += 1
        return True

    @property
    def stopped(self) -> bool:
        return self.duty == [0, 0] and self.speed == [0, 0]


class RoboClawSim:
    """The protocol on a pty; ``start()`` returns the slave path."""

    def __init__(self, address: int = 0x80, battery_v: float = 12.1, timeout_s: float = 0.0,
                 link: str | None = None) -> None:
        self.protocol = RoboClawProtocol(address, battery_v, timeout_s)
        self.link = link
        self.path = ""
        self.received = bytearray()
        self._master = self._slave = -1
        self._task: asyncio.Task[None] | None = None

    @property
    def duty(self) -> list[int]:
        return self.protocol.duty

    @property
    def speed(self) -> list[int]:
        return self.protocol.speed

    async def start(self) -> str:
        self._master, self._slave = pty.openpty()
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
        asyncio.get_running_loop().add_reader(self._master, self._on_readable)
        self._task = asyncio.create_task(self._watchdog())
        return self.path

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        if len(self.received) < 1 << 20:
            self.received += data
        reply = self.protocol.feed(data, time.monotonic())
        if reply:
            with contextlib.suppress(OSError):      # a reader that stopped reading: drop the reply
                os.write(self._master, reply)

    def noise(self, data: bytes) -> None:
        """Send bytes that answer nothing (line noise, for tests); what the pty cannot take is dropped."""
        with contextlib.suppress(OSError):
            os.write(self._master, data)

    async def _watchdog(self) -> None:
        while True:
            self.protocol.tick(time.monotonic())
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._master = self._slave = -1
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)


async def _main(args: argparse.Namespace) -> int:
    sim = RoboClawSim(args.address, args.battery, args.timeout_ms / 1000, args.link)
    print(f"PORT {await sim.start()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Simulated RoboClaw (packet serial) on a pseudo-terminal.")
    p.add_argument("--address", type=int, default=0x80, help="packet serial address, 128-135 (default 128)")
    p.add_argument("--battery", type=float, default=12.1, help="main battery volts (default 12.1)")
    p.add_argument("--timeout-ms", type=int, default=0, help="serial timeout (default 0: off)")
    p.add_argument("--link", metavar="PATH", help="also make PATH a symlink to the port")
    args = p.parse_args(argv)
    if not 0x80 <= args.address <= 0x87:
        p.error("--address must be 128-135")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
