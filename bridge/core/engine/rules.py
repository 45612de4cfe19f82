"""Signal type -> rule matching: exact types or globs (``robot.*``), first match in file order wins.

Contract: ``RuleTable(rules)`` precompiles everything (a dict for exact types, one regex per glob);
``table.match(type)`` is a dict lookup plus, only when globs come before the exact hit (or there is
no exact hit), one precompiled regex match per such glob. Unmatched types are counted in
``table.unmatched``. Globs are case-sensitive fnmatch patterns (``*``, ``?``, ``[...]``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from bridge.core.model import Rule

_NO_LIMIT = 1 << 62


class RuleTable:
    __slots__ = ("_exact", "_globs", "unmatched")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._exact: dict[str, tuple[int, Rule]] = {}
        self._globs: list[tuple[int, re.Pattern[str], Rule]] = []
        for position, rule in enumerate(rules):
            if rule.is_glob:
                self._globs.append((position, re.compile(fnmatch.translate(rule.signal)), rule))
            else:
                # First one wins: a later duplicate can never match.
                self._exact.setdefault(rule.signal, (position, rule))
        self.unmatched = 0

    def match(self, type_: str) -> Rule | None:
        hit = self._exact.get(type_)
        limit = hit[0] if hit is not None else _NO_LIMIT
        for position, pattern, rule in self._globs:
            if position >= limit:
                break
            if pattern.match(type_) is not None:
                return rule
        if hit is not None:
            return hit[1]
        self.unmatched += 1
        return None
