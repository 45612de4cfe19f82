"""The control lease state machine: every row of its table, and the scenarios the engine relies on."""

from __future__ import annotations

import itertools

import pytest

from bridge.core import lease as lease_mod
from bridge.core.lease import ControlLease, LeaseEvent, LeaseOutcome, LeaseState, OutcomeKind, Who


def test_table_covers_every_reachable_combination() -> None:
    # In FREE nobody is the holder; a destroyed connection always has an id (never REST).
    expected = {
        (s, e, w)
        for s, e, w in itertools.product(LeaseState, LeaseEvent, Who)
        if not (s is LeaseState.FREE and w is Who.HOLDER)
        and not (e is LeaseEvent.DESTROYED and w is Who.REST)
    }
    assert set(lease_mod._TABLE) == expected


def _drive(lease: ControlLease, event: LeaseEvent, sender: str | None) -> LeaseOutcome:
    if event is LeaseEvent.ACQUIRE:
        return lease.acquire(sender)
    if event is LeaseEvent.RELEASE:
        return lease.release(sender)
    if event is LeaseEvent.COMMAND:
        return lease.check_command(sender)
    assert sender is not None
    return lease.connection_destroyed(sender)


@pytest.mark.parametrize("key", sorted(lease_mod._TABLE, key=str))
def test_every_table_row_behaves_as_written(key: tuple[LeaseState, LeaseEvent, Who]) -> None:
    state, event, who = key
    kind, next_state = lease_mod._TABLE[key]
    lease = ControlLease()
    if state is LeaseState.HELD:
        assert lease.acquire("A").kind is OutcomeKind.GRANTED
    sender = {Who.HOLDER: "A", Who.OTHER: "B", Who.REST: None}[who]
    before = lease.holder
    out = _drive(lease, event, sender)
    assert out.kind is kind
    assert lease.state is next_state
    assert out.previous == before
    assert out.holder == lease.holder
    assert out.changed == (before != lease.holder)
    assert out.reason  # always something to say


def test_acquire_free_then_refused_with_holder() -> None:
    lease = ControlLease()
    out = lease.acquire("op-1")
    assert (out.kind, out.holder, out.previous, out.changed) == (OutcomeKind.GRANTED, "op-1", None, True)
    again = lease.acquire("op-1")
    assert again.kind is OutcomeKind.ALREADY_HELD and not again.changed
    refused = lease.acquire("op-2")
    assert refused.kind is OutcomeKind.REFUSED and refused.holder == "op-1"
    assert "op-1" in refused.reason
    assert lease.holder == "op-1"


def test_only_holder_releases_and_commands() -> None:
    lease = ControlLease()
    lease.acquire("op-1")
    assert lease.check_command("op-1").kind is OutcomeKind.ALLOWED
    assert lease.check_command("op-2").kind is OutcomeKind.NO_LEASE
    assert lease.check_command(None).kind is OutcomeKind.NO_LEASE
    assert lease.release("op-2").kind is OutcomeKind.NOT_HOLDER
    assert lease.holder == "op-1"
    out = lease.release("op-1")
    assert (out.kind, out.holder, out.previous) == (OutcomeKind.RELEASED, None, "op-1")
    free = lease.check_command("op-1")
    assert free.kind is OutcomeKind.NO_LEASE and "acquire" in free.reason
    assert lease.acquire("op-2").kind is OutcomeKind.GRANTED


def test_holder_destroyed_is_controller_lost_and_frees_the_lease() -> None:
    lease = ControlLease()
    lease.acquire("op-1")
    assert lease.connection_destroyed("op-2").kind is OutcomeKind.IGNORED
    out = lease.connection_destroyed("op-1")
    assert (out.kind, out.holder, out.previous, out.changed) == (
        OutcomeKind.CONTROLLER_LOST, None, "op-1", True)
    assert "op-1" in out.reason
    assert lease.acquire("op-2").kind is OutcomeKind.GRANTED


def test_rest_sender_never_holds_the_lease() -> None:
    lease = ControlLease()
    out = lease.acquire(None)
    assert out.kind is OutcomeKind.REFUSED and lease.holder is None
    assert "REST" in out.reason


def test_outcomes_are_frozen() -> None:
    out = ControlLease().acquire("a")
    with pytest.raises(AttributeError):
        out.holder = "b"  # type: ignore[misc]
