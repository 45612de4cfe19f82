"""Per-rule authorisation."""

from __future__ import annotations

import pytest

from bridge.core.engine.authz import Authorizer
from bridge.core.engine.decisions import Decision
from bridge.core.model import Rule
from bridge.core.signal import Connection


def conn(role: str = "publisher", data: str = "") -> Connection:
    return Connection("c1", data, role, 0)


def test_open_rule_allows_every_connection_but_not_rest() -> None:
    auth = Authorizer(None, None, allow_rest=False)
    assert auth.open
    assert auth.allows(conn("publisher")) is None
    assert auth.allows(conn("moderator")) is None
    refusal = auth.allows(None)
    assert refusal is not None
    assert refusal.decision is Decision.UNAUTHORISED and "REST" in refusal.reason


def test_rest_allowed_when_the_rule_says_so_whatever_the_other_filters() -> None:
    auth = Authorizer(frozenset({"moderator"}), "^ops", allow_rest=True)
    assert auth.allows(None) is None


def test_from_roles() -> None:
    auth = Authorizer(frozenset({"moderator"}), None, allow_rest=False)
    assert not auth.open
    assert auth.allows(conn("moderator")) is None
    refusal = auth.allows(conn("publisher"))
    assert refusal is not None and refusal.decision is Decision.UNAUTHORISED
    assert refusal.reason == "role publisher not in from_roles [moderator]"
    assert auth.allows(conn("publisher")) is refusal  # shared, no allocation per refusal


def test_hostile_role_never_reaches_the_reason_verbatim() -> None:
    auth = Authorizer(frozenset({"moderator"}), None, allow_rest=False)
    refusal = auth.allows(conn("x\n" * 100))
    assert refusal is not None and "\n" not in refusal.reason and len(refusal.reason) < 80


def test_from_data_is_searched_not_full_matched() -> None:
    auth = Authorizer(None, r'"team":"lab-1"', allow_rest=False)
    assert auth.allows(conn(data='{"name":"ann","team":"lab-1"}')) is None
    refusal = auth.allows(conn(data='{"team":"lab-2"}'))
    assert refusal is not None and refusal.reason == "connection data does not match from_data"
    anchored = Authorizer(None, "^operator:", allow_rest=False)
    assert anchored.allows(conn(data="operator:ann")) is None
    assert anchored.allows(conn(data="viewer:operator:x")) is not None


def test_roles_and_data_both_apply() -> None:
    auth = Authorizer(frozenset({"publisher", "moderator"}), "^op", allow_rest=False)
    assert auth.allows(conn("publisher", "op:1")) is None
    assert auth.allows(conn("publisher", "guest")) is not None
    assert auth.allows(conn("subscriber", "op:1")) is not None


def test_for_rule_reads_the_rule() -> None:
    rule = Rule(index=0, signal="robot.move", from_roles=frozenset({"moderator"}), allow_rest=True)
    auth = Authorizer.for_rule(rule)
    assert auth.allows(None) is None
    assert auth.allows(conn("publisher")) is not None


def test_bad_regex_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="from_data is not a valid regular expression"):
        Authorizer(None, "(", allow_rest=False)
