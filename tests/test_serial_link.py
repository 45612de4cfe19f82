"""SerialLink against real pseudo-terminals and a real TCP socket (pyserial's socket:// handler)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.core.model import SerialDeviceConfig
from bridge.devices.serial_link import LineFramer, SerialLink
from tests.conftest import scaled
from tests.helpers.poll import until
from tests.helpers.pty import PtyPair

LOGGER = "bridge.devices.serial_link"


@dataclass
class Harness:
    link: SerialLink
    lines: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    states: asyncio.Queue[bool] = field(default_factory=asyncio.Queue)

    async def line(self) -> str:
        return await asyncio.wait_for(self.lines.get(), scaled(10))

    async def state(self) -> bool:
        return await asyncio.wait_for(self.states.get(), scaled(10))


@contextlib.asynccontextmanager
async def running(port: str, **cfg: object) -> AsyncIterator[Harness]:
    config = SerialDeviceConfig(port=port, **{"reopen_min_s": 0.02, "reopen_max_s": 0.1, **cfg})  # type: ignore[arg-type]
    lines: asyncio.Queue[str] = asyncio.Queue()
    states: asyncio.Queue[bool] = asyncio.Queue()
    link = SerialLink("base", config, lines.put_nowait, lambda name, up: states.put_nowait(up))
    h = Harness(link, lines, states)
    task = asyncio.create_task(link.run())
    try:
        yield h
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not link.up


@pytest.fixture
def dev(tmp_path: Path) -> PtyPair:
    pair = PtyPair(link=tmp_path / "ttyROVER")
    yield pair  # type: ignore[misc]
    pair.close()


# ---------------------------------------------------------------- the framer alone (pure)


def frame(chunks: list[bytes], max_line: int = 8, term: bytes = b"\n") -> tuple[list[str], LineFramer]:
    out: list[str] = []
    f = LineFramer(out.append, max_line, term)
    for c in chunks:
        f.feed(c)
    return out, f


def test_framer_splits_and_joins_chunks() -> None:
    out, f = frame([b"ab", b"c\nde\r", b"\n\n", b"f"])
    assert out == ["abc", "de"]          # CR stripped, empty line ignored, "f" still partial
    assert f.lines == 2


def test_framer_overlong_lines_are_dropped_counted_and_bounded() -> None:
    out, f = frame([b"12345678\n", b"123456789\n", b"x" * 5, b"y" * 50, b"z" * 50, b"\nok\n"])
    assert out == ["12345678", "ok"]     # exactly max_line is fine; max_line+1 is not
    assert f.overlong == 2               # one per overlong line, however many chunks it spans
    assert len(f._buf) <= 8 + 1


def test_framer_multibyte_terminator_split_across_reads() -> None:
    out, _ = frame([b"A\r", b"\nB", b"\r", b"\n"], term=b"\r\n")
    assert out == ["A", "B"]


def test_framer_undecodable_bytes_are_replaced_and_counted() -> None:
    out, f = frame([b"T \xff\xfe 1\n", "é\n".encode()])
    assert out == ["T \ufffd\ufffd 1", "é"]
    assert f.decode_errors == 1


# ---------------------------------------------------------------- on a real pty


async def test_lines_both_ways_exact_bytes(dev: PtyPair) -> None:
    async with running(dev.path) as h:
        assert await h.state() is True
        assert h.link.write_line("M 0.50 -0.25")
        assert await dev.read_until(b"\n", scaled(10)) == b"M 0.50 -0.25\n"
        dev.write(b"T 87 0.5")            # split across writes, CRLF from the device
        dev.write(b"0\r\nOK\n")
        assert await h.line() == "T 87 0.50"
        assert await h.line() == "OK"
        assert h.link.stats["lines_in"] == 2 and h.link.stats["lines_out"] == 1


async def test_configured_newline_is_what_goes_on_the_wire(dev: PtyPair) -> None:
    async with running(dev.path, newline="\r\n") as h:
        assert await h.state() is True
        h.link.write_line("S")
        h.link.write_line("K")
        assert await dev.read_until(b"K\r\n", scaled(10)) == b"S\r\nK\r\n"


async def test_overlong_lines_dropped_counted_and_next_line_delivered(dev: PtyPair) -> None:
    async with running(dev.path, max_line=32) as h:
        assert await h.state() is True
        dev.write(b"A" * 5000 + b"\n")
        dev.write_line("T 50 0.00")
        assert await h.line() == "T 50 0.00"
        assert h.link.stats["overlong_dropped"] == 1
        assert h.lines.empty()


async def test_line_with_cr_or_lf_is_refused_not_written(dev: PtyPair) -> None:
    async with running(dev.path) as h:
        assert await h.state() is True
        assert not h.link.write_line("M 1 0\nFIRE")
        assert not h.link.write_line("M 1 0\r")
        assert h.link.write_line("S")
        assert await dev.read_until(b"\n", scaled(10)) == b"S\n"   # nothing before it
        assert h.link.stats["bad_lines_refused"] == 2


async def test_write_while_down_returns_false_and_counts(tmp_path: Path) -> None:
    link = SerialLink("base", SerialDeviceConfig(port=str(tmp_path / "none")), lambda _: None)
    assert not link.up
    assert not link.write_line("M 0 0")
    assert link.stats["writes_while_down"] == 1


async def test_missing_port_retries_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    async with running(str(tmp_path / "ttyNOPE")) as h:
        await until(lambda: h.link.stats["open_failures"] >= 5)
        assert not h.link.up
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "cannot open" in warnings[0].getMessage()


async def test_port_vanishes_and_comes_back(dev: PtyPair, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    async with running(dev.path) as h:
        assert await h.state() is True
        dev.vanish()                                   # USB unplugged
        assert await h.state() is False
        assert not h.link.write_line("M 0 0")
        failures = h.link.stats["open_failures"]
        await until(lambda: h.link.stats["open_failures"] >= failures + 4)   # several quiet retries
        dev.recreate()                                 # plugged back in, same path
        assert await h.state() is True
        assert h.link.stats["reopens"] == 1
        assert h.link.write_line("K")
        assert await dev.read_until(b"\n", scaled(10)) == b"K\n"
        dev.write_line("T 10 0.00")
        assert await h.line() == "T 10 0.00"
        await until(lambda: any(r.levelno == logging.INFO for r in caplog.records))  # once stable
    records = [(r.levelname, r.getMessage()) for r in caplog.records
               if r.name == LOGGER and r.levelno >= logging.INFO]
    assert [lv for lv, _ in records] == ["WARNING", "INFO"], records   # logged once each, not in a loop
    assert "lost" in records[0][1] and "open again" in records[1][1]


async def test_flapping_port_is_one_outage_with_growing_backoff(port: int,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A remote end that accepts and drops us at once: no fast loop, no log line per cycle."""
    caplog.set_level(logging.DEBUG, LOGGER)
    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        async with running(f"socket://127.0.0.1:{port}", reopen_min_s=0.01, reopen_max_s=0.3) as h:
            await until(lambda: h.link.stats["reopens"] >= 6)
            loop = asyncio.get_running_loop()
            t0, n0 = loop.time(), h.link.stats["reopens"]
            await until(lambda: h.link.stats["reopens"] >= n0 + 3)
            assert loop.time() - t0 >= 3 * 0.3 * 0.9       # backed off to the cap, not reset per open
    finally:
        server.close()
        await server.wait_closed()
    records = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.INFO]
    assert [r.levelname for r in records] == ["WARNING"], [r.getMessage() for r in records]


async def test_callback_errors_do_not_take_the_port_down(dev: PtyPair) -> None:
    got: list[str] = []

    def on_line(line: str) -> None:
        got.append(line)
        if line == "boom":
            raise RuntimeError("consumer bug")

    states: asyncio.Queue[bool] = asyncio.Queue()
    link = SerialLink("base", SerialDeviceConfig(port=dev.path), on_line,
                      lambda _n, up: states.put_nowait(up))
    task = asyncio.create_task(link.run())
    try:
        assert await asyncio.wait_for(states.get(), scaled(10)) is True
        dev.write(b"boom\nafter\n")
        await until(lambda: len(got) == 2)
        assert got == ["boom", "after"] and link.up
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------- socket:// (pyserial's URL handler)


async def test_socket_url_lines_both_ways_and_reconnect(port: int) -> None:
    conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.put_nowait((r, w))

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        async with running(f"socket://127.0.0.1:{port}") as h:
            assert await h.state() is True
            reader, writer = await asyncio.wait_for(conns.get(), scaled(10))
            h.link.write_line("M 0.10 0.20")
            assert await asyncio.wait_for(reader.readuntil(b"\n"), scaled(10)) == b"M 0.10 0.20\n"
            writer.write(b"T 99 1.25\n")
            assert await h.line() == "T 99 1.25"
            writer.close()                                  # the remote end drops us
            assert await h.state() is False
            assert await h.state() is True                  # and the link reconnects by itself
            reader, writer = await asyncio.wait_for(conns.get(), scaled(10))
            h.link.write_line("S")
            assert await asyncio.wait_for(reader.readuntil(b"\n"), scaled(10)) == b"S\n"
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_device_that_stops_reading_bounds_the_buffer_and_shutdown_does_not_hang(dev: PtyPair) -> None:
    async with running(dev.path) as h:
        assert await h.state() is True
        line = "M 0.50 0.50 " + "x" * 100
        sent = 0
        while h.link.write_line(line):              # nobody reads the master: kernel, then transport fill
            sent += 1
            assert sent < 10_000, "the write buffer is not bounded"
        assert h.link.stats["write_overflow"] == 1
        assert not h.link.write_line("S") and h.link.up   # refused, counted, still up
    # running() cancelled the link and it returned although the device never drained; no executor
    # thread is left waiting on the port either.
    await asyncio.wait_for(asyncio.get_running_loop().shutdown_default_executor(), scaled(10))


async def test_back_pressure_then_drain_delivers_in_order_without_a_spinning_writer(dev: PtyPair) -> None:
    """pyserial-asyncio-fast 0.16 left its writer registered after a partial write drained: the loop then
    ran ``_write_ready`` on every turn and raised ``AssertionError: Write buffer should not be empty``
    each time (upstream PR home-assistant-libs/pyserial-asyncio-fast#36). Our transport must not."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with running(dev.path) as h:
            assert await h.state() is True
            accepted: list[str] = []
            n = 0
            # The device does not read: the kernel's pty buffer fills (a partial write leaves the rest in
            # the transport), then the transport's own bound refuses lines.
            while len(accepted) < 20_000:
                line = f"M {n} " + "y" * (n % 37)
                n += 1
                if not h.link.write_line(line):
                    break
                accepted.append(line)
            assert h.link.stats["write_overflow"] == 1, "the device never pushed back"
            for want in accepted:                                  # the device drains everything
                assert await dev.read_line(scaled(10)) == want
            assert h.link.write_line("S") and await dev.read_line(scaled(10)) == "S"  # still writes
            # A quiet half second: the loop's thread must be idle (the bug spun it at 100% CPU).
            cpu = time.thread_time()
            await asyncio.sleep(0.5)
            cpu = time.thread_time() - cpu
            assert h.link.up and dev.pending() == b""
        assert errors == [], [str(e.get("exception") or e.get("message")) for e in errors[:3]]
        assert cpu < 0.1, f"the event loop spun for {cpu:.2f} s of CPU in 0.5 s of quiet"
    finally:
        loop.set_exception_handler(previous)


async def test_lines_of_one_loop_turn_leave_in_one_write_in_order(dev: PtyPair) -> None:
    """One transport write (one syscall) per event-loop turn, not one per line: the throughput bench's
    hot path. White-box: counts the calls to the transport's write the link holds."""
    async with running(dev.path) as h:
        assert await h.state() is True
        write = h.link._write
        assert write is not None
        writes: list[bytes] = []

        def counting(data: bytes) -> None:
            writes.append(bytes(data))
            write(data)

        h.link._write = counting
        assert all(h.link.write_line(f"M {i}") for i in range(50))
        assert writes == []                                     # nothing before the turn ends
        want = b"".join(f"M {i}\n".encode() for i in range(50))
        assert await dev.read_until(b"M 49\n", scaled(10)) == want
        assert writes == [want]
        assert h.link.write_line("S") and await dev.read_line(scaled(10)) == "S"   # the next turn
        assert len(writes) == 2 and h.link.stats["lines_out"] == 51


async def test_lines_still_pending_when_the_link_is_cancelled_are_written_before_it_closes(
        dev: PtyPair) -> None:
    """The daemon's on_shutdown lines must reach the device although the port is aborted right after."""
    up = asyncio.Event()
    link = SerialLink("base", SerialDeviceConfig(port=dev.path), lambda line: None,
                      lambda name, state: up.set() if state else None)
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(up.wait(), scaled(10))
    task.cancel()                   # the task's next step is queued before the flush of this line
    assert link.write_line("S")
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not link.up
    assert await dev.read_line(scaled(10)) == "S"


async def test_purge_drops_the_queued_whole_lines_never_half_a_line_then_seal_refuses(dev: PtyPair) -> None:
    """A device that stopped reading: lines wait in the transport. ``purge`` (before an e-stop) drops
    them, except the rest of the line the kernel took half of: what the device reads is whole lines,
    then the e-stop line, then nothing once the link is sealed (the shutdown)."""
    async with running(dev.path) as h:
        assert await h.state() is True
        n = 1500        # in one loop turn: one write, which the kernel's pty buffer takes part of
        for i in range(n):
            assert h.link.write_line(f"M {i} " + "y" * (i % 37))
        await asyncio.sleep(0)                      # handed to the transport: the rest waits there
        queued = h.link.queued
        assert getattr(h.link._transport, "mid_line", None) is True, "the kernel took whole lines only"
        h.link.purge()
        assert 0 < h.link.stats["purged_bytes"] <= queued and h.link.queued < queued
        assert h.link.write_line("S")
        h.link.seal()
        assert not h.link.write_line("M 9 9") and h.link.stats["writes_sealed"] == 1
        assert h.link.refusal(1) == "down"
        got = []
        while (line := await dev.read_line(scaled(10))) != "S":
            got.append(line)
        assert got == [f"M {i} " + "y" * (i % 37) for i in range(len(got))]   # whole lines, in order
        assert len(got) < n
        await asyncio.sleep(0.1)
        assert dev.pending() == b""


async def test_a_second_link_cannot_open_a_port_in_use_so_no_line_is_stolen(dev: PtyPair) -> None:
    # A second bridge on the same port (e.g. a stale one reopening a /dev/pts/N name the kernel gave to a
    # new device) would share the tty: each read takes lines from the other, and its open flushes input.
    async with running(dev.path) as first:
        assert await first.state() is True
        async with running(dev.path) as second:
            await until(lambda: second.link.stats["open_failures"] >= 2, 10)
            assert not second.link.up
            for i in range(20):
                dev.write_line(f"T {i} 0.5")
            assert [await first.line() for _ in range(20)] == [f"T {i} 0.5" for i in range(20)]
            assert second.lines.empty() and second.link.stats["lines_in"] == 0
        # The first one's port stays its own; once it lets go, another link opens it.
    async with running(dev.path) as third:
        assert await third.state() is True
