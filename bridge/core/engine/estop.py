"""The engine's safe actions, compiled once at load, and the e-stop signals that use them.

``SafeActions`` holds every constant action the engine may have to send on its own: the e-stop's, the
watchdogs', ``on_disconnect``, ``on_controller_lost``, ``on_shutdown`` (filled once, so that sending
one can never fail). ``EstopSignals`` answers the e-stop and reset signals: the latch itself is
``bridge.core.engine.safety.SafetyState`` (its transition table); this module turns its outcomes into
commands, in the order the hardware needs them: every device queue purged (they were decided before
the latch), then the e-stop actions, then the audit record, then the operator's notice. The engine adds
its own consequences (slews restart from zero, the status broadcast).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.core.engine.actions import Command, Notice, NoticeKind, Purge, constant_commands
from bridge.core.engine.commandpath import audit_record
from bridge.core.engine.counters import Counters
from bridge.core.engine.decisions import Decision
from bridge.core.engine.devices import device_of
from bridge.core.engine.safety import SafetyState
from bridge.core.events import Signal
from bridge.core.model import BridgeConfig
from bridge.core.signal import Connection

#: The engine's status broadcast after a change of state (none while the link is down or coalesced).
Announce = Callable[[], list[Command]]


@dataclass(frozen=True, slots=True)
class SafeActions:
    estop: tuple[Command, ...]
    on_disconnect: tuple[Command, ...]
    on_controller_lost: tuple[Command, ...]
    on_shutdown: tuple[Command, ...]
    #: Rule index -> its watchdog's actions.
    watchdog: Mapping[int, tuple[Command, ...]]

    @classmethod
    def compile(cls, config: BridgeConfig, newlines: dict[str, str]) -> SafeActions:
        s = config.safety
        return cls(
            estop=constant_commands(s.estop.send, newlines) if s.estop is not None else (),
            on_disconnect=constant_commands(s.on_disconnect, newlines),
            on_controller_lost=constant_commands(s.on_controller_lost, newlines),
            on_shutdown=constant_commands(s.on_shutdown, newlines),
            watchdog={r.index: constant_commands(r.watchdog.send, newlines)
                      for r in config.rules if r.watchdog is not None})

    def owed_when_missed(self) -> tuple[Command, ...]:
        """The actions a device that was down when they were sent gets when it comes back."""
        return (*self.estop, *self.on_disconnect, *self.on_controller_lost,
                *(c for cmds in self.watchdog.values() for c in cmds))


class EstopSignals:
    """``robot.estop`` / ``robot.estop_reset`` (``safety.estop.signal`` / ``.reset``; None: no e-stop)."""

    def __init__(self, config: BridgeConfig, safety: SafetyState, actions: SafeActions,
                 devices: tuple[str, ...], counts: Counters) -> None:
        estop = config.safety.estop
        self.signal = estop.signal if estop is not None else None
        self.reset_signal = estop.reset if estop is not None else None
        self._safety = safety
        self._actions = actions.estop
        self._devices = devices
        self._counts = counts
        self._audit = config.audit is not None

    def latch(self, sig: Signal, sender: Connection | None, announce: Announce) -> list[Command]:
        """The e-stop signal; repeated, it stops again (``announce``: the status news, when it latched)."""
        was = self._safety.latched
        self._safety.estop()
        out: list[Command] = [*(Purge(d) for d in self._devices), *self._actions]
        self._counts.estops += 1
        if self._audit:
            out.append(audit_record(sig, sender, Decision.APPLIED, "e-stop", out))
        if not was:
            out.append(Notice(NoticeKind.ESTOP_LATCHED))
            out.extend(announce())
        return out

    def reset(self, sig: Signal, sender: Connection | None, announce: Announce) -> list[Command]:
        """The reset signal (by role; a REST signal, no sender, never resets)."""
        result = self._safety.reset(sender.role if sender is not None else None)
        self._counts.estop_reset(result)
        out: list[Command] = []
        if result == "unlatched":
            out = [Notice(NoticeKind.ESTOP_RESET), *announce()]
        if self._audit:
            decision = Decision.UNAUTHORISED if result == "denied" else Decision.APPLIED
            out.append(audit_record(sig, sender, decision, f"e-stop reset: {result}", []))
        return out

    def for_device_back(self, device: str) -> list[Command]:
        """While latched, a device that comes back gets the e-stop actions first."""
        return [c for c in self._actions if device_of(c) == device] if self._safety.latched else []
