"""Serial device link: a line-oriented pump between a serial port and the engine.

The port is anything pyserial's ``serial_for_url`` opens (/dev/tty*, /dev/serial/by-id/..., socket://,
rfc2217://), driven as an asyncio transport by ``pyserial-asyncio-fast`` (no thread, no byte-wise
``readline``; ``serial_transport.SerialTransport`` works around two of its back-pressure bugs and knows
where each line it holds ends). The link owns four things and nothing else:

* framing: ``LineFramer`` cuts incoming bytes into lines with ``bytes.find`` on a ``bytearray``, never
  buffers more than ``max_line`` bytes, and counts what it throws away;
* writing: ``write_line`` appends the line and the configured newline to a buffer that is handed to the
  transport in one write at the end of the event-loop turn (``loop.call_soon``): a burst of commands
  decoded from one read of the session costs one syscall, not one per line (the ``os.write`` per line
  was 31 % of the bridge's samples in the throughput bench), and a lone command still leaves in the same
  loop iteration. The transport never blocks; it buffers what the port cannot take yet, up to a bound;
* owning the port: it is opened with an exclusive lock (pyserial's ``exclusive=True``, an ``flock``):
  while one link holds it, another (a second bridge on the same port) cannot open it and retries, so
  no line the device sends is read by someone else;
* staying open: ``run`` opens the port, waits for it to be lost, and reopens it with a capped exponential
  backoff, logging the loss once (warning) and the recovery once (info, when the port has stayed open
  for twice ``reopen_max_s``), however long the outage and however often the port flaps meanwhile.

Incoming lines end at ``\\n`` (a trailing ``\\r`` is stripped, so ``\\r\\n`` devices work too) unless the
configured newline is exactly ``\\r``, in which case they end at ``\\r``. Empty lines are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Literal

import serial

from bridge.core.model import SerialDeviceConfig
from bridge.devices.outage import Reconnect, report_state
from bridge.devices.serial_transport import SerialTransport, open_transport

__all__ = ["ByteFeed", "LineFramer", "SerialLink"]

log = logging.getLogger(__name__)

#: Bytes allowed to wait in the transport's write buffer (a device that stopped reading). Past this,
#: new lines are dropped and counted: a stuck device must not get a burst of stale commands later.
MAX_WRITE_BUFFER = 64 * 1024


class LineFramer:
    """Cut a byte stream into lines. Pure: bytes in, decoded lines out through ``on_line``.

    A line longer than ``max_line`` bytes (terminator excluded) is discarded up to and including its
    terminator, and ``overlong`` is incremented once for it; the buffer never holds more than
    ``max_line + len(terminator)`` bytes. Bytes that are not UTF-8 are replaced by U+FFFD and the line is
    counted in ``decode_errors``; they never raise.
    """

    __slots__ = ("_buf", "_discarding", "_scan", "_term", "decode_errors", "lines", "max_line",
                 "on_line", "overlong")

    def __init__(self, on_line: Callable[[str], None], max_line: int, terminator: bytes = b"\n") -> None:
        self.on_line = on_line
        self.max_line = max_line
        self._term = terminator
        self._buf = bytearray()
        self._scan = 0             # bytes of _buf already searched for the terminator
        self._discarding = False   # inside an overlong line: drop until the next terminator
        self.lines = 0
        self.overlong = 0
        self.decode_errors = 0

    def reset(self) -> None:
        """Forget any partial line (called when the port is reopened: its tail belongs to nobody)."""
        self._buf.clear()
        self._scan = 0
        self._discarding = False

    def feed(self, data: bytes) -> None:
        """Add received bytes; calls ``on_line`` for each complete line, in order."""
        buf, term = self._buf, self._term
        buf += data
        start = 0
        while True:
            i = buf.find(term, max(start, self._scan))
            if i < 0:
                break
            self._scan = 0
            if self._discarding:
                self._discarding = False
            elif i - start > self.max_line:
                self.overlong += 1
            else:
                self._emit(bytes(buf[start:i]))
            start = i + len(term)
        if start:
            del buf[:start]
        # Keep the last len(term)-1 bytes unsearched: a multi-byte terminator may be split across reads.
        self._scan = max(0, len(buf) - len(term) + 1)
        if len(buf) > self.max_line + len(term) - 1:
            if not self._discarding:
                self.overlong += 1
                self._discarding = True
            keep = len(term) - 1
            del buf[: len(buf) - keep]
            self._scan = 0

    def _emit(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.decode_errors += 1
            line = raw.decode("utf-8", errors="replace")
        self.lines += 1
        self.on_line(line)


class ByteFeed(LineFramer):
    """The framer of a ``framing: binary`` device: hands every read on as it came (``on_bytes``); the
    engine finds the frames (`bridge.core.engine.frames.FrameStream`, which resynchronises by itself)."""

    __slots__ = ("bytes_in", "on_bytes")

    def __init__(self, on_bytes: Callable[[bytes], None]) -> None:
        super().__init__(lambda _line: None, 0)
        self.on_bytes = on_bytes
        self.bytes_in = 0

    def feed(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.on_bytes(data)


class _LinkProtocol(asyncio.Protocol):
    """asyncio protocol for one open period of the port: feeds the framer, signals the loss."""

    def __init__(self, framer: LineFramer) -> None:
        self.framer = framer
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class SerialLink:
    """One serial device. Construct, then run ``run()`` as a task for as long as the device is needed.

    ``on_line(line)`` receives every incoming line, decoded, without terminator, on the event loop; it
    must not block. ``on_state(name, up)`` is called on every change of ``up``. Exceptions raised by
    either callback are logged and swallowed: a faulty consumer must not take the port down.

    ``stats``: lines_in, lines_out, overlong_dropped, decode_errors, writes_while_down, write_overflow,
    bad_lines_refused, open_failures, reopens (successful opens after the first), purged_bytes (dropped
    by ``purge``), writes_sealed (refused after ``seal``), expired (lines or frames dropped unwritten:
    their ``deadline`` passed while they waited for the device); for ``framing: binary`` devices
    (``on_bytes`` gets the raw reads, ``write_frame`` sends) bytes_in and frames_out.
    """

    #: The link kind (see bridge.devices): checked instead of isinstance, so no module imports both.
    kind: Final[Literal["serial"]] = "serial"

    def __init__(self, name: str, config: SerialDeviceConfig, on_line: Callable[[str], None],
                 on_state: Callable[[str, bool], None] | None = None,
                 on_bytes: Callable[[bytes], None] | None = None,
                 on_expired: Callable[[str, list[str]], None] | None = None) -> None:
        self.name = name
        self._on_expired = on_expired
        self.config = config
        self._on_line = on_line
        self._on_state = on_state
        self._newline = config.newline.encode()
        terminator = b"\r" if config.newline == "\r" else b"\n"
        self._framer = LineFramer(self._deliver, config.max_line, terminator)
        self._binary = config.framing == "binary"
        if self._binary:
            # No lines: every read goes to on_bytes as it came (``write_frame`` for the other way).
            self._framer = ByteFeed(self._guarded(on_bytes or (lambda _data: None)))
        self._transport: asyncio.Transport | None = None
        self._write: Callable[[bytes], None] | None = None
        self._buffered: Callable[[], int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Lines accepted in this loop turn, not yet handed to the transport; non-empty <=> a flush is
        # scheduled (or the transport was dropped, which clears it).
        self._pending = bytearray()
        self._pending_lines: list[tuple[int, float | None]] = []   # (size, deadline) per line in _pending
        self._up = False
        self._opened_before = False
        self._sealed = False
        self._counts: dict[str, int] = dict.fromkeys(
            ("lines_out", "writes_while_down", "write_overflow", "bad_lines_refused", "open_failures",
             "reopens", "purged_bytes", "writes_sealed", "frames_out", "expired"), 0)

    @property
    def up(self) -> bool:
        """True while the port is open and writable."""
        return self._up

    def write_line(self, line: str, deadline: float | None = None) -> bool:
        """Send ``line`` + the configured newline without blocking. Returns False (and counts it) when the
        port is down, when the line itself contains CR or LF (it would be two commands), or when the device
        has stopped reading and MAX_WRITE_BUFFER bytes are already waiting.

        A True line is written, in order, at the end of the current event-loop turn together with the
        other lines of that turn (one transport write); closing the link (``run`` cancelled, port lost)
        hands the lines still pending to the transport first. A line with a ``deadline`` (monotonic
        seconds) still waiting in the transport's buffer then (the device stopped reading) is dropped
        before the next write, never written (counted: expired; ``on_expired(name, lines)``)."""
        if self._sealed:
            self._counts["writes_sealed"] += 1
            return False
        write = self._write
        if write is None or not self._up:
            self._counts["writes_while_down"] += 1
            return False
        if "\n" in line or "\r" in line:
            self._counts["bad_lines_refused"] += 1
            log.warning("serial %s: refused a line containing CR/LF: %r", self.name, line[:80])
            return False
        pending = self._pending
        if self._buffered is not None and self._buffered() + len(pending) > MAX_WRITE_BUFFER:
            self._counts["write_overflow"] += 1
            return False
        if not pending and self._loop is not None:
            self._loop.call_soon(self._flush)
        encoded = line.encode()
        pending += encoded
        pending += self._newline
        self._pending_lines.append((len(encoded) + len(self._newline), deadline))
        self._counts["lines_out"] += 1
        return True

    def refusal(self, size: int) -> str | None:
        """Why a line of ``size`` bytes (newline excluded) would be refused now: ``"down"`` (port not
        open, or the link sealed), ``"full"`` (MAX_WRITE_BUFFER reached), or None when it would be taken.
        Lets the engine decide a command's fate before anything of it is written."""
        if self._sealed or self._write is None or not self._up:
            return "down"
        transport = self._transport
        if isinstance(transport, SerialTransport) and transport.lines:
            transport.expire(time.monotonic())      # stale lines must not make room short
        return "full" if self.queued + size + len(self._newline) > MAX_WRITE_BUFFER else None

    def purge(self) -> None:
        """Drop every line taken but not yet handed to the port (this turn's and the transport's buffer;
        not the kernel's, and never the rest of a line already partly written). Called before an e-stop
        or the shutdown: what comes next must not wait behind, nor be followed by, older commands.
        A socket:// port keeps its transport buffer (asyncio's own): only this turn's lines go."""
        dropped = len(self._pending)
        self._pending.clear()
        self._pending_lines.clear()
        transport = self._transport
        if isinstance(transport, SerialTransport):
            dropped += transport.purge()
        self._counts["purged_bytes"] += dropped

    def seal(self) -> None:
        """Refuse every later line (counted: writes_sealed). The daemon seals a link right after handing it
        the on_shutdown actions, so they are the last bytes the device gets from us."""
        self._sealed = True

    @property
    def queued(self) -> int:
        """Bytes taken but not yet handed to the kernel (0: everything written has left the process)."""
        return len(self._pending) + (self._buffered() if self._buffered is not None else 0)

    def write_frame(self, data: bytes, deadline: float | None = None) -> bool:
        """Send one binary frame (``framing: binary``) without blocking, batched with the other writes of
        this loop turn as ``write_line`` does. False (counted) when the port is down or the device has
        stopped reading and MAX_WRITE_BUFFER bytes are already waiting. ``deadline`` as for
        ``write_line``: a frame still waiting then is dropped whole, never written."""
        if self._sealed:
            self._counts["writes_sealed"] += 1
            return False
        if self._write is None or not self._up:
            self._counts["writes_while_down"] += 1
            return False
        if self._buffered is not None and self._buffered() + len(self._pending) > MAX_WRITE_BUFFER:
            self._counts["write_overflow"] += 1
            return False
        if not self._pending and self._loop is not None:
            self._loop.call_soon(self._flush)
        self._pending += data
        self._pending_lines.append((len(data), deadline))
        self._counts["frames_out"] += 1
        return True

    def _flush(self) -> None:
        """Hand the lines of this loop turn to the transport in one write (a no-op when already done)."""
        pending = self._pending
        if not pending:
            return
        # bytes, not the bytearray itself: the transport keeps a reference to what it cannot write yet.
        data = bytes(pending)
        pending.clear()
        lines, self._pending_lines = self._pending_lines, []
        if isinstance(self._transport, SerialTransport):
            self._transport.track(lines)
        if self._write is not None:
            self._write(data)

    async def run(self) -> None:
        """Open the port and keep it open: reopen with backoff (``reopen_min_s`` doubling up to
        ``reopen_max_s``) whenever it is lost or cannot be opened; see ``outage.Reconnect`` for when an
        outage is logged. Runs until cancelled; on cancellation the port is closed and ``up`` goes False
        before the CancelledError propagates."""
        cfg = self.config
        retry = Reconnect(log, cfg.reopen_min_s, cfg.reopen_max_s)
        try:
            while True:
                try:
                    protocol = await self._open()
                except (serial.SerialException, OSError, ValueError) as exc:
                    self._counts["open_failures"] += 1
                    await asyncio.sleep(retry.failed(f"serial {self.name}: cannot open {cfg.port} ({exc}); "
                                                     f"retrying every <={cfg.reopen_max_s}s"))
                    continue
                if self._opened_before:
                    self._counts["reopens"] += 1
                self._opened_before = True
                retry.connected(f"serial {self.name}: {cfg.port} open again")
                self._set_up(True)
                reason = await protocol.lost
                retry.disconnected()
                self._set_up(False)
                self._drop_transport()
                await asyncio.sleep(retry.failed(
                    f"serial {self.name}: {cfg.port} lost ({reason or 'closed'}); reopening"))
        finally:
            retry.disconnected()
            self._set_up(False)
            self._drop_transport()

    async def _open(self) -> _LinkProtocol:
        self._framer.reset()
        loop = asyncio.get_running_loop()
        # exclusive (flock): two readers of one tty each get a random share of its lines, and a stale
        # bridge reopening a reused name (/dev/pts/N) would take them; the second opener retries instead.
        transport, protocol = await open_transport(
            loop, lambda: _LinkProtocol(self._framer), self.config.port, baudrate=self.config.baudrate,
            exclusive=True)
        assert isinstance(protocol, _LinkProtocol)
        if isinstance(transport, SerialTransport):
            transport.on_expired = self._expired
        if self.config.low_latency:
            port: Any = getattr(transport, "serial", None)
            # Only real USB adapters support it; ptys and sockets refuse (or lack the method): fine.
            with contextlib.suppress(AttributeError, OSError, ValueError, NotImplementedError):
                port.set_low_latency_mode(True)
        self._transport = transport
        self._loop = loop
        self._write = transport.write
        self._buffered = transport.get_write_buffer_size
        return protocol

    def _drop_transport(self) -> None:
        self._flush()   # the lines of this turn (e.g. on_shutdown's) before the port goes
        self._pending.clear()
        self._pending_lines.clear()
        transport, self._transport = self._transport, None
        self._write = self._buffered = None
        if transport is not None and not transport.is_closing():
            # abort, not close: close() drains with tcdrain in an executor thread, which blocks forever
            # on a device that stopped reading and would hang the daemon's exit. Lines already passed to
            # write() were handed to the kernel at once unless the device was not reading anyway.
            transport.abort()

    def _expired(self, lines: list[bytes]) -> None:
        self._counts["expired"] += len(lines)
        if self._on_expired is not None:
            cut = len(self._newline)
            texts = [line.hex(" ") if self._binary else line[:-cut].decode("utf-8", "replace")
                     for line in lines]
            try:
                self._on_expired(self.name, texts)
            except Exception:
                log.exception("serial %s: on_expired callback failed", self.name)

    def _set_up(self, up: bool) -> None:
        if up == self._up:
            return
        self._up = up
        report_state(self._on_state, self.name, up, log)

    def _deliver(self, line: str) -> None:
        try:
            self._on_line(line)
        except Exception:
            log.exception("serial %s: on_line callback failed", self.name)

    def _guarded(self, callback: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def deliver(data: bytes) -> None:
            try:
                callback(data)
            except Exception:
                log.exception("serial %s: on_bytes callback failed", self.name)
        return deliver

    @property
    def stats(self) -> dict[str, int]:
        """A fresh copy of the counters (the framer's included)."""
        f = self._framer
        return {**self._counts, "lines_in": f.lines, "overlong_dropped": f.overlong,
                "decode_errors": f.decode_errors, "bytes_in": f.bytes_in if isinstance(f, ByteFeed) else 0}
