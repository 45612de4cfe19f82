"""Process-level guards of the session hub: accept() errors counted and logged at most once per
interval (never a traceback per attempt), the file-descriptor limit raised to what the process may
use, and a logger gate for refusals that a hostile client can cause at will.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from bridge.core.hub.limits import LogGate

log = logging.getLogger("bridge.hub")

#: At most one log line per kind of refusal (and per accept-error) in this many seconds.
LOG_INTERVAL_S = 10.0


class QuietLog:
    """``warn(key, fmt, *args)``: logs a warning of kind ``key`` at most once per ``interval_s``, with
    how many were left out since the last one (a client refused a thousand times costs one line)."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self._gate = LogGate(interval_s)

    def warn(self, key: str, fmt: str, *args: object) -> None:
        suppressed = self._gate.allow(key, time.monotonic())
        if suppressed is None:
            return
        if suppressed:
            log.warning(fmt + " (%d more like it not logged)", *args, suppressed)
        else:
            log.warning(fmt, *args)


def install_accept_guard(loop: asyncio.AbstractEventLoop, on_error: Callable[[], None],
                         quiet: QuietLog) -> None:
    """Route the loop's "socket.accept() out of system resource" reports (EMFILE, ENFILE, ENOBUFS,
    ENOMEM: asyncio then pauses accepting for a second) to ``on_error`` and one quiet line, instead of
    a traceback each time; everything else goes to the handler that was there before."""
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            on_error()
            exc = context.get("exception")
            quiet.warn("accept", "cannot accept connections: %s (file descriptors or memory exhausted; "
                       "see LimitNOFILE in docs/security.md)", exc)
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (what systemd's LimitNOFILE= or the shell's
    ``ulimit -Hn`` allows); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
