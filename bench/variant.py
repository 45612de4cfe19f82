"""``python -m bench.variant [--loop uvloop] [--json orjson|msgspec] BRIDGE-ARGS...``: ``python -m bridge``
with another event loop and/or JSON codec, for A/B runs in one sitting::

    BENCH_HUB_PREFIX="python -m bench.variant --loop uvloop" \\
    BENCH_BRIDGE_PREFIX="python -m bench.variant --loop uvloop --json orjson" python -m bench latency

The codec is swapped by rebinding the names the wire and params modules call (:func:`bench.codecs.use`),
a measurement prototype, not how the product would do it (see FINDINGS-16.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.variant")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--json", choices=["json", "orjson", "msgspec"], default="json")
    args, rest = p.parse_known_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.json != "json":
        from bench.codecs import use

        use(args.json)
    from bridge.cli import main as bridge_main

    return bridge_main(rest)


if __name__ == "__main__":
    sys.exit(main())
