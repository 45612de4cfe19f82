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


def _time(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Median over ``repeat`` batches of the microseconds per call."""
    per = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(per)


def measure(codec: str, n: int, repeat: int) -> dict[str, float]:
    use(codec)
    from bridge.core import wire

    client_protocol = _find("bridge.core.client_protocol", "bridge.core.client.protocol", "bridge.core.wire")
    params = _find("bridge.core.params", "bridge.core.engine.params")

    data = json.dumps({"x": 0.5, "y": -0.25, "n": 123456})
    client = client_protocol.signal_frame(17, "robot.move", data, "c0ffee-0123456789", True)
    body = wire.SignalBody("robot.move", data, "conn-0123456789abcdef", 1_764_000_000_000)
    hub = body.frame(42)
    loads = _pair(codec)[0]
    one_pass = json.dumps({"op": "signal", "seq": 42, "type": "robot.move", "data": json.loads(data),
                           "from": "conn-0123456789abcdef", "ts": 1_764_000_000_000})
    out = {
        "hub: parse client frame": _time(lambda: wire.parse_client_frame(client), n, repeat),
        "hub: encode delivery": _time(lambda: wire.SignalBody("robot.move", data, "conn-01234", 1).frame(1),
                                      n, repeat),
        "client: encode signal frame": _time(
            lambda: client_protocol.signal_frame(17, "robot.move", data, "c0ffee", True), n, repeat),
        "bridge: parse hub frame": _time(lambda: client_protocol.parse_hub_frame(hub), n, repeat),
        "bridge: decode data (2nd pass)": _time(lambda: params.decode_data(data), n, repeat),
        "one pass: frame with data as object": _time(lambda: loads(one_pass), n, repeat),
    }
    out["bridge: both passes"] = out["bridge: parse hub frame"] + out["bridge: decode data (2nd pass)"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.codecs", description=__doc__)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args()
    got = {c: measure(c, a.n, a.repeat) for c in CODECS}
    # a second stdlib pass last: the first one may have paid warm-up
    got["json"] = {k: min(v, w) for (k, v), w in zip(got["json"].items(),
                                                       measure("json", a.n, a.repeat).values(), strict=True)}
    print(f"{'us per call (median of batches)':38s}" + "".join(f"{c:>10s}" for c in CODECS))
    for key in got["json"]:
        base = got["json"][key]
        print(f"{key:38s}" + "".join(f"{got[c][key]:10.2f}" for c in CODECS)
              + "   " + "  ".join(f"{c} {got[c][key] / base:.2f}x" for c in CODECS[1:]))


if __name__ == "__main__":
    main()
