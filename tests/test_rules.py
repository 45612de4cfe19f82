"""bridge.core.engine.rules: exact and glob matching, first match wins, unmatched counted."""

from __future__ import annotations

from bridge.core.engine.rules import RuleTable
from bridge.core.model import Rule


def test_exact_glob_and_order() -> None:
    rules = [Rule(0, "robot.move"), Rule(1, "robot.*"), Rule(2, "robot.stop"), Rule(3, "arm.?rip"),
             Rule(4, "robot.move")]
    t = RuleTable(rules)
    assert t.match("robot.move") is rules[0]       # exact before the glob
    assert t.match("robot.stop") is rules[1]       # the glob comes first in the file
    assert t.match("robot.x.y") is rules[1]
    assert t.match("arm.grip") is rules[3]
    assert t.match("arm.gripper") is None
    assert t.match("ROBOT.move") is None           # case-sensitive
    assert t.match("other") is None
    assert t.unmatched == 3


def test_character_class_glob() -> None:
    t = RuleTable([Rule(0, "cam.[ab]")])
    assert t.match("cam.a") is not None and t.match("cam.c") is None
