"""The one strict JSON decoder for text that comes from outside (signal data, MQTT payloads).

``loads(text)`` is ``json.loads`` that refuses the NaN / Infinity / -Infinity literals (JSON has no
such numbers, and a NaN compares false with every limit, so it would slip through range checks), a
string holding a lone surrogate (no UTF-8 line or payload can carry one) and nesting deeper than
``MAX_DEPTH``, each with the same ``ValueError`` as any other bad JSON, never a ``RecursionError``
that would end the caller (``"[" * 4000`` fits in an 8 KB signal).

With orjson installed (the ``fast`` extra) it decodes first, at 0.2-0.75x the stdlib's CPU (issue 16);
the stdlib stays the reference and the fallback, and the answer is the same whichever is installed
(tests/test_jsontext_codecs.py runs both): orjson is trusted only where it provably gives the stdlib's
value, and everything it refuses is decided again by the stdlib. Where they differ:

- orjson refuses what the stdlib accepts (numbers that overflow a double such as ``1e400``): the
  stdlib decides; lone surrogates (``"\\ud800"``), which the stdlib decodes, are refused by both
  (no UTF-8 line or payload can hold one);
- orjson turns integers beyond 64 bits into floats, the stdlib keeps them exact: a result holding a
  float of magnitude 2**63 or more is decoded again by the stdlib;
- orjson accepts 1,024 levels, the stdlib as many as its recursion limit allows from where it is
  called: both are held to ``MAX_DEPTH``.

``dumps(value)`` is the compact encoder of the engine's own JSON (telemetry data): ``json.dumps``
with ``separators=(",", ":")``, ``ensure_ascii=False``, ``allow_nan=False``; with orjson where it
gives the same text-level contract (NaN and infinities refused with ValueError, not written as null).
"""

from __future__ import annotations

import json
import math
from typing import Any

try:
    import orjson
    #: orjson is installed and used (the ``fast`` extra).
    FAST = True
except ImportError:     # the stdlib alone: same behaviour, slower
    FAST = False

#: Deepest nesting accepted (arrays and objects); deeper is a ValueError with either codec.
MAX_DEPTH = 512

#: orjson decodes an integer beyond 64 bits as a float (the stdlib: an exact int), so a decoded float
#: this large may have been one: the stdlib decides again (a float literal that large is rare).
_BIG = 2.0**63


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


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if not v.isascii() and any("\ud800" <= c <= "\udfff" for c in v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def std_loads(text: str) -> Any:
    """The stdlib decoder with this module's rules (the reference; what ``loads`` is without orjson)."""
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    # A lone surrogate ("\ud800" escaped, or raw in the text) is no character: no UTF-8 line or
    # payload can hold it, so it is refused here rather than raise when a command is encoded.
    if ("\\u" in text or not text.isascii()) and _has_lone_surrogate(value):
        raise ValueError("JSON string holds a lone surrogate")
    return _checked_depth(text, value)


def _checked_depth(text: str | bytes, value: Any) -> Any:
    # Deeper than MAX_DEPTH needs more than MAX_DEPTH brackets: two C-speed counts spare the walk.
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        brackets = text.count(b"[") + text.count(b"{")
    if brackets > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _has_big_float(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is float:
            if v >= _BIG or v <= -_BIG:
                return True
        elif t is dict:
            stack.extend(v.values())
        elif t is list:
            stack.extend(v)
    return False


def _fast_loads(text: str) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return std_loads(text)
    if _has_big_float(value):
        return std_loads(text)
    return _checked_depth(text, value)


def loads(text: str) -> Any:
    """Decode ``text``; raises ValueError (json.JSONDecodeError is one) on anything that is not JSON."""
    return _fast_loads(text) if FAST else std_loads(text)


def std_frame_loads(text: str | bytes) -> Any:
    """``json.loads`` held to MAX_DEPTH (the reference for ``frame_loads``)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return _checked_depth(text, value)


def _fast_frame_loads(text: str | bytes) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:      # NaN, surrogates, not UTF-8 (json.loads reads UTF-16/32 bytes)
        return std_frame_loads(text)
    if _has_big_float(value):
        return std_frame_loads(text)
    return _checked_depth(text, value)


def frame_loads(text: str | bytes) -> Any:
    """The wire's decoder: ``json.loads`` as it is (NaN and Infinity decode to floats; the frame's
    fields are type-checked after), nesting held to MAX_DEPTH; ValueError on anything else."""
    return _fast_frame_loads(text) if FAST else std_frame_loads(text)


_FRAME_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def std_frame_dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` (the reference)."""
    return _FRAME_ENCODE(value)


def frame_dumps(value: Any) -> str:
    """The wire's encoder: the same text as ``std_frame_dumps`` for the frames' strings, ints, bools
    and None (a non-finite float is written as the stdlib writes it, NaN; floats may be spelt
    differently, never with another value)."""
    if not FAST or not _finite(value):
        return _FRAME_ENCODE(value)
    return frame_dumps_floatless(value)


def frame_dumps_floatless(value: Any) -> str:
    """``frame_dumps`` for a value known to hold no float (a signal frame: ints, strings, bools), which
    spares the walk looking for NaN: the same text as ``std_frame_dumps``."""
    if not FAST:
        return _FRAME_ENCODE(value)
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, UnicodeDecodeError):    # big ints, lone surrogates: the stdlib's text
        return _FRAME_ENCODE(value)


def std_dumps(value: Any) -> str:
    """The stdlib encoder (the reference; what ``dumps`` is without orjson)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (orjson would write them as null)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                return False
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
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
