"""Property-based tests of the hub's wire decoder (hypothesis): whatever text arrives, it returns a
frame or raises WireError with a documented code (400, 413), and what it returns can always be written
out again, so nothing that cannot be encoded ever enters hub state."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core import wire
from bridge.core.signal import BAD_REQUEST, MAX_FRAME_BYTES, TOO_LARGE, check_signal

CODES = {BAD_REQUEST, TOO_LARGE}
# Every code point, lone surrogates included (JSON can carry them as "\udXXX" escapes), with the
# troublesome ones drawn often enough to matter. Joined lists: st.text() leaves surrogates out.
ANY_TEXT = st.lists(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
                    | st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "é", "\U0001f6d1"]),
                    max_size=40).map("".join)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | ANY_TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8)
OPS = st.sampled_from(["signal", "ping", "connect", "disconnect", "force_disconnect", "pong", ""]) | ANY_TEXT
KEYS = st.sampled_from(["op", "id", "type", "data", "to", "retry", "token", "resume", "connection_id"])


def frames() -> st.SearchStrategy[dict[str, Any]]:
    """Frame-shaped objects of every op (so that most get past the shape checks to the string checks),
    and objects of any keys and values."""
    ids = st.integers(min_value=-2, max_value=2**63) | VALUES
    text = ANY_TEXT | VALUES
    signal = st.fixed_dictionaries({"op": st.just("signal"), "id": st.integers(0, 2**40)}, optional={
        "type": text, "data": text, "to": text, "retry": st.booleans() | VALUES})
    resume = st.fixed_dictionaries({}, optional={"connection_id": text, "secret": text,
                                                 "last_seq": st.integers(-1, 10) | VALUES})
    connect = st.fixed_dictionaries({"op": st.just("connect"), "token": text},
                                    optional={"resume": resume | VALUES})
    force = st.fixed_dictionaries({"op": st.just("force_disconnect"), "id": ids, "connection_id": text})
    other = st.fixed_dictionaries({"op": OPS}, optional={"id": ids})
    return signal | connect | force | other | st.dictionaries(KEYS, VALUES)


def _strings(frame: object) -> list[str]:
    out: list[str] = []
    for name in getattr(frame, "__slots__", ()):
        v = getattr(frame, name)
        out += [v] if isinstance(v, str) else _strings(v)
    return out


def _decode(text: str) -> object | None:
    """The frame, or None after checking the refusal is a documented WireError."""
    try:
        frame = wire.parse_client_frame(text)
    except wire.WireError as e:
        assert e.code in CODES and e.message
        assert wire.error(e.code, e.message).encode("utf-8")  # the answer itself can be written out
        if e.frame_id is not None:
            assert wire.nack(e.frame_id, e.code, e.message).encode("utf-8")
        return None
    for s in _strings(frame):
        s.encode("utf-8")  # never a lone surrogate
    return frame


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT | st.text(max_size=200)
       | st.text(alphabet="{}[]\":,\\u0123456789abcdefnulltrue ", max_size=200))
def test_any_text_decodes_or_is_refused_with_a_documented_code(text: str) -> None:
    _decode(text)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.booleans())
def test_any_frame_object_decodes_to_writable_text_or_a_documented_refusal(obj: dict[str, Any],
                                                                           ascii_only: bool) -> None:
    # ensure_ascii=True writes lone surrogates as \\udXXX escapes, the way an attacker would send them.
    frame = _decode(json.dumps(obj, ensure_ascii=ascii_only))
    if isinstance(frame, wire.SignalFrame) and check_signal(frame.type, frame.data) is None:
        body = wire.SignalBody(frame.type, frame.data, "c", 1)
        assert json.loads(body.frame(7).encode("utf-8"))["data"] == frame.data


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=MAX_FRAME_BYTES - 50, max_value=MAX_FRAME_BYTES + 50), st.sampled_from("aé😀"))
def test_size_limit_counts_utf8_bytes(n: int, ch: str) -> None:
    text = '{"op":"ping","id":1,"p":"' + ch * (n // len(ch.encode())) + '"}'
    size = len(text.encode())
    try:
        wire.parse_client_frame(text)
        assert size <= MAX_FRAME_BYTES
    except wire.WireError as e:
        assert e.code == TOO_LARGE and size > MAX_FRAME_BYTES


def test_check_signal_refuses_lone_surrogates_with_400() -> None:
    refusal = check_signal("t", "ok\ud800")
    assert refusal is not None and refusal.code == BAD_REQUEST
    assert check_signal("t", "\U0001f6d1") is None
