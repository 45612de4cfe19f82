"""`sigbridge replay -c bridge.yaml FILE [--fast] [--expect FILE]`: recorded signals through the real
engine (``bridge.tools.offline``), without a device; every device write printed as a JSON line.

Recordings (JSON lines; blank lines ignored; any other line is an error naming its line number):

- ``sigbridge listen`` output: signals ``{"type","data","from","seq","ts"}`` and connection events.
  ``connectionCreated`` gives a sender's role and data (others get ``--role``); a bridge's own
  connection (data ``bridge``/``bridge:NAME``) and its signals are skipped, ``connectionDestroyed``
  is passed on (it can end a lease). Time is the hub's ``ts``.
- an audit log (``audit:``): records ``{"time","from","from_data","type","data",...}``; a record
  without ``data`` (written before it was recorded) cannot be replayed and is an error.

The engine's clock follows the recording: each signal arrives at its own time, exactly as fresh as
when it was recorded (the stale guard sees its age as 0), and timers (watchdogs, lease expiry) fire
in between at their due time and after the last signal. Without ``--fast`` the replay also waits in
real time as recorded; the writes are the same either way.

Output, one line per write: ``{"t": S, "device": D, "line": L}`` or ``{"t": S, "device": D, "topic":
T, "payload": P, "qos": Q}``, ``t`` in seconds since the first signal. ``--expect FILE`` compares the
writes (``t`` ignored) with a file of such lines - or with an audit log, comparing its ``written``
lists with the writes that signals caused (timer writes are not audited). Exit 0 when equal, 1 with
the first difference on stderr, 2 for a config or recording error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from bridge.config import load_or_report
from bridge.core.events import Signal
from bridge.core.signal import Connection, is_bridge_data
from bridge.tools.offline import OfflineBridge, write_obj

#: Timers still due after the last signal are run for at most this long (seconds of recording time).
TAIL_S = 60.0


class RecordingError(ValueError):
    """A recording line that is not a signal, a connection event or an audit record."""


@dataclass(frozen=True, slots=True)
class Recorded:
    ms: int
    sender: Connection | None
    signal: Signal | None = None           # None: a connection left (``sender``)


def replay_main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 2
    try:
        items = list(read_recording(_lines(args.recording), args.role))
        expected, audited = read_expected(_lines(args.expect)) if args.expect else (None, False)
    except (OSError, RecordingError) as e:
        print(f"sigbridge replay: {e}", file=sys.stderr)
        return 2
    writes = replay(OfflineBridge(config), items, fast=args.fast, out=sys.stdout,
                    signals_only=audited)
    return 0 if expected is None else compare(expected, writes)


def _lines(name: str) -> Iterator[tuple[int, str]]:
    with (sys.stdin if name == "-" else Path(name).open(encoding="utf-8")) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line


def _obj(n: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise RecordingError(f"line {n}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise RecordingError(f"line {n}: not a JSON object")
    return obj


def read_recording(lines: Iterable[tuple[int, str]], role: str) -> Iterator[Recorded]:
    """The signals (and departures) of a listen recording or an audit log, in order."""
    known: dict[str, Connection] = {}
    for n, line in lines:
        obj = _obj(n, line)
        event = obj.get("event")
        if event in ("connectionCreated", "connectionDestroyed"):
            conn = _connection(n, obj.get("connection"))
            if event == "connectionCreated":
                known[conn.id] = conn
            elif known.pop(conn.id, None) is not None and not is_bridge_data(conn.data):
                yield Recorded(_int(n, obj.get("ts", 0)), conn)
            continue
        if event is not None:
            continue   # sessionReconnecting & co: the listener's own link, not the bridge's
        type_, data = obj.get("type"), obj.get("data")
        if not isinstance(type_, str) or not isinstance(data, str):
            if "decision" in obj and "data" not in obj:
                raise RecordingError(f"line {n}: an audit record without 'data' cannot be replayed")
            raise RecordingError(f"line {n}: expected a signal (type, data) or a connection event")
        from_id = obj.get("from")
        if from_id is not None and not isinstance(from_id, str):
            raise RecordingError(f"line {n}: 'from' must be a connection id or null")
        if "decision" in obj:     # an audit record
            ms = _audit_ms(n, obj.get("time"))
            from_data = obj.get("from_data")
            sender = None if from_id is None else Connection(from_id, str(from_data or ""), role, 0)
        else:
            ms = _int(n, obj.get("ts"))
            sender = None if from_id is None else known.get(from_id) or Connection(from_id, "", role, 0)
            if sender is not None and is_bridge_data(sender.data):
                continue   # what the bridge itself said
        yield Recorded(ms, sender, Signal(type_, data, from_id, _int(n, obj.get("seq", 0)), ms))


def _connection(n: int, raw: object) -> Connection:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise RecordingError(f"line {n}: a connection event without a connection id")
    return Connection(raw["id"], str(raw.get("data", "")), str(raw.get("role", "publisher")), 0)


def _int(n: int, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordingError(f"line {n}: expected an integer, got {value!r}")
    return value


def _audit_ms(n: int, value: object) -> int:
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise RecordingError(f"line {n}: 'time' is not an ISO time: {value!r}") from None


def read_expected(lines: Iterable[tuple[int, str]]) -> tuple[list[dict[str, Any]], bool]:
    """Expected writes (``t`` dropped) and whether they came from an audit log."""
    writes: list[dict[str, Any]] = []
    audited = False
    for n, line in lines:
        obj = _obj(n, line)
        if "written" in obj:
            audited = True
            if not isinstance(obj["written"], list):
                raise RecordingError(f"line {n}: 'written' must be a list")
            writes.extend(_comparable(w) for w in obj["written"])
        elif "device" in obj:
            writes.append(_comparable(obj))
        else:
            raise RecordingError(f"line {n}: expected a write (device, line or topic/payload) "
                                 "or an audit record")
    return writes, audited


def _comparable(obj: object) -> dict[str, Any]:
    """A write without the fields an audit log lacks (t, qos)."""
    return {k: v for k, v in obj.items() if k not in ("t", "qos")} if isinstance(obj, dict) else {"?": obj}


def replay(offline: OfflineBridge, items: list[Recorded], *, fast: bool, out: TextIO,
           signals_only: bool = False) -> list[dict[str, Any]]:
    """Run ``items``, print every write, return them (for comparison: without ``t``/``qos``; only those
    signals caused when ``signals_only``)."""
    engine = offline.engine
    if not items:
        return []
    start_ms = items[0].ms
    wall0 = time.monotonic()
    got: list[dict[str, Any]] = []

    def emit(at: float, writes: Iterable[Any], from_signal: bool) -> None:
        for w in writes:
            obj = write_obj(w)
            out.write(json.dumps({"t": round(at, 3), **obj}, ensure_ascii=False) + "\n")
            if from_signal or not signals_only:
                got.append(_comparable(obj))

    def run_timers(until: float) -> None:
        deadline = engine.next_deadline()
        while deadline is not None and deadline <= until:
            emit(deadline, offline.tick(deadline).writes, False)
            deadline = engine.next_deadline()

    for item in items:
        at = max(0.0, (item.ms - start_ms) / 1000.0)
        run_timers(at)
        if not fast:
            delay = wall0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if item.signal is None:
            assert item.sender is not None
            emit(at, offline.connection_destroyed(item.sender, at).writes, True)
        else:
            emit(at, offline.signal(item.signal, item.sender, at, item.ms).writes, True)
    run_timers((items[-1].ms - start_ms) / 1000.0 + TAIL_S)
    out.flush()
    return got


def compare(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> int:
    for i, (e, g) in enumerate(zip(expected, got, strict=False), 1):
        if e != g:
            print(f"sigbridge replay: write {i} differs: expected {json.dumps(e)}, got {json.dumps(g)}",
                  file=sys.stderr)
            return 1
    if len(expected) != len(got):
        i = min(len(expected), len(got))
        what = (f"missing write {i + 1}: expected {json.dumps(expected[i])}" if len(expected) > len(got)
                else f"unexpected write {i + 1}: {json.dumps(got[i])}")
        print(f"sigbridge replay: {what} ({len(got)} writes, {len(expected)} expected)", file=sys.stderr)
        return 1
    print(f"sigbridge replay: {len(got)} writes as expected", file=sys.stderr)
    return 0
