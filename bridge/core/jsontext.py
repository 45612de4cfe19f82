"""The one strict JSON decoder for text that comes from outside (signal data, MQTT payloads).

``loads(text)`` is ``json.loads`` that refuses the NaN / Infinity / -Infinity literals (JSON has no
such numbers, and a NaN compares false with every limit, so it would slip through range checks) and
turns too deep nesting (``"[" * 4000`` fits in an 8 KB signal) into the same ``ValueError`` as any other
bad JSON, never a ``RecursionError`` that would end the caller.
"""

from __future__ import annotations

import json
from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def loads(text: str) -> Any:
    """Decode ``text``; raises ValueError (json.JSONDecodeError is one) on anything that is not JSON."""
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
