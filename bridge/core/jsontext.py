"""The one strict JSON decoder for text that comes from outside (signal data, MQTT payloads).

``loads(text)`` is ``json.loads`` that refuses the NaN / Infinity / -Infinity literals (JSON has no
such numbers, and a NaN compares false with every limit, so it would slip through range checks) and
refuses nesting deeper than ``MAX_DEPTH`` with the same ``ValueError`` as any other bad JSON, never a
``RecursionError`` that would end the caller (``"[" * 4000`` fits in an 8 KB signal).

With orjson installed (the ``fast`` extra) it decodes first, at 0.2-0.6x the stdlib's cost (issue 16);
the stdlib stays the reference and the fallback, and the answer is the same whichever is installed
(tests/test_jsontext_codecs.py runs both): orjson is trusted only where it provably gives the stdlib's
value, and everything it refuses is decided again by the stdlib. Where they differ:

- orjson refuses what the stdlib accepts (lone surrogate escapes ``"\\ud800"``, numbers that overflow
  a double such as ``1e400``): the stdlib decides;
- orjson turns integers beyond 64 bits into floats, the stdlib keeps them exact: text with a run of
  19 digits or more goes to the stdlib;
- orjson accepts 1,024 levels, the stdlib as many as its recursion limit allows from where it is
  called: both are held to ``MAX_DEPTH``.

``dumps(value)`` is the compact encoder of the engine's own JSON (telemetry data): ``json.dumps``
with ``separators=(",", ":")``, ``ensure_ascii=False``, ``allow_nan=False``; with orjson where it
gives the same text-level contract (NaN and infinities refused with ValueError, not written as null).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

try:
    import orjson
    #: orjson is installed and used (the ``fast`` extra).
    FAST = True
except ImportError:     # the stdlib alone: same behaviour, slower
    FAST = False

#: Deepest nesting accepted (arrays and objects); deeper is a ValueError with either codec.
MAX_DEPTH = 512

_BIG_INT = re.compile(r"[0-9]{19}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _depth(value: Any) -> int:
    """Nesting depth of a decoded value (iterative: no recursion on hostile input)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d)
        stack.extend((item, d + 1) for item in v if isinstance(item, dict | list))
    return deepest


def std_loads(text: str) -> Any:
    """The stdlib decoder with this module's rules (the reference; what ``loads`` is without orjson)."""
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return _checked_depth(text, value)


def _checked_depth(text: str, value: Any) -> Any:
    # Deeper than MAX_DEPTH needs more than MAX_DEPTH brackets: two C-speed counts spare the walk.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _fast_loads(text: str) -> Any:
    if _BIG_INT.search(text) is not None:
        return std_loads(text)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return std_loads(text)
    return _checked_depth(text, value)


def loads(text: str) -> Any:
    """Decode ``text``; raises ValueError (json.JSONDecodeError is one) on anything that is not JSON."""
    return _fast_loads(text) if FAST else std_loads(text)


def std_dumps(value: Any) -> str:
    """The stdlib encoder (the reference; what ``dumps`` is without orjson)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``; ValueError for NaN or an infinity, TypeError for what JSON
    cannot hold (as ``json.dumps``). Keys in insertion order; floats may be spelt differently by
    the two codecs (``1e-07`` / ``1e-7``), never with a different value."""
    if not FAST or not _finite(value):
        return std_dumps(value)
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, UnicodeDecodeError):    # big ints, lone surrogates: the stdlib decides
        return std_dumps(value)
