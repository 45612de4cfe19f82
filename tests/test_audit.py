"""The audit log on real files: JSON lines, flushing, rotation, I/O errors; and the record format."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from bridge.adapters import audit as audit_mod
from bridge.adapters.audit import AuditLog
from bridge.core.engine.decisions import (
    REFUSALS,
    AuditRecord,
    Decision,
    MqttWrite,
    SerialWrite,
    Verdict,
    parse_decision,
)
from bridge.core.model import Audit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rec(i: int = 0, decision: Decision = Decision.APPLIED) -> AuditRecord:
    return AuditRecord(time=1_795_000_000.5 + i, sender_id=f"c{i}", sender_data='{"name":"ann"}',
                       type="robot.move", decision=decision,
                       written=(SerialWrite("base", f"M {i} 0"),) if decision.wrote else ())


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------------------------------------------------------------- the record


def test_record_is_one_compact_json_line() -> None:
    r = AuditRecord(time=1_795_882_524.25, sender_id="conn-1", sender_data='{"n":"ann"}',
                    type="arm.grip", decision=Decision.CLAMPED, reason="force clamped to 100",
                    written=(MqttWrite("arm", "arm/grip/set", '{"force":100}'), SerialWrite("b", "S")))
    text = r.to_json()
    assert "\n" not in text and ", " not in text
    assert json.loads(text) == {
        "time": "2026-11-28T16:15:24.250Z", "from": "conn-1", "from_data": '{"n":"ann"}',
        "type": "arm.grip", "decision": "clamped", "reason": "force clamped to 100",
        "written": [{"device": "arm", "topic": "arm/grip/set", "payload": '{"force":100}'},
                    {"device": "b", "line": "S"}]}


def test_hostile_fields_cannot_forge_a_second_line() -> None:
    evil = 'x"}\n{"decision":"applied"\u2028\u2029\x85\r'
    r = AuditRecord(time=0, sender_id=None, sender_data=evil, type=evil, decision=Decision.REJECTED,
                    reason=evil)
    text = r.to_json()
    assert text.isascii() and len(text.splitlines()) == 1
    back = json.loads(text)
    assert back["from"] is None and back["from_data"] == evil and back["written"] == []


def test_decision_vocabulary() -> None:
    assert [d.value for d in Decision] == ["applied", "clamped", "rejected", "stale", "estopped",
                                           "no_lease", "rate_limited", "unauthorised", "device_down",
                                           "overloaded"]
    assert frozenset(Decision) - {Decision.APPLIED, Decision.CLAMPED} == REFUSALS
    assert parse_decision("stale") is Decision.STALE
    with pytest.raises(ValueError, match="expected one of: applied"):
        parse_decision("maybe")
    with pytest.raises(ValueError, match="not a refusal"):
        Verdict(Decision.APPLIED)


# ---------------------------------------------------------------- the writer


def test_writes_json_lines_and_appends_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.log"           # the directory is created
    with AuditLog(str(path)) as audit:
        for i in range(3):
            audit.write(rec(i))
    with AuditLog(str(path)) as audit:
        audit.write(rec(3, Decision.STALE))
    got = lines(path)
    assert [g["from"] for g in got] == ["c0", "c1", "c2", "c3"]
    assert got[3]["decision"] == "stale" and got[3]["written"] == []
    assert got[0]["written"] == [{"device": "base", "line": "M 0 0"}]


def test_each_record_reaches_the_file_without_a_flush_from_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(str(path))
    audit.write(rec(0))
    assert audit.flush()                             # waits for the writer thread only
    assert len(lines(path)) == 1                    # on disk while the log is still open
    audit.write(rec(1))
    audit.close()
    audit.close()                                    # idempotent
    audit.write(rec(2))                              # after close: ignored, not raised
    assert len(lines(path)) == 2 and audit.records == 2


def _stalled_disk(tmp_path: Path) -> tuple[Path, int]:
    """A log path whose writes block: a FIFO nobody reads (its 64 KiB pipe buffer soon fills)."""
    fifo = tmp_path / "audit.log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)    # lets the log open it for writing
    return fifo, reader


def _read_all(fd: int, until: int) -> bytes:
    got = b""
    os.set_blocking(fd, True)
    while got.count(b"\n") < until:
        got += os.read(fd, 1 << 16)
    return got


async def test_a_stalled_disk_never_blocks_the_event_loop(tmp_path: Path) -> None:
    fifo, reader = _stalled_disk(tmp_path)
    audit = AuditLog(str(fifo))
    n = 2_000                                        # ~400 KiB: far more than the pipe takes
    try:
        for i in range(n):                           # with the writer blocked, all of these return
            audit.write(rec(i))
        assert n < audit_mod.QUEUE_RECORDS
        await asyncio.sleep(0)                       # the loop still turns
        assert audit.records == n and audit.dropped == 0
        assert not audit.flush(timeout=0.2)          # the writer is stuck on the full pipe
        got = await asyncio.to_thread(_read_all, reader, n)   # the disk "recovers": nothing was lost
        assert [json.loads(x)["from"] for x in got.splitlines()] == [f"c{i}" for i in range(n)]
    finally:
        audit.close()
        os.close(reader)


def test_a_stalled_disk_costs_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(audit_mod, "QUEUE_RECORDS", 50)
    fifo, reader = _stalled_disk(tmp_path)
    audit = AuditLog(str(fifo))
    try:
        for i in range(2_000):
            audit.write(rec(i))
        # The writer took some (the pipe buffer, the one it is stuck on); the queue holds 50; the rest
        # are dropped, counted and reported once.
        assert audit.dropped > 0 and audit.records + audit.dropped == 2_000
        assert audit.records <= 50 + 64 * 1024 // len(rec(0).to_json()) + 2
        assert caplog.text.count("records behind") == 1
        got = _read_all(reader, audit.records)
        assert len(got.splitlines()) == audit.records
    finally:
        audit.close()
        os.close(reader)


def test_rotation_keeps_n_backups_and_never_splits_a_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    one = len(rec(0).to_json()) + 1
    audit = AuditLog(str(path), max_bytes=3 * one + 5, backups=2)
    for i in range(10):
        audit.write(rec(i))
    audit.close()
    assert audit.rotations == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.1", "audit.log.2"]
    assert [g["from"] for g in lines(path)] == ["c9"]
    assert [g["from"] for g in lines(tmp_path / "audit.log.1")] == ["c6", "c7", "c8"]
    assert [g["from"] for g in lines(tmp_path / "audit.log.2")] == ["c3", "c4", "c5"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 3 * one + 5


def test_rotation_counts_what_is_already_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("x" * 100 + "\n")
    audit = AuditLog(str(path), max_bytes=120, backups=1)
    audit.write(rec(0))
    audit.close()
    assert (tmp_path / "audit.log.1").read_text() == "x" * 100 + "\n"
    assert len(lines(path)) == 1


def test_zero_backups_drops_old_content(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    one = len(rec(0).to_json()) + 1
    audit = AuditLog(str(path), max_bytes=one, backups=0)
    for i in range(3):
        audit.write(rec(i))
    audit.close()
    assert os.listdir(tmp_path) == ["audit.log"]
    assert [g["from"] for g in lines(path)] == ["c2"]


def test_from_config(tmp_path: Path) -> None:
    audit = AuditLog.from_config(Audit(path=str(tmp_path / "a.log"), max_bytes=1000, backups=3))
    assert (audit.max_bytes, audit.backups) == (1000, 3)
    audit.close()


def test_cannot_open_at_start_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        AuditLog(str(blocker / "audit.log"))


def test_io_errors_are_counted_never_raised_and_the_log_recovers(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # A full disk, for real: the log path points at /dev/full, where every write fails with ENOSPC.
    path = tmp_path / "audit.log"
    path.symlink_to("/dev/full")
    clock = FakeClock()
    audit = AuditLog(str(path), clock=clock)
    audit.write(rec(0))                              # written at once: ENOSPC, counted, not raised
    audit.write(rec(1))                              # reopens /dev/full: fails again
    assert audit.flush()
    assert audit.errors == 2
    assert caplog.text.count("No space left on device") == 1   # logged at most every 10 s
    path.unlink()                                    # space again: a plain file
    clock.now = 20.0
    audit.write(rec(2))
    audit.close()
    assert [g["from"] for g in lines(path)] == ["c2"]
    assert audit.errors == 2


def test_bad_backups() -> None:
    with pytest.raises(ValueError):
        AuditLog("/nonexistent/x", backups=-1)
