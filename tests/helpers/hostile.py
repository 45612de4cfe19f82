"""Hostile signal payloads for tests/test_faults.py: what an attacker (or a buggy app) can put in a
signal frame, and what must happen to each."""

from __future__ import annotations

import json
from typing import Any

DEEP = "[" * 4000 + "]" * 4000
#: (type, data, what must happen): "hub" = the hub refuses the frame (nack), "ignored" = no rule
#: matches (no ack, nothing written), "rejected" = the bridge refuses it (ack "rejected", nothing written).
HOSTILE: list[tuple[Any, Any, str]] = [
    # types: globs and odd characters (the hub allows only A-Z a-z 0-9 . _ ~ -), too long, not a string
    *[(t, "{}", "hub") for t in ("*", "g*", "?o", "[gs]o", "go*", "go\n", "go\r", "go\x00", "gö",
                                 "go ", " go", "go\u2028", "\x1b[0mgo", "x" * 129, "cam.*")],
    (["go"], "{}", "hub"), ({"a": 1}, "{}", "hub"),
    # types the hub lets through but no rule has
    *[(t, '{"seq":1,"x":0}', "ignored") for t in ("GO", "Go", "go.", "go-", "go~", "go_", "go.go", "cam",
                                                  "g.o", "x" * 128, "")],
    # data that is not a string, or too big
    ("go", 123, "hub"), ("go", {"seq": 1, "x": 0}, "hub"), ("go", ["a"], "hub"), ("go", None, "rejected"),
    ("say", json.dumps({"text": "a" * 8200}), "hub"),
    # bad JSON and non-objects
    *[("go", d, "rejected") for d in ("{", "not json", "[1,2", '{"seq": 1,}', "null", "1", "[]", '"go"',
                                      "{'seq': 1}", '{"seq":1 "x":0}', "\ufeff{}", "\x00", "}{")],
    # NaN/Infinity literals, huge and out-of-range numbers
    *[("go", d, "rejected") for d in ('{"seq":1,"x":NaN}', '{"seq":1,"x":Infinity}',
                                      '{"seq":1,"x":-Infinity}', '{"seq":1e999,"x":0}', '{"seq":1,"x":1e999}',
                                      '{"seq":1,"x":-1e999}',
                                      '{"seq":' + "9" * 4000 + ',"x":0}', '{"seq":-1,"x":0}',
                                      '{"seq":1,"x":1.0000001}', '{"seq":1000000001,"x":0}')],
    # nested objects, wrong types, missing and undeclared params
    *[("go", d, "rejected") for d in ('{"seq":{"a":1},"x":0}', '{"seq":[1],"x":0}', '{"seq":1,"x":{"$gt":0}}',
                                      '{"seq":"1","x":0}', '{"seq":true,"x":0}', '{"seq":1,"x":"0.5"}',
                                      '{"seq":null,"x":0}', '{"seq":1.5,"x":0}', '{"seq":1}', "{}", "",
                                      '{"seq":1,"x":0,"z":1}', '{"seq":1,"x":0,"__proto__":{}}',
                                      '{"seq":1,"x":"0\\nM 1 1"}', '{"seq":1,"x":true}')],
    # deep nesting (the hub's 8 KB limit still allows 4000 levels)
    ("go", DEEP, "rejected"), ("go", '{"a":' * 1300 + "1" + "}" * 1300, "rejected"),
    ("go", '{"seq":1,"x":0,"z":' + DEEP[:7000] + "}", "rejected"),
    ("cam.x", DEEP, "rejected"), ("grip", '{"seq":1,"force":' + "[" * 3000 + "]" * 3000 + "}", "rejected"),
    # 8 KB of data
    ("go", '{"seq":1,"x":0,"pad":"' + "a" * 8150 + '"}', "rejected"),
    ("say", json.dumps({"text": "a" * 8000}), "rejected"),
    # line injection: newline, CR, NUL, escape sequences, unicode line separators into a string param
    *[("say", json.dumps({"text": t}), "rejected") for t in (
        "a\nS", "a\rS", "a\r\nM 1 1", "a\x00b", "\x1b[2J", "a\u2028b", "a\u2029b", "a\u0085b", "a\tb",
        "a\x7fb", "é", "", "a" * 21, "A")],
    *[("say", d, "rejected") for d in ('{"text":5}', '{"text":["a"]}', '{"text":null}',
                                       '{"text":"a","b":1}')],
    *[("grip", d, "rejected") for d in ('{"seq":1,"force":101}', '{"seq":1,"force":true}',
                                        '{"seq":1,"force":1e999}', '{"seq":1,"force":50.5}')],
    *[("cam.x", d, "rejected") for d in ("{", '{"a":1}', "[]")],
]
