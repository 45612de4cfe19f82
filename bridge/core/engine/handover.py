"""What one engine hands to the next on a config reload (``Engine.hand_over`` -> ``Engine.take_over``).

A frozen value, so that the new engine never reads the old one's insides. Kept across a reload: the
e-stop latch (a reload never unlatches), the lease holder (when the new config still has the lease),
the session link (up or not, own connection id), the member table, device states, safe actions owed
to devices that were down, the hub clock offset last seen, and every count. Not kept: watchdogs (each
pending one fires its old safe action at the hand-over: ``fired``), slew references (restart from 0),
rate buckets, pending expects, held telemetry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.core.engine.actions import Command
from bridge.core.engine.counters import Counters
from bridge.core.engine.decisions import Decision
from bridge.core.signal import Connection


@dataclass(frozen=True, slots=True)
class HandOver:
    estopped: bool
    lease_holder: str | None
    own_id: str | None
    linked: bool
    members: tuple[Connection, ...]
    devices: Mapping[str, bool]
    owed: Mapping[str, tuple[Command, ...]]
    #: The old engine's pending watchdogs' safe actions, fired at the hand-over: carry them out first.
    fired: tuple[Command, ...]
    counters: Counters
    decisions: Mapping[Decision, int]
    #: Hub clock minus the monotonic clock (ms), from the last signal's age; None before any signal.
    hub_offset_ms: float | None
    #: Telemetry values dropped in the current link outage (for its notice when the link is back).
    dropped_in_outage: int
