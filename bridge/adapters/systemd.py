"""sd_notify without libsystemd: tell systemd we are ready, alive, reloading or stopping.

The protocol (sd_notify(3)): datagrams of ``KEY=VALUE`` lines sent to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` - a path, or an abstract socket when it starts with ``@``. With ``WatchdogSec=`` set,
systemd passes ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, the process meant to ping) and kills the
service unless ``WATCHDOG=1`` arrives within that interval; we ping at half of it.

:func:`watchdog_loop` pings *from the event loop*: if the loop is stuck (a blocking call, a busy
handler), the pings stop and systemd restarts the daemon - which is the point.

Everything is a no-op when ``$NOTIFY_SOCKET`` is unset (run by hand, in tests, under another
supervisor). Send errors are logged at debug level and otherwise ignored: losing systemd must not take
the bridge down with it (a missing watchdog ping is then systemd's business).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """A handle on the notify socket. Build it with :meth:`from_env`; close it with :meth:`close`."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        """``address``: a filesystem path, an abstract address as bytes starting with NUL, or None
        (disabled). ``watchdog_usec``: systemd's WatchdogSec in microseconds, None when off."""
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` (from ``os.environ`` by
        default). The watchdog is on only when WATCHDOG_USEC is a positive integer and WATCHDOG_PID,
        when set, is this process (a child inheriting the variables must not ping for its parent)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address: str | bytes | None
        if not raw:
            address = None
        elif raw.startswith("@"):
            address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            address = raw
        else:
            # systemd also knows vsock: addresses; a bridge never runs where that is needed.
            log.warning("NOTIFY_SOCKET=%r is not a unix socket address; not notifying systemd", raw)
            address = None
        usec: int | None = None
        try:
            usec = int(env.get("WATCHDOG_USEC", "")) or None
        except ValueError:
            usec = None
        if usec is not None and usec < 0:
            usec = None
        pid = env.get("WATCHDOG_PID")
        if usec is not None and pid and pid.strip() != str(os.getpid()):
            usec = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of WatchdogSec, None when the watchdog is off."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 2_000_000

    def notify(self, state: str) -> bool:
        """Send ``state`` (``KEY=VALUE`` lines) as one datagram; True when it was sent."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto(state.encode("utf-8", "replace"), self.address)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", state, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete."""
        return self.notify("READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}")

    def reloading(self) -> bool:
        """A reload (SIGHUP) has started; send :meth:`ready` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status`` (newlines become spaces)."""
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self) -> bool:
        """Shutdown has begun (safe actions are being sent)."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


async def watchdog_loop(notifier: Notifier) -> None:
    """Ping systemd's watchdog from the event loop every ``watchdog_interval_s`` until cancelled.
    Returns at once when the watchdog is off, so it can sit in a TaskGroup unconditionally."""
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
