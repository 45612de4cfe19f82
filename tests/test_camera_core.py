"""The camera's pure parts: its signals (parse, split, reassemble), the viewer table (roles, limit,
replacement, every timeout) and the frame code, fed literal values with no event loop."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bridge.core.camera import framecode
from bridge.core.camera import signals as cs
from bridge.core.camera import viewers as cv
from bridge.core.signal import MAX_DATA_BYTES

POLICY = cv.ViewerPolicy(name="front", roles=frozenset({"moderator"}), max_viewers=2,
                         answer_timeout_ms=1000, connect_timeout_ms=1000, stall_timeout_ms=500,
                         watch_interval_ms=0)


def viewers() -> cv.Viewers:
    return cv.Viewers(POLICY, {"width": 320}, "p-")


def sends(actions: list[cv.Action]) -> list[tuple[str, str, dict[str, object]]]:
    return [(a.to, a.type, json.loads(a.data)) for a in actions if isinstance(a, cv.Send)]


def live(v: cv.Viewers, viewer: str, now: float = 0) -> str:
    (opened,) = v.on_signal(now, viewer, "moderator", cs.WATCH, "{}")
    assert isinstance(opened, cv.Open)
    v.offer_ready(now, opened.stream, "v=0\r\n")
    (applied,) = v.on_signal(now, viewer, "moderator", cs.ANSWER,
                             json.dumps({"stream": opened.stream, "sdp": "v=0\r\n"}))
    assert applied == cv.ApplyAnswer(opened.stream, "v=0\r\n")
    v.connected(now, opened.stream)
    return opened.stream


@pytest.mark.parametrize(("type_", "data", "fragment"), [
    (cs.WATCH, "[1]", "data must be a JSON object"),
    (cs.WATCH, "{", "data must be a JSON object"),
    (cs.WATCH, '{"camera": "a b"}', "camera must be a camera name"),
    (cs.ANSWER, '{"sdp": "x"}', "stream must be the stream id"),
    (cs.ANSWER, '{"stream": "s", "sdp": ""}', "sdp must be a non-empty string"),
    (cs.ANSWER, json.dumps({"stream": "s", "sdp": "x" * (cs.PART_CHARS + 1)}), "at most 3500"),
    (cs.ANSWER, '{"stream": "s", "sdp": "x", "part": 2, "parts": 2}', "part must be an integer from 0"),
    (cs.ANSWER, '{"stream": "s", "sdp": "x", "parts": 9}', "parts must be an integer from 1 to 8"),
    (cs.ANSWER, '{"stream": "s", "sdp": "x", "parts": true}', "parts must be an integer"),
    (cs.CANDIDATE, '{"stream": "s", "candidate": "a=x"}', "an SDP 'candidate:...' line"),
    (cs.CANDIDATE, json.dumps({"stream": "s", "candidate": "candidate:" + "1" * 2000}), "at most 1024"),
    (cs.CANDIDATE, '{"stream": "s", "candidate": null, "sdpMLineIndex": -1}', "sdpMLineIndex"),
    ("camera.hello", "{}", "unknown camera signal type 'camera.hello'"),
])
def test_bad_signals_are_refused_with_what_was_wrong(type_: str, data: str, fragment: str) -> None:
    v = viewers()
    (refusal,) = sends(v.on_signal(0, "c1", "moderator", type_, data))
    assert refusal[1] == cs.REFUSED and refusal[2]["code"] == 400
    assert fragment in str(refusal[2]["message"])
    assert v.streams() == {}


def test_a_role_not_allowed_is_refused_before_anything_else() -> None:
    v = viewers()
    for type_ in (cs.WATCH, cs.DESCRIBE, cs.ANSWER, "camera.nonsense"):
        (refusal,) = sends(v.on_signal(0, "c1", "publisher", type_, "{}"))
        assert refusal[2]["code"] == 403
        assert "roles moderator; this connection's role is 'publisher'" in str(refusal[2]["message"])
    # An unknown sender (no role known) is no role at all.
    assert sends(v.on_signal(0, "c2", "", cs.WATCH, "{}"))[0][2]["code"] == 403
    assert v.streams() == {} and v.counters["refused"] == 5


def test_another_cameras_watch_is_none_of_our_business() -> None:
    v = viewers()
    assert v.on_signal(0, "c1", "publisher", cs.WATCH, '{"camera": "rear"}') == []
    assert isinstance(v.on_signal(0, "c1", "moderator", cs.WATCH, '{"camera": "front"}')[0], cv.Open)


def test_at_most_max_viewers_and_a_new_watch_replaces_the_old_stream() -> None:
    v = viewers()
    s1, s2 = live(v, "a"), live(v, "b")
    (refusal,) = sends(v.on_signal(0, "c", "moderator", cs.WATCH, "{}"))
    assert refusal[2]["code"] == 429 and "at most 2" in str(refusal[2]["message"])
    again = v.on_signal(0, "a", "moderator", cs.WATCH, "{}")
    assert again[0] == cv.Close(s1, "replaced by a new camera.watch")
    assert sends(again[1:2]) == [("a", cs.ENDED, {"stream": s1, "reason": "replaced by a new camera.watch"})]
    assert isinstance(again[2], cv.Open) and again[2].stream not in (s1, s2)
    assert len(v.streams()) == 2


def test_watches_and_candidates_are_bounded_per_viewer() -> None:
    v = cv.Viewers(cv.ViewerPolicy(watch_interval_ms=1000, max_candidates=3), {}, "p-")
    assert isinstance(v.on_signal(0, "a", "moderator", cs.WATCH, "{}")[0], cv.Open)
    (refusal,) = sends(v.on_signal(999, "a", "moderator", cs.WATCH, "{}"))   # a flood of watches
    assert refusal[2]["code"] == 429 and "at most one a 1000 ms" in str(refusal[2]["message"])
    assert isinstance(v.on_signal(999, "b", "moderator", cs.WATCH, "{}")[0], cv.Open)   # others may
    out = v.on_signal(1000, "a", "moderator", cs.WATCH, "{}")
    assert isinstance(out[0], cv.Close) and isinstance(out[-1], cv.Open)
    sid = out[-1].stream
    cand = json.dumps({"stream": sid, "candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host"})
    got = [v.on_signal(1000, "a", "moderator", cs.CANDIDATE, cand) for _ in range(10)]
    assert [type(x[0]).__name__ if x else None for x in got] == \
        ["AddCandidate"] * 3 + ["Send"] + [None] * 6                          # refused once, then quiet
    for i in range(3000):                                      # the watch memory stays bounded
        v.on_signal(5000 + i * 2, f"c{i}", "moderator", cs.WATCH, "{}")
    assert len(v._last_watch) <= 1024


def test_a_stream_belongs_to_its_viewer() -> None:
    v = viewers()
    sid = live(v, "a")
    (refusal,) = sends(v.on_signal(0, "b", "moderator", cs.CANDIDATE,
                                   json.dumps({"stream": sid, "candidate": None})))
    assert refusal[2]["code"] == 404
    assert v.on_signal(0, "b", "moderator", cs.STOP, json.dumps({"stream": sid})) == []
    assert sid in v.streams()
    assert v.on_signal(0, "a", "moderator", cs.STOP, json.dumps({"stream": sid})) == [
        cv.Close(sid, "stopped by the viewer")]


def test_an_answer_in_parts_any_order_and_contradictions_end_the_stream() -> None:
    v = viewers()
    (opened,) = v.on_signal(0, "a", "moderator", cs.WATCH, "{}")
    assert isinstance(opened, cv.Open)
    sid = opened.stream
    assert v.on_signal(0, "a", "moderator", cs.ANSWER, json.dumps({"stream": sid, "sdp": "x"}))[0].type \
        == cs.REFUSED                                                 # no offer sent yet
    v.offer_ready(0, sid, "offer")
    part = lambda i, n, text: json.dumps({"stream": sid, "sdp": text, "part": i, "parts": n})  # noqa: E731
    assert v.on_signal(0, "a", "moderator", cs.ANSWER, part(1, 2, "B")) == []
    assert v.on_signal(0, "a", "moderator", cs.ANSWER, part(0, 2, "A")) == [cv.ApplyAnswer(sid, "AB")]
    v2 = viewers()
    (o2,) = v2.on_signal(0, "a", "moderator", cs.WATCH, "{}")
    assert isinstance(o2, cv.Open)
    v2.offer_ready(0, o2.stream, "offer")
    v2.on_signal(0, "a", "moderator", cs.ANSWER, json.dumps({"stream": o2.stream, "sdp": "A", "parts": 3}))
    out = v2.on_signal(0, "a", "moderator", cs.ANSWER,
                       json.dumps({"stream": o2.stream, "sdp": "A", "part": 1, "parts": 2}))
    assert out[0] == cv.Close(o2.stream, "bad answer: part 1 says 2 parts, an earlier one said 3")


def test_every_timeout_frees_the_stream() -> None:
    v = viewers()
    (opened,) = v.on_signal(0, "a", "moderator", cs.WATCH, "{}")
    assert isinstance(opened, cv.Open)
    assert v.tick(1000) == []
    assert v.tick(1001)[0] == cv.Close(opened.stream, "no answer within 1000 ms")      # never offered
    (o2,) = v.on_signal(0, "a", "moderator", cs.WATCH, "{}")
    assert isinstance(o2, cv.Open)
    v.offer_ready(500, o2.stream, "offer")
    assert v.tick(1501)[0] == cv.Close(o2.stream, "no answer within 1000 ms")          # offered, no answer
    (o3,) = v.on_signal(0, "a", "moderator", cs.WATCH, "{}")
    assert isinstance(o3, cv.Open)
    v.offer_ready(0, o3.stream, "offer")
    v.on_signal(0, "a", "moderator", cs.ANSWER, json.dumps({"stream": o3.stream, "sdp": "x"}))
    assert v.tick(1001)[0] == cv.Close(o3.stream, "not connected within 1000 ms")
    sid = live(v, "a", now=2000)
    v.alive(2400, sid)
    assert v.tick(2900) == []                                   # heard from 500 ms ago: not stalled
    assert v.tick(2901)[0] == cv.Close(sid, "stalled: nothing heard for 500 ms")
    assert v.streams() == {}
    assert v.ended == {"no answer": 2, "not connected": 1, "stalled": 1}


def test_leaving_failing_and_shutting_down() -> None:
    v = viewers()
    a, b = live(v, "a"), live(v, "b")
    assert v.left("a") == [cv.Close(a, "the viewer left")]          # nobody to tell
    assert v.left("a") == [] and v.failed("nope", "x") == []
    out = v.close_all("the camera is shutting down")
    assert out == [cv.Close(b, "the camera is shutting down"),
                   cv.Send("b", cs.ENDED, cs.ended(b, "the camera is shutting down"))]
    assert v.offer_ready(0, b, "late offer") == []                 # a late report of a closed stream


def test_offers_are_split_under_the_data_limit_and_status_fits() -> None:
    sdp = ("a=candidate:1 1 udp 2130706431 192.168.1.20 50000 typ host\r\n" * 600)[:cs.MAX_SDP_CHARS]
    parts = cs.offer_parts("s1", sdp, {"width": 640})
    assert len(parts) == cs.MAX_PARTS
    assert all(len(p.encode()) <= MAX_DATA_BYTES for p in parts)
    assert "".join(json.loads(p)["sdp"] for p in parts) == sdp
    assert json.loads(parts[0])["info"] == {"width": 640} and "info" not in json.loads(parts[1])
    with pytest.raises(ValueError, match="more than 8 parts"):
        cs.offer_parts("s1", sdp + "x", {})
    v = cv.Viewers(cv.ViewerPolicy(max_viewers=16), {}, "abcdef-")
    for i in range(16):
        live(v, f"{'c' * 36}{i}")
    assert len(v.status_json().encode()) <= MAX_DATA_BYTES


def test_frame_code_round_trip_and_check() -> None:
    for counter, ts in ((0, 0), (1, 1), (2**24 - 1, 2**32 - 1), (12345, 1764760000123)):
        assert framecode.decode(framecode.encode(counter, ts)) == (counter, ts % 2**32)
    assert framecode.decode([0] * 64) is None and framecode.decode([1] * 64) is None
    bits = framecode.encode(7, 99)
    bits[5] ^= 1
    assert framecode.decode(bits) is None
    assert (framecode.cell(160), framecode.cell(320), framecode.cell(640)) == (8, 8, 16)


def test_the_bridge_never_imports_the_media_stack() -> None:
    code = ("import sys, bridge.cli, bridge.daemon.runner, bridge.hub.run, bridge.tools.demo, "
            "bridge.config.camera\n"
            "print(','.join(m for m in ('aiortc', 'av') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
