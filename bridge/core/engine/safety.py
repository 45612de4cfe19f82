"""The basic command safety state: e-stop latch, deadman watchdogs, stale guard.

Theory of operation
-------------------
The latch is a two-state machine, ``armed`` and ``estopped``, driven by three events. Everything that
changes it is in ``_TRANSITIONS`` below; there is no other code path that moves the state:

    state      event          -> state      effect
    armed      estop          -> estopped   run the estop actions, cancel watchdogs
    estopped   estop          -> estopped   run the estop actions again (idempotent stop)
    armed      reset          -> armed      nothing (not latched)
    estopped   reset          -> armed      unlatch
    *          reset_denied   -> same       refuse (sender's role not in Estop.reset_roles)
    armed      command        -> armed      admit
    estopped   command        -> estopped   refuse ``estopped``

Any role allowed to signal may trigger the e-stop (stopping must never be harder than driving); only
``Estop.reset_roles`` may reset it, and a REST signal (no sender role) never resets it.

Watchdogs: each rule with ``watchdog:`` has at most one deadline, pushed to ``now + timeout`` by every
applied command of that rule; when ``now`` passes it, ``expired(now)`` hands back the rule's index once
(the caller runs that rule's ``watchdog.send``) and forgets the deadline until the next applied command.
``now`` is monotonic seconds.

The stale guard (a signal's age) is ``bridge.core.engine.age``.
"""

from __future__ import annotations

from typing import Literal

from bridge.core.model import Action, Rule, Safety

State = Literal["armed", "estopped"]
Event = Literal["estop", "reset", "reset_denied", "command"]
Effect = Literal["run_estop", "ignore", "unlatch", "refuse_role", "admit", "refuse_estopped"]

_TRANSITIONS: dict[tuple[State, Event], tuple[State, Effect]] = {
    ("armed", "estop"): ("estopped", "run_estop"),
    ("estopped", "estop"): ("estopped", "run_estop"),
    ("armed", "reset"): ("armed", "ignore"),
    ("estopped", "reset"): ("armed", "unlatch"),
    ("armed", "reset_denied"): ("armed", "refuse_role"),
    ("estopped", "reset_denied"): ("estopped", "refuse_role"),
    ("armed", "command"): ("armed", "admit"),
    ("estopped", "command"): ("estopped", "refuse_estopped"),
}

ResetResult = Literal["unlatched", "not_latched", "denied"]


class SafetyState:
    """The e-stop latch and the watchdog deadlines of one engine."""

    __slots__ = ("_config", "_deadlines", "state")

    def __init__(self, config: Safety) -> None:
        self._config = config
        self.state: State = "armed"
        # rule index -> deadman deadline
        self._deadlines: dict[int, float] = {}

    @property
    def latched(self) -> bool:
        return self.state == "estopped"

    def _fire(self, event: Event) -> Effect:
        self.state, effect = _TRANSITIONS[(self.state, event)]
        return effect

    # ------------------------------------------------------------ e-stop

    def estop(self) -> tuple[Action, ...]:
        """Latch and return the estop actions to run now (also when already latched)."""
        self._fire("estop")
        # The estop actions are the safe state; no deadman action may follow while latched.
        self._deadlines.clear()
        estop = self._config.estop
        return estop.send if estop is not None else ()

    def reset(self, role: str | None) -> ResetResult:
        estop = self._config.estop
        allowed = estop is not None and role is not None and role in estop.reset_roles
        effect = self._fire("reset" if allowed else "reset_denied")
        if effect == "refuse_role":
            return "denied"
        return "unlatched" if effect == "unlatch" else "not_latched"

    def admit(self) -> bool:
        """Whether a command may proceed (False: refuse it as ``estopped``)."""
        return self._fire("command") == "admit"

    # ------------------------------------------------------------ watchdogs

    def refresh(self, rule: Rule, now: float) -> None:
        """An applied command of ``rule`` at ``now``: push its deadman deadline."""
        wd = rule.watchdog
        if wd is not None:
            self._deadlines[rule.index] = now + wd.timeout_ms / 1000.0

    def expired(self, now: float) -> list[int]:
        """The rule indexes whose watchdog deadline has passed; each fires once."""
        fired = [index for index, deadline in self._deadlines.items() if now >= deadline]
        for index in fired:
            del self._deadlines[index]
        return fired

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)
