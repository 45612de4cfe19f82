"""``python -m bench.codecs``: the JSON work of one command signal, per codec, in this process.

The frames and functions are the real ones (``bridge.core.wire``, ``bridge.core.client_protocol``,
``bridge.core.params``); :func:`use` swaps the codec they call (stdlib ``json``, ``orjson``,
``msgspec``) so the same code is timed with each. Per signal on the command path the hub decodes
the client frame and encodes the delivery (``SignalBody``) and the ack; the bridge decodes the hub
frame and then the ``data`` string inside it (the second JSON pass). Also timed: one decode of a
frame whose ``data`` is a JSON object rather than a string (what a single pass would need on the wire).
A micro-benchmark: it tells what a codec saves per call, not what the path gains (see FINDINGS-16.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

CODECS = ("json", "orjson", "msgspec")


def _find(*names: str) -> Any:
    """The first of these modules that exists (the layout moves; the bench follows what is there)."""
    for name in names:
        with contextlib.suppress(ImportError):
            return importlib.import_module(name)
    return None


#: (candidate modules, {attribute: what to put there}) rebound by :func:`use`; a module or attribute
#: that does not exist in this layout is skipped.
_TARGETS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("bridge.core.wire",), ("_loads", "_dumps")),
    (("bridge.core.client_protocol", "bridge.core.client.protocol"), ("_dumps", "json")),
    (("bridge.core.jsontext",), ("_DECODER",)),
    (("bridge.core.params", "bridge.core.engine.params"), ("_DECODER",)),
    (("bridge.core.telemetry", "bridge.core.engine.telemetry"), ("_DECODER", "_dumps")),
]


def use(codec: str) -> list[str]:
    """Make the wire, data and telemetry modules call ``codec``; returns what was rebound. A
    prototype: the modules bind their codec at import time, so this rebinds those names (only for
    measurement; a module-level ``json`` is replaced by an object with ``loads``/``dumps``)."""
    loads, dumps = _pair(codec)

    class _Json:
        @staticmethod
        def loads(s: str | bytes) -> Any:
            return loads(s)

        @staticmethod
        def dumps(o: Any, **_kw: Any) -> str:
            return dumps(o)

    class _Decoder:
        @staticmethod
        def decode(s: str) -> Any:
            return loads(s)

    value = {"_loads": loads, "_dumps": dumps, "json": _Json, "_DECODER": _Decoder}
    done = []
    for names, attrs in _TARGETS:
        mod = _find(*names)
        for attr in attrs if mod is not None else ():
            if hasattr(mod, attr):
                setattr(mod, attr, value[attr])
                done.append(f"{mod.__name__}.{attr}")
    return done


def _pair(codec: str) -> tuple[Callable[[Any], Any], Callable[[Any], str]]:
    if codec == "orjson":
        import orjson

        return orjson.loads, lambda o: orjson.dumps(o).decode()
    if codec == "msgspec":
        import msgspec

        dec, enc = msgspec.json.Decoder(), msgspec.json.Encoder()
        return dec.decode, lambda o: enc.encode(o).decode()
    return json.loads, json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _once(fn: Callable[[], object], n: int) -> float:
    """Microseconds per call over ``n`` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _cases(codec: str) -> dict[str, Callable[[], object]]:
    """The timed calls, with ``codec`` bound into the modules."""
    use(codec)
    from bridge.core import wire

    client_protocol = _find("bridge.core.client_protocol", "bridge.core.client.protocol", "bridge.core.wire")
    params = _find("bridge.core.params", "bridge.core.engine.params")
    data = json.dumps({"x": 0.5, "y": -0.25, "n": 123456})
    client = client_protocol.signal_frame(17, "robot.move", data, "c0ffee-0123456789", True)
    hub = wire.SignalBody("robot.move", data, "conn-0123456789abcdef", 1_764_000_000_000).frame(42)
    loads = _pair(codec)[0]
    one_pass = json.dumps({"op": "signal", "seq": 42, "type": "robot.move", "data": json.loads(data),
                           "from": "conn-0123456789abcdef", "ts": 1_764_000_000_000})
    return {
        "hub: parse client frame": lambda: wire.parse_client_frame(client),
        "hub: encode delivery": lambda: wire.SignalBody("robot.move", data, "conn-01234", 1).frame(1),
        "client: encode signal frame": lambda: client_protocol.signal_frame(17, "robot.move", data, "c0ffee",
                                                                            True),
        "bridge: parse hub frame": lambda: client_protocol.parse_hub_frame(hub),
        "bridge: decode data (2nd pass)": lambda: params.decode_data(data),
        "one pass: frame with data as object": lambda: loads(one_pass),
    }


def measure(n: int, repeat: int) -> dict[str, dict[str, float]]:
    """{codec: {case: us per call}}: medians over ``repeat`` rounds, each round timing every codec in
    turn (the order rotating), so that the machine's load drifts hit all three alike."""
    samples: dict[str, dict[str, list[float]]] = {c: {} for c in CODECS}
    for r in range(repeat + 1):  # round 0 warms up and is not kept
        for codec in CODECS[r % len(CODECS):] + CODECS[:r % len(CODECS)]:
            for name, fn in _cases(codec).items():
                t = _once(fn, n)
                if r:
                    samples[codec].setdefault(name, []).append(t)
    out = {c: {k: statistics.median(v) for k, v in cases.items()} for c, cases in samples.items()}
    for per in out.values():
        per["bridge: both passes"] = per["bridge: parse hub frame"] + per["bridge: decode data (2nd pass)"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.codecs", description=__doc__)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args()
    got = measure(a.n, a.repeat)
    print(f"{'us per call (median of rounds)':38s}" + "".join(f"{c:>10s}" for c in CODECS))
    for key in got["json"]:
        base = got["json"][key]
        print(f"{key:38s}" + "".join(f"{got[c][key]:10.2f}" for c in CODECS)
              + "   " + "  ".join(f"{c} {got[c][key] / base:.2f}x" for c in CODECS[1:]))


if __name__ == "__main__":
    main()
