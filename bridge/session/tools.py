"""`sigbridge send` and `sigbridge listen`: a session client on the command line.

send: exit 0 when the hub acked the signal; 1 with ``error CODE: message`` on stderr when refused
(or the hub refused the connection); 2 for a missing connection setting.
listen: one JSON object per line on stdout, flushed per line, until SIGINT/SIGTERM (exit 0); 1 when
the session ended otherwise (forced out, gave up reconnecting).
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
from typing import Any, TextIO

from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionEvent,
    Signal,
)
from bridge.session.client import SessionClient, SignalError


def _settings(args: argparse.Namespace) -> tuple[str, str, str] | None:
    """(url, session, token) from the flags (which default to the environment), or None after
    printing which one is missing."""
    missing = [f"--{name} (or SIGBRIDGE_{name.upper()})" for name in ("url", "session", "token")
               if not getattr(args, name, None)]
    if missing:
        print(f"error: missing connection setting: {', '.join(missing)}", file=sys.stderr)
        return None
    return args.url, args.session, args.token


def send_main(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    try:
        asyncio.run(_send(*settings, args.type, args.data, args.to, not args.no_retry))
    except SignalError as e:
        print(f"error {e.code}: {e.message}", file=sys.stderr)
        return 1
    return 0


async def _send(url: str, session: str, token: str, type_: str, data: str, to: str | None,
                retry: bool) -> None:
    async with SessionClient(url, session, token) as client:
        await client.signal(type=type_, data=data, to=to, retry_after_reconnect=retry)


def listen_main(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    # Compiled once here, not per signal.
    match = re.compile(fnmatch.translate(args.type)).match if args.type else None
    try:
        return asyncio.run(_listen(*settings, match, sys.stdout))
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


async def _listen(url: str, session: str, token: str, match: Any, out: TextIO) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SessionClient(url, session, token) as client:

        async def pump() -> int:
            async for event in client.events():
                if isinstance(event, Signal) and match is not None and match(event.type) is None:
                    continue
                out.write(json.dumps(event_to_json(event), ensure_ascii=False) + "\n")
                out.flush()
                if isinstance(event, Disconnected):
                    print(f"error: left the session: {event.reason}", file=sys.stderr)
            return 1  # events() only ends after Disconnected

        pumping = asyncio.create_task(pump())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({pumping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if pumping.done():
            return pumping.result()
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        return 0
