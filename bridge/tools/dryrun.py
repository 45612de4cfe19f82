"""`sigbridge try -c bridge.yaml TYPE [DATA] [--role R] [--from-rest]`: one signal through the real
engine (``bridge.tools.offline``), nothing touched.

Prints the decision (with the reason, the values written and which were clamped) and exactly what
would be written: for a serial device the bytes, as hex and as text (escaped), newline included; for
an MQTT device the topic, payload, QoS and retain (always false); and any signal the bridge would send.
``--json`` prints the same as one JSON object. Exit 0 when something would be written, 1 when nothing
would (refused, or no rule matches), 2 for a config error.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bridge.config import load_or_report
from bridge.core.engine.actions import Publish, WriteLine
from bridge.core.events import Signal
from bridge.core.signal import Connection
from bridge.tools.offline import OfflineBridge, Outcome, write_obj

SENDER_ID = "try-sender"


def try_main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 2
    offline = OfflineBridge(config)
    sender = None if args.from_rest else Connection(SENDER_ID, args.conn_data, args.role, 0)
    hub_ms = int(time.time() * 1000)
    sig = Signal(args.type, args.data, None if sender is None else sender.id, 1, hub_ms)
    outcome = offline.signal(sig, sender, time.monotonic(), hub_ms)
    report = describe(offline, outcome, args.type)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print("\n".join(text_lines(report)))
    return 0 if outcome.writes else 1


def describe(offline: OfflineBridge, outcome: Outcome, type_: str) -> dict[str, Any]:
    """The report as a JSON-able object."""
    record, ack = outcome.record, outcome.ack
    if record is not None:
        decision, reason = record.decision.value, record.reason
    elif outcome.signals or outcome.writes:
        decision, reason = "answered", "handled by the bridge itself (no rule)"
    else:
        decision, reason = "unmatched", f"no rule matches {type_!r}; nothing is written"
    report: dict[str, Any] = {"decision": decision, "reason": reason or None}
    if ack is not None and "values" in ack:
        report["values"] = ack["values"]
        if "clamped" in ack:
            report["clamped"] = ack["clamped"]
    writes = []
    for w in outcome.writes:
        obj = write_obj(w)
        if isinstance(w, WriteLine):
            data = offline.wire_bytes(w)
            obj["hex"] = data.hex(" ")
            obj["text"] = data.decode("utf-8", "replace")
        elif isinstance(w, Publish):
            obj["retain"] = False
        writes.append(obj)
    report["writes"] = writes
    report["signals"] = [{"type": s.type, "data": s.data, "to": s.to} for s in outcome.signals]
    return report


def text_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"decision: {report['decision']}" + (f" ({report['reason']})" if report["reason"] else "")]
    if "values" in report:
        lines.append(f"values: {json.dumps(report['values'])}"
                     + (f" (clamped: {', '.join(report['clamped'])})" if report.get("clamped") else ""))
    for w in report["writes"]:
        if "line" in w:
            lines.append(f"write {w['device']} (serial): {len(w['hex'].split())} bytes")
            lines.append(f"  hex:  {w['hex']}")
            lines.append(f"  text: {json.dumps(w['text'], ensure_ascii=True)[1:-1]}")
        else:
            lines.append(f"publish {w['device']} (mqtt): topic {w['topic']} qos {w['qos']} retain false")
            lines.append(f"  payload: {w['payload']}")
    if not report["writes"]:
        lines.append("nothing would be written")
    for s in report["signals"]:
        lines.append(f"signal {s['type']} to {s['to'] or 'everyone'}: {s['data']}")
    return lines
