"""Pending ``expect:`` replies: a command's action waits for a device line and answers its sender.

Contract: ``add`` after a command with an ``expect:`` action was written; every device line first goes
to ``match`` (a line that completes an expect is not telemetry); ``expire(now)`` at ``next_deadline()``
drops the ones that timed out. At most ``MAX_PENDING`` per device: beyond it the oldest is dropped
(never a growing queue). Pure: the caller passes monotonic time in.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass

from bridge.core.engine.actions import CompiledAction, SendSignal
from bridge.core.engine.telemetry import convert
from bridge.core.model import MqttAction

#: Pending replies kept per device.
MAX_PENDING = 16


@dataclass(slots=True)
class PendingExpect:
    pattern: re.Pattern[str]
    deadline: float
    reply: str | None
    to: str | None

    def answer(self, m: re.Match[str]) -> SendSignal | None:
        """The reply signal for a matching line (None when the rule asks for none or has no sender).
        Named groups become JSON fields, numbers converted as for telemetry ("87" -> 87)."""
        if self.reply is None or self.to is None:
            return None
        groups = {k: None if v is None else convert(v) for k, v in m.groupdict().items()}
        data = json.dumps(groups if groups else {"line": m.group(0)}, separators=(",", ":"),
                          ensure_ascii=False)
        return SendSignal(self.reply, data, self.to)


class ExpectTable:
    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, deque[PendingExpect]] = {}

    def add(self, action: CompiledAction, to: str | None, now: float) -> None:
        """``action`` (with an expect) was written for sender ``to``: wait for its reply line."""
        expect = action.action.expect if not isinstance(action.action, MqttAction) else None
        assert expect is not None and action.expect is not None
        pending = self._pending.setdefault(action.action.device, deque(maxlen=MAX_PENDING))
        pending.append(PendingExpect(action.expect, now + expect.timeout_ms / 1000.0, expect.reply, to))

    def match(self, device: str, line: str) -> tuple[PendingExpect, re.Match[str]] | None:
        """The oldest pending expect of ``device`` that ``line`` fully matches (removed), or None."""
        pending = self._pending.get(device)
        if pending:
            for i, expect in enumerate(pending):
                m = expect.pattern.fullmatch(line)
                if m is not None:
                    del pending[i]
                    return expect, m
        return None

    def expire(self, now: float) -> int:
        """Drop the expects whose deadline passed; returns how many."""
        n = 0
        for pending in self._pending.values():
            while pending and pending[0].deadline <= now:
                pending.popleft()
                n += 1
        return n

    def next_deadline(self) -> float | None:
        return min((p[0].deadline for p in self._pending.values() if p), default=None)
