"""The devices as the engine knows them: which links are up, and the safe actions each one missed.

Every device starts down until its link reports up (``DeviceState``). A safe action (e-stop,
on_disconnect, on_controller_lost, watchdog) that a link refused because its device was down is owed
to that device and written first when it comes back, before anything else can reach it; anything else
refused is forgotten (never written later). See docs/safety.md "A device that comes back".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from bridge.core.engine.actions import Command, Publish, WriteFrame, WriteLine


def device_of(cmd: Command) -> str | None:
    return cmd.device if isinstance(cmd, WriteLine | WriteFrame | Publish) else None


class DeviceBook:
    __slots__ = ("_owed", "_safe", "_up")

    def __init__(self, names: Iterable[str], safe: Iterable[Command]) -> None:
        self._up: dict[str, bool] = dict.fromkeys(names, False)
        self._safe = frozenset(safe)
        self._owed: dict[str, list[Command]] = {}

    @property
    def names(self) -> Iterable[str]:
        return self._up.keys()

    def changed(self, device: str, up: bool) -> bool:
        """Record ``device``'s link state; False when the device is unknown or nothing changed."""
        if device not in self._up or self._up[device] == up:
            return False
        self._up[device] = up
        return True

    def back(self, device: str, first: list[Command]) -> list[Command]:
        """``device`` is back: ``first`` (the e-stop actions while latched), then what it is owed."""
        return [*first, *(c for c in self._owed.pop(device, ()) if c not in first)]

    def refused(self, cmd: Command) -> None:
        """A link refused ``cmd``: owed when it is a safe action (see the module docstring)."""
        device = device_of(cmd)
        if device is not None and cmd in self._safe:
            owed = self._owed.setdefault(device, [])
            if cmd not in owed:
                owed.append(cmd)

    def states(self) -> Mapping[str, bool]:
        return MappingProxyType(dict(self._up))

    def owed(self) -> Mapping[str, tuple[Command, ...]]:
        return MappingProxyType({d: tuple(cmds) for d, cmds in self._owed.items()})

    def inherit(self, states: Mapping[str, bool], owed: Mapping[str, tuple[Command, ...]]) -> None:
        """A reload: the old engine's device states (for devices still configured) and debts."""
        self._up.update((d, up) for d, up in states.items() if d in self._up)
        for device, cmds in owed.items():
            self._owed.setdefault(device, []).extend(cmds)
