"""The one strict JSON decoder for what users send (signal data, device telemetry).

:func:`decode` is ``json.loads`` that refuses the ``NaN``, ``Infinity`` and ``-Infinity`` literals
(Python's decoder accepts them; they are not JSON, and a NaN compares false with every limit, so it
would slip through a range check) and turns nesting too deep for the parser into a ValueError like
any other bad input. It raises ValueError (``json.JSONDecodeError`` is one) and nothing else.
"""

from __future__ import annotations

import json
from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def decode(text: str) -> Any:
    """Decode ``text`` as strict JSON; ValueError for anything else (see the module docstring)."""
    try:
        return _DECODER.decode(text)
    except RecursionError:
        # Deep nesting ("[" * 4000 fits in 8 KB): a refusal like any bad JSON, never a crash.
        raise ValueError("JSON nested too deeply") from None
