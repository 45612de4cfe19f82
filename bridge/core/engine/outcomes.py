"""What the device links report back to the engine, as events (``Engine.device_event``).

A link never writes into the engine: it reports, the engine decides what follows (owed safe actions,
counts, audit records, a status broadcast) and returns it as commands, like every other event.

- ``DeviceState(device, up)``: the link came up or went down;
- ``WriteRefused(command)``: the link did not take a write the engine made (down, sealed, or its
  bounded queue full);
- ``WritesExpired(device, dropped)``: the link dropped queued writes, never written, whose deadline
  (``WriteLine.deadline``, from the rule's ``max_age_ms``) passed first; ``dropped`` holds their lines
  or ``topic payload`` texts (for the audit record).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.engine.actions import DeviceWrite


@dataclass(frozen=True, slots=True)
class DeviceState:
    device: str
    up: bool


@dataclass(frozen=True, slots=True)
class WriteRefused:
    command: DeviceWrite


@dataclass(frozen=True, slots=True)
class WritesExpired:
    device: str
    dropped: tuple[str, ...]


DeviceEvent = DeviceState | WriteRefused | WritesExpired
