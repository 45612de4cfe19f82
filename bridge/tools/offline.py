"""The rule engine without devices or a session, for `sigbridge try` and `sigbridge replay`.

``OfflineBridge(config)`` is the real :class:`bridge.core.engine.Engine` of a loaded config, linked
and with every device up (so that nothing is refused for a link that does not exist here), with two
reporting switches turned on that change no decision: every rule answers (``ack``, for the reason
and the values written) and every decision is audited (the audit commands are kept, never written to
a file). Nothing here opens a port, a broker connection or a socket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from bridge.core.engine import Engine
from bridge.core.engine.actions import ACK, Audit, Command, Publish, SendSignal, WriteLine
from bridge.core.engine.decisions import AuditRecord
from bridge.core.engine.outcomes import DeviceState
from bridge.core.events import Signal
from bridge.core.model import Audit as AuditConfig
from bridge.core.model import BridgeConfig
from bridge.core.signal import Connection

OWN_ID = "offline-bridge"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one signal did: its audit record (None when no rule or e-stop handled it), the ack's data
    (None when there was none), the device commands in order, and the signals the bridge would send."""

    record: AuditRecord | None
    ack: dict[str, Any] | None
    writes: tuple[WriteLine | Publish, ...]
    signals: tuple[SendSignal, ...]


class OfflineBridge:
    def __init__(self, config: BridgeConfig, now: float = 0.0) -> None:
        reporting = replace(config, rules=tuple(replace(r, ack=True) for r in config.rules),
                            audit=config.audit or AuditConfig("offline"))
        self.config = config
        self.engine = Engine(reporting)
        self.newlines = {name: d.serial.newline for name, d in config.devices.items() if d.serial}
        self.engine.link_up(OWN_ID, now)
        for name in config.devices:
            self.engine.device_event(DeviceState(name, True), now)

    def signal(self, sig: Signal, sender: Connection | None, now: float, hub_now_ms: int) -> Outcome:
        """``sig`` from ``sender`` (announced to the engine first, as a session client would), its age
        judged at ``hub_now_ms``."""
        if sender is not None:
            self.engine.connection_created(sender, now)
        aged = replace(sig, age_ms=hub_now_ms - sig.ts)
        return self._outcome(self.engine.signal(aged, now))

    def connection_destroyed(self, conn: Connection, now: float) -> Outcome:
        return self._outcome(self.engine.connection_destroyed(conn, now))

    def tick(self, now: float) -> Outcome:
        return self._outcome(self.engine.tick(now))

    def _outcome(self, commands: list[Command]) -> Outcome:
        record = next((c.record for c in commands if isinstance(c, Audit)), None)
        ack = None
        signals = []
        for c in commands:
            if isinstance(c, SendSignal):
                if c.type == ACK and c.to is not None and ack is None:
                    ack = json.loads(c.data)
                else:
                    signals.append(c)
        writes = tuple(c for c in commands if isinstance(c, WriteLine | Publish))
        return Outcome(record, ack, writes, tuple(signals))

    def wire_bytes(self, write: WriteLine) -> bytes:
        """The exact bytes the serial link would write (UTF-8, the device's newline)."""
        return (write.line + self.newlines.get(write.device, "\n")).encode()


def write_obj(write: WriteLine | Publish) -> dict[str, Any]:
    """One device write as a JSON object (the audit log's ``written`` shape, plus the QoS)."""
    if isinstance(write, WriteLine):
        return {"device": write.device, "line": write.line}
    return {"device": write.device, "topic": write.topic, "payload": write.payload.decode("utf-8", "replace"),
            "qos": write.qos}
