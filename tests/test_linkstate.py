"""The client link state table: every legal path, and impossible events refused."""

from __future__ import annotations

import pytest

from bridge.core.backoff import backoff_delay
from bridge.core.client.state import (
    TRANSITIONS,
    LinkEvent,
    LinkMachine,
    LinkState,
    LinkStateError,
    Notice,
)


def run(*events: LinkEvent) -> tuple[LinkMachine, list[Notice]]:
    m = LinkMachine()
    return m, [m.handle(e) for e in events]


def test_starts_connecting_and_first_failure_closes_silently() -> None:
    m, notices = run(LinkEvent.LOST)
    assert m.state is LinkState.CLOSED and notices == [Notice.NONE]
    m, notices = run(LinkEvent.REFUSED)
    assert m.state is LinkState.CLOSED and notices == [Notice.NONE]


def test_drop_then_resume_announces_each_once() -> None:
    m, notices = run(LinkEvent.UP, LinkEvent.LOST, LinkEvent.LOST, LinkEvent.LOST, LinkEvent.UP)
    assert m.state is LinkState.CONNECTED
    assert notices == [Notice.NONE, Notice.RECONNECTING, Notice.NONE, Notice.NONE, Notice.RECONNECTED]


@pytest.mark.parametrize("end", [LinkEvent.REFUSED, LinkEvent.GAVE_UP, LinkEvent.CLOSE])
def test_reconnecting_ends_in_disconnected(end: LinkEvent) -> None:
    m, notices = run(LinkEvent.UP, LinkEvent.LOST, end)
    assert m.state is LinkState.CLOSED and notices[-1] is Notice.DISCONNECTED


def test_clean_close_and_closed_absorbs_everything() -> None:
    m, notices = run(LinkEvent.UP, LinkEvent.CLOSE)
    assert notices[-1] is Notice.DISCONNECTED
    for e in LinkEvent:
        assert m.handle(e) is Notice.NONE and m.state is LinkState.CLOSED


@pytest.mark.parametrize("event", [LinkEvent.UP, LinkEvent.REFUSED, LinkEvent.GAVE_UP])
def test_impossible_events_in_connected_raise(event: LinkEvent) -> None:
    m, _ = run(LinkEvent.UP)
    with pytest.raises(LinkStateError, match="in state 'connected'"):
        m.handle(event)


def test_gave_up_cannot_happen_while_connecting() -> None:
    with pytest.raises(LinkStateError):
        run(LinkEvent.GAVE_UP)


def test_table_only_targets_known_states_and_queueing_flags() -> None:
    assert {t.to for t in TRANSITIONS.values()} == set(LinkState) - {LinkState.CONNECTING}
    m, _ = run(LinkEvent.UP)
    assert m.connected and not m.queues_retry_signals
    m.handle(LinkEvent.LOST)
    assert not m.connected and m.queues_retry_signals


def test_backoff_doubles_caps_and_jitters() -> None:
    assert backoff_delay(0, 0.5, 5.0, 0.5) == pytest.approx(0.25)
    assert backoff_delay(0, 0.5, 5.0, 1.0) == pytest.approx(0.5)
    assert backoff_delay(3, 0.5, 5.0, 1.0) == pytest.approx(4.0)
    assert backoff_delay(4, 0.5, 5.0, 1.0) == pytest.approx(5.0)
    assert backoff_delay(10_000, 0.5, 5.0, 0.75) == pytest.approx(3.75)
    with pytest.raises(ValueError):
        backoff_delay(0, 0.5, 5.0, 1.5)
