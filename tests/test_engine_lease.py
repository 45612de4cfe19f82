"""bridge.core: the control lease inside the engine. Only a role some rule lets drive (or
``control.roles``) acquires it; an idle lease expires at its deadline (``tick``); a moderator takes it
over; every change runs what it must (on_controller_lost) and is announced in bridge.status. Pure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ConfigError, load_config
from bridge.core.engine import STATUS, Engine, SendSignal, WriteLine
from bridge.core.model import Control, Rule, Safety, SerialAction
from bridge.core.signal import Connection
from tests.helpers.engine import MOD, OP, XY, acks, make_config, send, writes

LOST = SerialAction("base", "LOST")
SUB = Connection("sub1", "", "subscriber", 0)
PUB2 = Connection("pub2", "", "publisher", 0)
# The rules guarded by the lease: only moderators drive.
MOD_RULES = (Rule(0, "robot.move", params=XY, send=(SerialAction("base", "M {x:.1f} {y:.1f}"),),
                  from_roles=frozenset({"moderator"}), ack=True),)


def lease_engine(rules: tuple[Rule, ...] = MOD_RULES, **control: Any) -> Engine:
    e = Engine(make_config(rules=rules, control=Control(lease=True, **control),
                           safety=Safety(on_controller_lost=(LOST,))))
    e.link_up("bridge1", 0.0)
    return e


def status(out: list[Any]) -> dict[str, Any]:
    [s] = [json.loads(c.data) for c in out if isinstance(c, SendSignal) and c.type == STATUS]
    return s


def test_a_publisher_no_rule_lets_drive_cannot_squat_the_lease() -> None:
    e = lease_engine()
    for squatter in (OP, SUB, PUB2):
        out = send(e, "control.acquire", sender=squatter, now=1.0)
        assert acks(out)[0]["status"] == "forbidden", squatter
        assert "role" in acks(out)[0]["reason"]
        assert not [c for c in out if isinstance(c, SendSignal) and c.type == STATUS]   # no change
    # The lease is still free: the moderator acquires it and drives.
    assert acks(send(e, "control.acquire", sender=MOD, now=2.0))[0]["status"] == "granted"
    assert writes(send(e, "robot.move", {"x": 0, "y": 0}, sender=MOD, now=2.1)) == [
        WriteLine("base", "M 0.0 0.0")]


def test_control_roles_overrides_the_rules_roles() -> None:
    open_rules = (Rule(0, "robot.move", params=XY, send=(SerialAction("base", "M"),), ack=True),)
    e = lease_engine(open_rules, roles=frozenset({"moderator"}))
    assert acks(send(e, "control.acquire", sender=OP, now=1.0))[0]["status"] == "forbidden"
    e = lease_engine(open_rules)           # default: every role a rule lets drive
    assert acks(send(e, "control.acquire", sender=OP, now=1.0))[0]["status"] == "granted"


def test_an_idle_lease_expires_runs_on_controller_lost_and_is_announced() -> None:
    e = lease_engine(idle_timeout_ms=2000)
    send(e, "control.acquire", sender=MOD, now=10.0)
    assert e.next_deadline() == 12.0
    send(e, "robot.move", {"x": 0, "y": 0}, sender=MOD, now=11.0)      # driving keeps it
    assert e.next_deadline() == 13.0
    assert e.tick(12.9) == []
    out = e.tick(13.0)
    assert out[0] == WriteLine("base", "LOST")
    s = status(out)
    assert s["lease"] is None and s["counters"]["lease_expired"] == 1
    assert e.next_deadline() is None
    assert acks(send(e, "robot.move", {"x": 0, "y": 0}, sender=MOD, now=13.1))[0]["status"] == "no_lease"


def test_a_moderator_takes_the_lease_over_from_an_operator() -> None:
    open_rules = (Rule(0, "robot.move", params=XY, send=(SerialAction("base", "M"),), ack=True),)
    e = lease_engine(open_rules)
    send(e, "control.acquire", sender=OP, now=1.0)
    assert acks(send(e, "control.acquire", sender=PUB2, now=2.0))[0]["status"] == "refused"
    out = send(e, "control.acquire", sender=MOD, now=3.0)
    [ack] = acks(out)
    assert ack["status"] == "granted" and OP.id in ack["reason"]
    assert WriteLine("base", "LOST") in out                       # the old controller is gone
    s = status(out)
    assert s["lease"] == MOD.id and s["counters"]["lease_taken_over"] == 1
    assert acks(send(e, "robot.move", {}, sender=OP, now=3.1))[0]["status"] == "no_lease"


def test_a_reload_keeps_the_holder_and_restarts_its_idle_time() -> None:
    old = lease_engine(idle_timeout_ms=2000)
    send(old, "control.acquire", sender=MOD, now=1.0)
    new = Engine(make_config(rules=MOD_RULES, control=Control(lease=True, idle_timeout_ms=5000)))
    assert status(new.take_over(old.hand_over(), 2.0))["lease"] == MOD.id
    assert new.next_deadline() == 7.0


# ---------------------------------------------------------------- the control keys in bridge.yaml

HEAD = """\
session: {url: "ws://127.0.0.1:9", session_id: s, token: t}
devices: {base: {serial: {port: /dev/null}}}
rules: [{signal: go, send: {device: base, line: G}, from_roles: [moderator]}]
"""


def test_control_roles_and_idle_timeout_are_read(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(HEAD + "control: {lease: true, roles: [moderator], idle_timeout_ms: 1500}\n")
    control = load_config(path).control
    assert (control.roles, control.idle_timeout_ms) == (frozenset({"moderator"}), 1500)
    path.write_text(HEAD + "control: {lease: true}\n")
    assert load_config(path).control == Control(lease=True, roles=None, idle_timeout_ms=60_000)


@pytest.mark.parametrize(("control", "error"), [
    ("{lease: true, roles: [moderator, publisher]}",
     "4: control.roles: no rule lets 'publisher' drive (rules allow: moderator); holding the lease it "
     "could only block the others"),
    ("{lease: true, roles: [subscriber]}",
     "4: control.roles[0]: role 'subscriber' cannot send signals (signalling roles: moderator, publisher)"),
    ("{lease: true, idle_timeout_ms: 0}", "4: control.idle_timeout_ms: must be greater than 0, got 0"),
    ("{roles: [moderator]}", "4: control.roles: roles is only used with lease: true"),
])
def test_control_key_errors(tmp_path: Path, control: str, error: str) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(HEAD + f"control: {control}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert [str(e) for e in exc.value.errors] == [f"{path}:{error}"]
