"""`sigbridge send`: one signal from the command line, optionally waiting for the bridge's answer.

Exit statuses: 0 when the hub acked the signal (with ``--ack``: and the bridge answered ``applied`` or
``clamped``); 1 with ``error CODE: message`` on stderr when the hub refused it (or the connection), or,
with ``--ack``, when the bridge refused the command (its ``bridge.ack`` is printed either way);
124 with ``--ack`` when no answer came within ``--timeout``; 2 for a missing connection setting.

Matching the answer: a ``bridge.ack`` carries the command's ``id`` (``docs/config.md``). With ``--ack``,
JSON object data without an ``id`` gets a random one (``sigbridge-`` and 16 hex digits); data that
already has one keeps it. Data that is not a JSON object is refused by any rule, and that ack names
the bridge's sequence number instead, so then the first ``bridge.ack`` that arrives is taken. Only an
ack from a bridge counts: a connection whose token data is ``bridge`` or ``bridge:NAME``, which only
the holder of the API secret can mint (``docs/protocol.md``); with ``--to C``, only one from ``C``.
The connection stays open until the answer (or the timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from typing import Any

from bridge.client import SessionClient, SignalError
from bridge.core.client.hubs import hub_urls
from bridge.core.engine.decisions import Decision
from bridge.core.engine.params import ID_KEY, decode_data
from bridge.core.events import Signal
from bridge.core.signal import is_bridge_data

ACK = "bridge.ack"
#: The exit status when no answer came in time (as timeout(1)).
EXIT_TIMEOUT = 124
_WROTE = frozenset({Decision.APPLIED.value, Decision.CLAMPED.value})


def connection_settings(args: argparse.Namespace) -> tuple[str, str, str] | None:
    """(url, session, token) from the flags (which default to the environment), or None after
    printing which one is missing or wrong. ``url`` is every hub URL given (``--url`` repeated, or
    commas; else SIGBRIDGE_URL), comma-separated, as SessionClient takes it."""
    url = ",".join(args.url) if getattr(args, "url", None) else os.environ.get("SIGBRIDGE_URL")
    missing = [f"--{name} (or SIGBRIDGE_{name.upper()})" for name, value in
               (("url", url), ("session", getattr(args, "session", None)),
                ("token", getattr(args, "token", None))) if not value]
    if missing:
        print(f"error: missing connection setting: {', '.join(missing)}", file=sys.stderr)
        return None
    assert url is not None
    try:
        urls = hub_urls(url)
    except ValueError as exc:
        print(f"error: --url: {exc}", file=sys.stderr)
        return None
    bad = [u for u in urls if not u.startswith(("ws://", "wss://"))]
    if bad:
        print(f"error: --url: expected ws:// or wss:// URLs, got {', '.join(bad)}", file=sys.stderr)
        return None
    return ",".join(urls), args.session, args.token


def send_main(args: argparse.Namespace) -> int:
    settings = connection_settings(args)
    if settings is None:
        return 2
    data, ack_id = with_ack_id(args.data) if args.ack else (args.data, None)
    try:
        return asyncio.run(_send(*settings, args.type, data, args.to, not args.no_retry,
                                 args.timeout if args.ack else None, ack_id))
    except SignalError as e:
        print(f"error {e.code}: {e.message}", file=sys.stderr)
        return 1


def with_ack_id(data: str) -> tuple[str, str | int | None]:
    """``data`` with a correlation id, and that id (None when the data is not a JSON object)."""
    try:
        obj = decode_data(data)
    except ValueError:
        return data, None
    if not isinstance(obj, dict):
        return data, None
    existing = obj.get(ID_KEY)
    if isinstance(existing, str | int) and not isinstance(existing, bool):
        return data, existing
    obj[ID_KEY] = f"sigbridge-{secrets.token_hex(8)}"
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False), obj[ID_KEY]


async def _send(url: str, session: str, token: str, type_: str, data: str, to: str | None,
                retry: bool, ack_timeout: float | None, ack_id: str | int | None) -> int:
    async with SessionClient(url, session, token) as client:
        answers = _answers(client, to, ack_id) if ack_timeout is not None else None
        try:
            await client.signal(type=type_, data=data, to=to, retry_after_reconnect=retry)
        except BaseException:
            if answers is not None:
                answers.cancel()
            raise
        if answers is None:
            return 0
        try:
            async with asyncio.timeout(ack_timeout):
                ack = await answers
        except TimeoutError:
            print(f"error: no {ACK} within {ack_timeout:g} s (is a bridge in the session, and does "
                  f"the rule for {type_!r} have ack: true?)", file=sys.stderr)
            return EXIT_TIMEOUT
        finally:
            answers.cancel()
    print(json.dumps(ack, separators=(",", ":"), ensure_ascii=False), flush=True)
    return 0 if ack.get("status") in _WROTE else 1


def _answers(client: SessionClient, to: str | None, ack_id: str | int | None) -> asyncio.Task[dict[str, Any]]:
    """A task that ends with the data of the first matching ``bridge.ack`` (started before the send, so
    an answer faster than the hub's ack is not missed: events are queued from the connect on)."""

    async def first() -> dict[str, Any]:
        async for event in client.events():
            if not isinstance(event, Signal) or event.type != ACK:
                continue
            sender = client.connections.get(event.from_id) if event.from_id is not None else None
            if sender is None or not is_bridge_data(sender.data) or (to is not None and sender.id != to):
                continue
            try:
                body = json.loads(event.data)
            except ValueError:
                continue
            if isinstance(body, dict) and (ack_id is None or body.get("id") == ack_id):
                return body
        raise SignalError(500, "left the session before the bridge answered")

    return asyncio.create_task(first())
