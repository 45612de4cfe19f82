"""The control lease state machine: every row of its table, and the scenarios the engine relies on:
only a role that may drive acquires it, an idle lease expires, a moderator takes it over."""

from __future__ import annotations

import itertools

import pytest

from bridge.core.engine import lease as lease_mod
from bridge.core.engine.lease import (
    ControlLease,
    LeaseEvent,
    LeaseOutcome,
    LeaseState,
    OutcomeKind,
    Who,
    driving_roles,
)
from bridge.core.model import Rule
from bridge.core.signal import SIGNALLING_ROLES

DRIVERS = frozenset({"moderator", "publisher"})


def new_lease(idle_s: float | None = None) -> ControlLease:
    return ControlLease(DRIVERS, idle_s)


def test_table_covers_every_reachable_combination() -> None:
    # In FREE nobody is the holder; a destroyed connection always has an id (never REST); the role
    # (MODERATOR, BARRED) matters only to ACQUIRE; EXPIRE is only ever the holder's.
    role_only = {Who.MODERATOR, Who.BARRED}
    expected = {
        (s, e, w)
        for s, e, w in itertools.product(LeaseState, LeaseEvent, Who)
        if not (s is LeaseState.FREE and w is Who.HOLDER)
        and not (e is LeaseEvent.DESTROYED and w is Who.REST)
        and not (e is not LeaseEvent.ACQUIRE and w in role_only)
        and not (e is LeaseEvent.EXPIRE and (s is LeaseState.FREE or w is not Who.HOLDER))
    }
    assert set(lease_mod._TABLE) == expected


#: A sender id and role for each kind of sender ("A" holds the lease in HELD).
SENDERS: dict[Who, tuple[str | None, str | None]] = {
    Who.HOLDER: ("A", "publisher"), Who.OTHER: ("B", "publisher"), Who.MODERATOR: ("M", "moderator"),
    Who.BARRED: ("S", "subscriber"), Who.REST: (None, None)}


def _drive(lease: ControlLease, event: LeaseEvent, who: Who, now: float) -> LeaseOutcome | None:
    sender, role = SENDERS[who]
    if event is LeaseEvent.ACQUIRE:
        return lease.acquire(sender, role, now)
    if event is LeaseEvent.RELEASE:
        return lease.release(sender)
    if event is LeaseEvent.COMMAND:
        return lease.check_command(sender, now)
    if event is LeaseEvent.EXPIRE:
        return lease.expire(now)
    assert sender is not None
    return lease.connection_destroyed(sender)


@pytest.mark.parametrize("key", sorted(lease_mod._TABLE, key=str))
def test_every_table_row_behaves_as_written(key: tuple[LeaseState, LeaseEvent, Who]) -> None:
    state, event, who = key
    kind, next_state = lease_mod._TABLE[key]
    lease = new_lease(idle_s=5.0)
    if state is LeaseState.HELD:
        assert lease.acquire("A", "publisher", 0.0).kind is OutcomeKind.GRANTED
    before = lease.holder
    out = _drive(lease, event, who, 10.0 if event is LeaseEvent.EXPIRE else 1.0)
    assert out is not None
    assert out.kind is kind
    assert lease.state is next_state
    assert out.previous == before
    assert out.holder == lease.holder
    assert out.changed == (before != lease.holder)
    assert out.controller_lost == (out.kind in (OutcomeKind.TAKEN_OVER, OutcomeKind.CONTROLLER_LOST,
                                                OutcomeKind.EXPIRED))
    assert out.reason  # always something to say


def test_acquire_free_then_refused_with_holder() -> None:
    lease = new_lease()
    out = lease.acquire("op-1", "publisher", 0.0)
    assert (out.kind, out.holder, out.previous, out.changed) == (OutcomeKind.GRANTED, "op-1", None, True)
    again = lease.acquire("op-1", "publisher", 1.0)
    assert again.kind is OutcomeKind.ALREADY_HELD and not again.changed
    refused = lease.acquire("op-2", "publisher", 2.0)
    assert refused.kind is OutcomeKind.REFUSED and refused.holder == "op-1"
    assert "op-1" in refused.reason
    assert lease.holder == "op-1"


def test_a_role_that_may_not_drive_never_acquires_free_or_held() -> None:
    lease = ControlLease(frozenset({"moderator"}))
    for role in ("publisher", "publisheronly", "subscriber", "", None):
        out = lease.acquire("squatter", role, 0.0)
        assert out.kind is OutcomeKind.FORBIDDEN and lease.holder is None, role
        assert "role" in out.reason
    assert lease.acquire("mod", "moderator", 0.0).kind is OutcomeKind.GRANTED
    assert lease.acquire("squatter", "publisher", 1.0).kind is OutcomeKind.FORBIDDEN
    assert lease.holder == "mod"


def test_only_holder_releases_and_commands() -> None:
    lease = new_lease()
    lease.acquire("op-1", "publisher", 0.0)
    assert lease.check_command("op-1", 0.0).kind is OutcomeKind.ALLOWED
    assert lease.check_command("op-2", 0.0).kind is OutcomeKind.NO_LEASE
    assert lease.check_command(None, 0.0).kind is OutcomeKind.NO_LEASE
    assert lease.release("op-2").kind is OutcomeKind.NOT_HOLDER
    assert lease.holder == "op-1"
    out = lease.release("op-1")
    assert (out.kind, out.holder, out.previous) == (OutcomeKind.RELEASED, None, "op-1")
    free = lease.check_command("op-1", 0.0)
    assert free.kind is OutcomeKind.NO_LEASE and "acquire" in free.reason
    assert lease.acquire("op-2", "publisher", 0.0).kind is OutcomeKind.GRANTED


def test_an_idle_lease_expires_and_activity_keeps_it() -> None:
    lease = new_lease(idle_s=5.0)
    assert lease.deadline is None
    lease.acquire("op-1", "publisher", 100.0)
    assert lease.deadline == 105.0
    assert lease.expire(104.9) is None
    assert lease.check_command("op-1", 104.0).kind is OutcomeKind.ALLOWED      # driving: renewed
    assert lease.deadline == 109.0
    assert lease.check_command("op-2", 108.0).kind is OutcomeKind.NO_LEASE     # others renew nothing
    assert lease.acquire("op-2", "publisher", 108.0).kind is OutcomeKind.REFUSED
    assert lease.deadline == 109.0
    assert lease.acquire("op-1", "publisher", 108.5).kind is OutcomeKind.ALREADY_HELD   # renewed
    out = lease.expire(113.5)
    assert out is not None
    assert (out.kind, out.holder, out.previous, out.changed) == (OutcomeKind.EXPIRED, None, "op-1", True)
    assert "op-1" in out.reason and lease.deadline is None
    assert lease.expire(1000.0) is None
    assert lease.acquire("op-2", "publisher", 114.0).kind is OutcomeKind.GRANTED


def test_no_idle_timeout_means_no_deadline() -> None:
    lease = new_lease(idle_s=None)
    lease.acquire("op-1", "publisher", 0.0)
    assert lease.deadline is None and lease.expire(1e9) is None


def test_a_moderator_takes_the_lease_over() -> None:
    lease = new_lease(idle_s=5.0)
    lease.acquire("op-1", "publisher", 0.0)
    out = lease.acquire("mod", "moderator", 3.0)
    assert (out.kind, out.holder, out.previous) == (OutcomeKind.TAKEN_OVER, "mod", "op-1")
    assert out.changed and out.controller_lost and "op-1" in out.reason
    assert lease.deadline == 8.0
    assert lease.check_command("op-1", 4.0).kind is OutcomeKind.NO_LEASE
    assert lease.check_command("mod", 4.0).kind is OutcomeKind.ALLOWED
    # ... but not when the moderator's role may not drive.
    barred = ControlLease(frozenset({"publisher"}))
    barred.acquire("op-1", "publisher", 0.0)
    assert barred.acquire("mod", "moderator", 1.0).kind is OutcomeKind.FORBIDDEN
    assert barred.holder == "op-1"


def test_holder_destroyed_is_controller_lost_and_frees_the_lease() -> None:
    lease = new_lease()
    lease.acquire("op-1", "publisher", 0.0)
    assert lease.connection_destroyed("op-2").kind is OutcomeKind.IGNORED
    out = lease.connection_destroyed("op-1")
    assert (out.kind, out.holder, out.previous, out.changed) == (
        OutcomeKind.CONTROLLER_LOST, None, "op-1", True)
    assert "op-1" in out.reason
    assert lease.acquire("op-2", "publisher", 0.0).kind is OutcomeKind.GRANTED


def test_rest_sender_never_holds_the_lease() -> None:
    lease = new_lease()
    out = lease.acquire(None, None, 0.0)
    assert out.kind is OutcomeKind.REFUSED and lease.holder is None
    assert "REST" in out.reason


def test_inherit_keeps_the_holder_idle_from_now() -> None:
    old, new = new_lease(), new_lease(idle_s=5.0)
    old.acquire("op-1", "publisher", 0.0)
    new.inherit(old.holder, 50.0)
    assert new.holder == "op-1" and new.deadline == 55.0


def test_driving_roles_are_the_roles_the_rules_let_drive() -> None:
    assert driving_roles([]) == frozenset()
    assert driving_roles([Rule(0, "a", from_roles=frozenset({"moderator"}))]) == {"moderator"}
    assert driving_roles([Rule(0, "a", from_roles=frozenset({"moderator"})), Rule(1, "b")]) == \
        SIGNALLING_ROLES


def test_outcomes_are_frozen() -> None:
    out = new_lease().acquire("a", "publisher", 0.0)
    with pytest.raises(AttributeError):
        out.holder = "b"  # type: ignore[misc]
