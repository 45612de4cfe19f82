"""Slew limiting for numeric params: how fast a value may change between two applied commands.

``ParamSpec.slew_per_s`` bounds the change of one param of one rule: a command ``dt`` seconds after the
last applied one may move the value by at most ``slew_per_s * dt``; a bigger step is clamped toward the
request (decision ``clamped``). It protects gearboxes and keeps a joystick glitch from becoming a jolt.

Contract with the engine:

- call :meth:`SlewLimiter.propose` once the command passed every check (authorisation, lease, rate
  limit, stale guard, range checks) to get the value to write, and :meth:`SlewLimiter.commit` with that
  result only once the templates filled and the command is really written: a command refused at the
  last step must not move the reference (``limit`` is both at once, for callers with nothing to fail);
- the very first command (no reference yet) passes unchanged - there is nothing to slew from;
- after a safe action (watchdog, e-stop, controller lost, disconnect) the hardware is no longer where
  the last command left it: call :meth:`reset` with the value the safe action sets (e.g. 0 for a stop),
  or with None to forget the reference.

Int params stay ints: a clamped value is rounded toward the previous one. The reference itself is kept
unrounded, so a slow slew at a high command rate (less than 1 per command) still progresses; a single
int step can then exceed ``slew_per_s * dt`` by less than 1, the average rate is kept.

Pure: the caller passes time in (monotonic seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bridge.core.model import ParamSpec


@dataclass(frozen=True, slots=True)
class Slewed:
    """The value to apply and whether it differs from the requested one."""

    value: float | int
    clamped: bool
    #: The unrounded value recorded by :meth:`SlewLimiter.commit` (ints: ``value`` before rounding).
    reference: float | None = field(default=None, compare=False)


class SlewLimiter:
    """The slew state of one numeric param of one rule."""

    __slots__ = ("_integer", "_last", "_last_t", "_rate")

    def __init__(self, slew_per_s: float, integer: bool = False) -> None:
        if not (slew_per_s > 0 and math.isfinite(slew_per_s)):
            raise ValueError(f"slew_per_s must be a positive number, got {slew_per_s}")
        self._rate = float(slew_per_s)
        self._integer = integer
        self._last: float | None = None
        self._last_t = 0.0

    @classmethod
    def for_param(cls, spec: ParamSpec) -> SlewLimiter | None:
        """The limiter a param needs, or None when it has no ``slew_per_s``."""
        if spec.slew_per_s is None:
            return None
        if spec.type not in ("int", "float"):
            raise ValueError(f"param {spec.name}: slew_per_s needs an int or float param, not {spec.type}")
        return cls(spec.slew_per_s, integer=spec.type == "int")

    @property
    def last(self) -> float | None:
        """The reference (last applied value, unrounded for ints), None before the first command or after
        reset(None)."""
        return self._last

    def limit(self, value: float, now: float) -> Slewed:
        """Limit ``value`` against the last applied one and record the result as applied at ``now``."""
        result = self.propose(value, now)
        self.commit(result, now)
        return result

    def propose(self, value: float, now: float) -> Slewed:
        """What ``value`` becomes at ``now`` (the limiter's state is not changed)."""
        last = self._last
        ref = float(value)
        clamped = False
        if last is not None:
            # A clock that goes backwards allows no step at all rather than a negative or huge one.
            step = self._rate * max(0.0, now - self._last_t)
            if ref > last + step:
                ref, clamped = last + step, True
            elif ref < last - step:
                ref, clamped = last - step, True
        result: float | int = ref
        if self._integer:
            # Round toward the reference (never past the allowed step) but keep the unrounded reference:
            # a slow slew at a high command rate (step < 1 per command) must still make progress.
            result = int(value) if not clamped else (
                math.floor(ref) if last is not None and ref > last else math.ceil(ref))
        return Slewed(result, clamped, ref)

    def commit(self, applied: Slewed, now: float) -> None:
        """Record ``applied`` (a :meth:`propose` result that was written) as the reference at ``now``."""
        self._last = applied.reference if applied.reference is not None else float(applied.value)
        self._last_t = now

    def reset(self, value: float | None, now: float = 0.0) -> None:
        """Set the reference after a safe action moved the hardware (None: forget it)."""
        self._last = None if value is None else float(value)
        self._last_t = now
