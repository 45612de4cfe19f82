"""Build the rover sketch for an Arduino Uno (avr-gcc + Debian's Arduino AVR core) and the emulator runner
(``avr/uno_runner.c`` against libsimavr), cached by a hash of every input.

::

    python -m firmware_stubs.avr_build [--out DIR]     # prints the paths and the flash/RAM use

``build(out_root)`` returns a `Build` (the ELF, the runner, flash and RAM bytes from ``avr-size``). The
result lives in ``out_root/<hash>/``: the hash covers the sketch, the protocol files, the runner's
source, this file and the compiler versions, so a change to any of them rebuilds and an unchanged tree
reuses the last build (a test session pays ~20 s once, then nothing). Needs the Debian packages
``gcc-avr avr-libc arduino-core-avr libsimavr-dev libelf-dev`` (scripts/bootstrap.sh test installs them).

Flags are the Arduino IDE's for the Uno (``platform.txt``: -Os, LTO, gc-sections) plus two that Debian's
core needs with gcc-avr 5.4 (``-DDECIMAL_DIG=__DECIMAL_DIG__`` for WString.cpp) and ``-std=gnu++11``.
The sketch and its protocol files are compiled with ``-Wall -Wextra -Werror``; the core, which is not
ours, with the IDE's default ``-w``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROVER = HERE / "rover"
CLAW = HERE / "claw_uno"       # RoboClaw packet serial on an Uno (a binary protocol on the same board)
RUNNER_SRC = HERE / "avr" / "uno_runner.c"
CORE_ROOT = Path("/usr/share/arduino/hardware/arduino/avr")
DEFAULT_OUT = HERE.parent / "build" / "avr"
#: Builds kept under the build root (newest first); older ones are removed after a new build.
KEEP_BUILDS = 6

#: What the Uno offers the sketch (boards.txt: upload.maximum_size, upload.maximum_data_size).
UNO_FLASH = 32256
UNO_RAM = 2048

MCU = ["-mmcu=atmega328p", "-DF_CPU=16000000L", "-DARDUINO=10807", "-DARDUINO_AVR_UNO",
       "-DARDUINO_ARCH_AVR", "-DDECIMAL_DIG=__DECIMAL_DIG__"]
C_FLAGS = ["-c", "-g", "-Os", "-std=gnu11", "-ffunction-sections", "-fdata-sections", "-flto",
           "-fno-fat-lto-objects"]
CPP_FLAGS = ["-c", "-g", "-Os", "-std=gnu++11", "-fpermissive", "-fno-exceptions", "-ffunction-sections",
             "-fdata-sections", "-fno-threadsafe-statics", "-Wno-error=narrowing", "-flto"]
S_FLAGS = ["-c", "-g", "-x", "assembler-with-cpp", "-flto"]
OURS = ["-Wall", "-Wextra", "-Werror"]
LD_FLAGS = ["-Os", "-g", "-flto", "-fuse-linker-plugin", "-Wl,--gc-sections", "-mmcu=atmega328p"]


class BuildError(RuntimeError):
    """A compiler or linker failed; the message holds its command and output."""


@dataclass(frozen=True)
class Build:
    elf: Path
    runner: Path
    flash: int      # bytes of program memory: .text + .data (the initialisers live in flash)
    ram: int        # bytes of static RAM: .data + .bss + .noinit (the stack takes what is left)

    def report(self) -> str:
        flash, ram = 100 * self.flash / UNO_FLASH, 100 * self.ram / UNO_RAM
        return (f"{self.elf.name}: flash {self.flash} / {UNO_FLASH} bytes ({flash:.1f} %), "
                f"RAM {self.ram} / {UNO_RAM} bytes ({ram:.1f} %) static")


def missing_tools() -> list[str]:
    """The Debian packages whose files are missing (empty when a build can run)."""
    wanted = {"gcc-avr": shutil.which("avr-g++"), "binutils-avr": shutil.which("avr-size"),
              "arduino-core-avr": (CORE_ROOT / "cores" / "arduino" / "Arduino.h").is_file() or None,
              "libsimavr-dev": Path("/usr/include/simavr/parts/uart_pty.h").is_file() or None,
              "libelf-dev": Path("/usr/include/libelf.h").is_file() or None,
              "gcc": shutil.which("gcc")}
    return [pkg for pkg, found in wanted.items() if not found]


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _inputs(rover: Path) -> list[Path]:
    return sorted([*rover.glob("*.ino"), *rover.glob("*.cpp"), *rover.glob("*.h"), RUNNER_SRC,
                   Path(__file__).resolve()])


def source_hash(rover: Path = ROVER) -> str:
    """Hash of everything the build depends on (sources, this recipe, compiler versions)."""
    h = hashlib.sha256()
    for path in _inputs(rover):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for tool in ("avr-g++", "gcc"):
        h.update(_run([tool, "--version"]).encode())
    return h.hexdigest()[:16]


def build(out_root: Path = DEFAULT_OUT, rover: Path = ROVER) -> Build:
    """Build (or reuse) the sketch in the folder ``rover`` (``NAME/NAME.ino`` and every ``NAME/*.cpp``,
    as the IDE does; default the rover) and the runner; raises BuildError."""
    out = out_root / source_hash(rover)
    if not (out / "done").is_file():
        out_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=out_root))
        try:
            _build_into(tmp, rover)
            (tmp / "done").write_text("ok\n")
            try:
                tmp.rename(out)
            except OSError:          # built meanwhile by another process: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
            _prune(out_root, keep=out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    elf = out / f"{rover.name}.elf"
    flash, ram = sizes(elf)
    return Build(elf, out / "uno_runner", flash, ram)


def _prune(out_root: Path, keep: Path) -> None:
    """Remove all but the KEEP_BUILDS newest finished builds (every source change makes a new one)."""
    done = sorted((d for d in out_root.iterdir() if (d / "done").is_file() and d != keep),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for old in done[KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _build_into(out: Path, rover: Path) -> None:
    core = CORE_ROOT / "cores" / "arduino"
    includes = [f"-I{core}", f"-I{CORE_ROOT / 'variants' / 'standard'}", f"-I{rover}"]
    objdir = out / "obj"
    objdir.mkdir()
    jobs: list[list[str]] = []
    core_objs: list[str] = []
    for src in sorted(core.iterdir()):
        flags = {".c": ["avr-gcc", *C_FLAGS], ".cpp": ["avr-g++", *CPP_FLAGS],
                 ".S": ["avr-gcc", *S_FLAGS]}.get(src.suffix)
        if flags is None:
            continue
        obj = str(objdir / f"core_{src.name}.o")
        core_objs.append(obj)
        jobs.append([*flags, "-w", *MCU, *includes, str(src), "-o", obj])
    # The IDE's .ino preprocessing, by hand: the sketch is C++ that includes Arduino.h first.
    sketch_objs = [str(objdir / f"{rover.name}.ino.o")]
    jobs.append(["avr-g++", *CPP_FLAGS, *OURS, *MCU, *includes, "-include", "Arduino.h", "-x", "c++",
                 str(rover / f"{rover.name}.ino"), "-o", sketch_objs[0]])
    for cpp in sorted(rover.glob("*.cpp")):
        sketch_objs.append(str(objdir / f"{cpp.name}.o"))
        jobs.append(["avr-g++", *CPP_FLAGS, *OURS, *MCU, *includes, str(cpp), "-o", sketch_objs[-1]])
    runner = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-I/usr/include/simavr",
              "-I/usr/include/simavr/parts", str(RUNNER_SRC), "-o", str(out / "uno_runner"),
              "-lsimavrparts", "-lsimavr", "-lelf", "-lpthread", "-lutil"]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_run, [*jobs, runner]))
    archive = str(objdir / "core.a")
    _run(["avr-gcc-ar", "rcs", archive, *core_objs])
    _run(["avr-gcc", *LD_FLAGS, "-o", str(out / f"{rover.name}.elf"), *sketch_objs, archive, "-lm"])


_SECTION = re.compile(r"^(\.\w+)\s+(\d+)\s+\d+", re.MULTILINE)


def sizes(elf: Path) -> tuple[int, int]:
    """(flash, RAM) bytes of an AVR ELF from ``avr-size -A`` (System V section sizes)."""
    sections = {name: int(size) for name, size in _SECTION.findall(_run(["avr-size", "-A", str(elf)]))}
    flash = sections.get(".text", 0) + sections.get(".data", 0)
    ram = sections.get(".data", 0) + sections.get(".bss", 0) + sections.get(".noinit", 0)
    return flash, ram


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the rover sketch for the Uno and the simavr runner.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"build root (default {DEFAULT_OUT})")
    p.add_argument("--sketch", type=Path, default=ROVER, help=f"sketch folder (default {ROVER})")
    args = p.parse_args(argv)
    if missing := missing_tools():
        print(f"missing Debian packages: {' '.join(missing)}", file=sys.stderr)
        return 2
    try:
        result = build(args.out, args.sketch.resolve())
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"elf {result.elf}\nrunner {result.runner}\n{result.report()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
