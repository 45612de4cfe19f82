"""`sigbridge listen`: the session's events as JSON lines on stdout (flushed per line).

``--type GLOB`` keeps the events whose signal type - or, for a connection event, its event name
(``connectionCreated``, ``connectionDestroyed``, ``sessionReconnecting``, ...) - matches. ``--count N``
ends after N printed events, ``--timeout S`` after S seconds. Exit 0 on SIGINT/SIGTERM, at the count, or
at the timeout when no count was asked; 124 when the timeout came before the count; 1 when the session
ended otherwise (forced out, gave up reconnecting). A reader that goes away (``| head -1``) ends it
quietly (``bridge.cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from bridge.client import SessionClient, SignalError
from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionEvent,
    Signal,
)
from bridge.tools.send import EXIT_TIMEOUT, connection_settings


def listen_main(args: argparse.Namespace) -> int:
    settings = connection_settings(args)
    if settings is None:
        return 2
    # Compiled once here, not per event.
    match = re.compile(fnmatch.translate(args.type)).match if args.type else None
    try:
        return asyncio.run(_listen(*settings, match, args.count, args.timeout, sys.stdout))
    except SignalError as e:
        print(f"error {e.code}: {e.message}", file=sys.stderr)
        return 1


def event_to_json(event: SessionEvent) -> dict[str, Any]:
    """The JSON line printed for an event (signals keep the wire field names)."""
    if isinstance(event, Signal):
        return {"type": event.type, "data": event.data, "from": event.from_id, "seq": event.seq,
                "ts": event.ts}
    if isinstance(event, ConnectionCreated):
        return {"event": "connectionCreated", "connection": event.connection.to_wire()}
    if isinstance(event, ConnectionDestroyed):
        return {"event": "connectionDestroyed", "connection": event.connection.to_wire(),
                "reason": event.reason}
    if isinstance(event, Reconnecting):
        return {"event": "sessionReconnecting"}
    if isinstance(event, Reconnected):
        return {"event": "sessionReconnected"}
    return {"event": "sessionDisconnected", "reason": event.reason}


async def _listen(url: str, session: str, token: str, match: Callable[[str], Any] | None,
                  count: int | None, timeout: float | None, out: TextIO) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SessionClient(url, session, token) as client:

        async def pump() -> int:
            printed = 0
            async for event in client.events():
                line = event_to_json(event)
                if isinstance(event, Disconnected):
                    print(f"error: left the session: {event.reason}", file=sys.stderr)
                if match is not None and match(line.get("type") or line["event"]) is None:
                    continue
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
                out.flush()
                printed += 1
                if count is not None and printed >= count:
                    return 0
            return 1  # events() only ends after Disconnected

        pumping = asyncio.create_task(pump())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({pumping, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if pumping.done():
            return pumping.result()
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        timed_out = not stop.is_set()
        return EXIT_TIMEOUT if timed_out and count is not None else 0
