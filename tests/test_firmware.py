"""The rover firmware compiled with g++ on the host: the protocol core (rover_protocol.cpp) under ASan and
UBSan through host/test_host.cpp, the sketch itself (rover.ino) on a fake Arduino core, and the Python
simulator's parser checked against the C++ one line for line."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_stubs.rover_sim import RoverProtocol, format_telemetry

ROVER = Path(__file__).resolve().parent.parent / "firmware_stubs" / "rover"
GXX = shutil.which("g++") or "g++"   # required, like mosquitto: apt-get install -y g++
FLAGS = ["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rover") / "rover_host"
    subprocess.run([GXX, *FLAGS, "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    f"-I{ROVER}", str(ROVER / "host" / "test_host.cpp"), str(ROVER / "rover_protocol.cpp"),
                    "-o", str(out)], check=True, capture_output=True, timeout=120)
    return out


Record = tuple[int, bytes]


def drive(host: Path, records: list[Record]) -> list[list[str]]:
    """Feed (time_ms, bytes) records; returns the output lines of each record."""
    stdin = b"".join(b"%d %d\n" % (t, len(data)) + data for t, data in records)
    proc = subprocess.run([str(host)], input=stdin, capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode(errors="replace")
    groups: list[list[str]] = [[]]
    for line in proc.stdout.decode().splitlines():
        if line == ".":
            groups.append([])
        else:
            groups[-1].append(line)
    assert groups[-1] == []
    return groups[:-1]


def replies(group: list[str]) -> list[str]:
    return [line[2:] for line in group if line.startswith("R ")]


def motors(group: list[str]) -> tuple[float, float]:
    m = next(line for line in group if line.startswith("M "))
    left, right = m.split()[1:]
    return float(left), float(right)


def test_move_stop_keepalive_and_mixing(host: Path) -> None:
    out = drive(host, [(0, b"M 0.5 0.25\n"), (10, b"M -1 0\n"), (20, b"M 1 1\n"), (30, b"M 0.8 -0.6\n"),
                       (40, b"K\n"), (50, b"S\n"), (60, b"M .5 -0.00\r\n")])
    assert [replies(g) for g in out] == [["OK"]] * 7
    assert [motors(g) for g in out] == [(0.75, 0.25), (-1, -1), (1, 0), (0.143, 1), (0.143, 1), (0, 0),
                                        (0.5, 0.5)]


@pytest.mark.parametrize(("line", "reply"), [
    (b"X", "ERR unknown"), (b"m 0.1 0.1", "ERR unknown"), (b"MM 0 0", "ERR unknown"), (b"   ", "ERR unknown"),
    (b"M 0.5", "ERR args"), (b"M 0.1 0.1 0.1", "ERR args"), (b"S now", "ERR args"), (b"K 1", "ERR args"),
    (b"M nan 0", "ERR number"), (b"M 0 inf", "ERR number"), (b"M 1e-1 0", "ERR number"),
    (b"M 0x1 0", "ERR number"), (b"M - 0", "ERR number"), (b"M 1. 0", "ERR number"),
    (b"M 0.1234567 0", "ERR number"), (b"M 1234567 0", "ERR number"), (b"M 0,5 0", "ERR number"),
    (b"M 1.01 0", "ERR range"), (b"M 0 -2", "ERR range"), (b"M 999999 0", "ERR range"),
    (b"M 0.5\t0.5", "ERR bad_char"), (b"M \x00 0", "ERR bad_char"), (b"\xff\xfe", "ERR bad_char"),
    ("M 0.5 0.5é".encode(), "ERR bad_char"), (b"M " + b"1" * 100, "ERR too_long"),
])
def test_bad_lines_get_a_reason_and_change_nothing(host: Path, line: bytes, reply: str) -> None:
    out = drive(host, [(0, b"M 0.2 0.2\n"), (100, line + b"\n"), (200, b"K\n")])
    assert replies(out[1]) == [reply]
    assert motors(out[1]) == (0.4, 0)            # the good command still stands
    assert replies(out[2]) == ["OK"]              # and the parser is in sync again


def test_overlong_line_boundary(host: Path) -> None:
    ok = b"M " + b"0" * 6 + b"." + b"0" * 6 + b" " * 31 + b"0"    # 47 bytes: accepted
    assert len(ok) == 47
    out = drive(host, [(0, ok + b"\n"), (1, ok + b"0\n"), (2, b"K\n")])
    assert [replies(g) for g in out] == [["OK"], ["ERR too_long"], ["OK"]]


def test_watchdog_stops_after_one_second_without_a_valid_line(host: Path) -> None:
    out = drive(host, [(0, b"M 1 0\n"), (900, b"K\n"), (1500, b"garbage\n"), (1899, b""), (1900, b""),
                       (2000, b"M 0.5 0\n"), (2999, b""), (3000, b"")])
    assert "W" not in out[1] + out[2] + out[3]    # K refreshed it; garbage did not, but 1 s has not passed
    assert motors(out[3]) == (1, 1)
    assert "W" in out[4] and motors(out[4]) == (0, 0)   # 1000 ms after the last valid line (900)
    assert motors(out[6]) == (0.5, 0.5) and "W" in out[7] and motors(out[7]) == (0, 0)


def test_watchdog_across_millis_wraparound(host: Path) -> None:
    near = 2**32 - 300
    out = drive(host, [(near, b"M 1 0\n"), (2**32 - 1, b""), (699, b""), (700, b"")])
    assert motors(out[2]) == (1, 1) and "W" not in out[2]      # 999 ms later, across the wrap
    assert "W" in out[3]


def test_telemetry_at_10_hz(host: Path) -> None:
    out = drive(host, [(t, b"M 0.5 0\n" if t == 0 else b"") for t in range(0, 1000, 10)])
    tel = [line for g in out for line in g if line.startswith("T ")]
    assert len(tel) == 10
    assert all(re.fullmatch(r"T 87 0\.50", line) for line in tel), tel


def test_telemetry_formatting(host: Path) -> None:
    proc = subprocess.run([str(host)], input=b"0 -1\n", capture_output=True, timeout=60, check=True)
    assert proc.stdout.decode().splitlines() == ["T 0 0.00", "T 0 0.00", "T 7 0.51", "T 42 -1.00",
                                                 "T 100 9.99", "T 100 -0.75"]
    assert format_telemetry(42, -1.0) == "T 42 -1.00" and format_telemetry(250, 12.5) == "T 100 9.99"
    assert format_telemetry(0, -0.004) == "T 0 0.00"


def test_random_bytes_never_crash_or_overflow(host: Path) -> None:
    rng = random.Random(1234)
    alphabet = b"MSK \n\r.-+0123456789nax\x00\xff\t"
    records = [(i * 7, bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 120))))
               for i in range(400)]
    out = drive(host, records)                      # ASan/UBSan abort on any overflow or UB
    assert len(out) >= 400
    for g in out:
        left, right = motors(g)
        assert -1 <= left <= 1 and -1 <= right <= 1


def test_python_simulator_parser_matches_the_firmware(host: Path) -> None:
    rng = random.Random(99)
    words = [b"M", b"S", b"K", b"X", b"0.5", b"-1", b"1.5", b".25", b"nan", b"1e3", b"-0.333333", b"+1",
             b"0.1234567", b"\x01", b"\xc3\xa9", b"   "]
    lines = [b" ".join(rng.choice(words) for _ in range(rng.randrange(1, 5))) for _ in range(300)]
    lines += [b"M " + b"9" * 60, b"", b"M 0.5 0.5\r"]
    records = [(i * 50, line + b"\n") for i, line in enumerate(lines)]
    out = drive(host, records)
    sim = RoverProtocol()
    for (t, data), group in zip(records, out, strict=True):
        got = sim.feed(data, t)
        sim.tick(t)
        assert got == replies(group), data
        left, right = motors(group)
        assert (round(sim.left, 3), round(sim.right, 3)) == pytest.approx((left, right), abs=1e-3), data


def test_the_sketch_compiles_and_runs_on_a_fake_board(tmp_path: Path) -> None:
    exe = tmp_path / "rover_ino"
    subprocess.run([GXX, *FLAGS, f"-I{ROVER}", f"-I{ROVER / 'host'}", "-include", "Arduino.h",
                    "-x", "c++", str(ROVER / "rover.ino"), "-x", "none", str(ROVER / "rover_protocol.cpp"),
                    str(ROVER / "host" / "shim_main.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    proc = subprocess.run([str(exe)], input=b"M 1 0\nbogus\n", capture_output=True, timeout=60, check=True)
    lines = proc.stdout.decode().splitlines()
    assert [line for line in lines if not line.startswith("T ")] == ["OK", "ERR unknown"]
    tel = [line for line in lines if line.startswith("T ")]
    assert 29 <= len(tel) <= 31 and all(re.fullmatch(r"T 100 -?\d\.\d\d", t) for t in tel)  # 3 s at 10 Hz
    pins = re.findall(r"PIN (\d+) (\d+) at (\d+)", proc.stderr.decode())
    assert ("5", "255") in [(p, v) for p, v, _ in pins]              # full power on the left PWM
    stop_at = [int(t) for p, v, t in pins if p == "5" and v == "0" and int(t) > 0]
    assert stop_at and 1000 <= stop_at[0] - 10 <= 1020                 # watchdog, ~1 s after "M 1 0"
