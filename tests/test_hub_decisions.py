"""HubState, the hub's sans-I/O core, with no socket: real client tokens, the memory engine, links
that record what they are given. Every refusal a WebSocket or a REST caller can get comes from the
same function, with the same code and message, and nothing refused reaches anyone."""

from __future__ import annotations

import json
import time

import pytest

from bridge.core.hub import CONTINUE, FLOODED, PONG, STOP, HubState, Member, MemoryEngine, Refusal
from bridge.core.signal import MAX_DATA_BYTES
from bridge.core.tokens import mint_client_token

KEY, SECRET, SID = "12345678", "s" * 40, "lab"


class _Link:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed = False

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def close(self) -> None:
        self.closed = True

    def ops(self) -> list[object]:
        return [f["op"] for f in self.sent]


def _state(rate: float = 0, burst: float = 0, max_per_session: int = 0) -> HubState:
    engine = MemoryEngine(grace_s=5.0, replay_size=10, rate=rate, burst=burst,
                          max_per_session=max_per_session)
    return HubState(engine, api_key=KEY, api_secret=SECRET)


def _token(role: str = "publisher", data: str = "", sid: str = SID, age: float = 0) -> str:
    return mint_client_token(api_key=KEY, api_secret=SECRET, session_id=sid, role=role, data=data,
                             ttl_s=3600, now=time.time() - age)


def _connect(st: HubState, frame: object, link: _Link | None = None,
             sid: str = SID) -> tuple[Member | None, _Link]:
    link = link or _Link()
    out: list[Member | None] = []
    st.connect(sid, frame if isinstance(frame, str) else json.dumps(frame), link, 0.0, 1, time.time(),
               out.append)
    assert len(out) == 1  # the memory engine answers before connect() returns
    return out[0], link


def _member(st: HubState, role: str = "publisher") -> tuple[Member, _Link]:
    m, link = _connect(st, {"op": "connect", "token": _token(role)})
    assert m is not None and link.sent[0]["op"] == "connected"
    link.sent.clear()
    return m, link


def _ws_signal(st: HubState, m: Member, link: _Link, fid: int, **fields: object) -> dict[str, object]:
    assert st.receive(m, link, json.dumps({"op": "signal", "id": fid, **fields}), 0.0, 5) == CONTINUE
    return link.sent[-1]


def _rest_signal(st: HubState, to: str | None, type_: object, data: object) -> Refusal | None:
    out: list[Refusal | None] = []
    st.rest_signal(SID, to, type_, data, 5, out.append)
    assert len(out) == 1
    return out[0]


@pytest.mark.parametrize(("type_", "data", "code"), [
    ("bad type!", "", 400), ("t" * 129, "", 413), ("t", "x" * (MAX_DATA_BYTES + 1), 413),
    ("t", "€" * (MAX_DATA_BYTES // 3 + 1), 413),
])
def test_websocket_and_rest_signals_are_refused_by_the_same_rule(type_: str, data: str, code: int) -> None:
    st = _state()
    a, la = _member(st)
    _, lb = _member(st)
    la.sent.clear()
    nack = _ws_signal(st, a, la, 1, type=type_, data=data)
    rest = _rest_signal(st, None, type_, data)
    assert nack["op"] == "nack" and (nack["code"], nack["message"]) == rest and rest[0] == code
    assert lb.sent == [] and [f["op"] for f in la.sent] == ["nack"]  # nobody received anything
    assert st.metrics.nacks == {code: 2} and a.last_id == 1 and a.nacks[1] == rest


def test_a_lone_surrogate_is_refused_400_both_ways() -> None:
    st = _state()
    a, la = _member(st)
    # The wire parser refuses it first on a WebSocket (its own message), the signal rule on REST.
    assert _ws_signal(st, a, la, 1, type="t", data="\ud800")["code"] == 400
    assert (_rest_signal(st, None, "t", "\ud800") or (0,))[0] == 400


def test_an_unknown_target_is_404_for_both_and_a_known_one_gets_it_alone() -> None:
    st = _state()
    a, la = _member(st)
    b, lb = _member(st)
    la.sent.clear()
    nack = _ws_signal(st, a, la, 1, type="t", data="", to="nobody")
    assert (nack["code"], nack["message"]) == _rest_signal(st, "nobody", "t", "") == (
        404, "no connection with that id in this session")
    assert _ws_signal(st, a, la, 2, type="t", data="d", to=b.connection.id) == {"op": "ack", "id": 2}
    assert _rest_signal(st, b.connection.id, "t", "r") is None
    assert [(f["seq"], f["from"]) for f in lb.sent] == [(1, a.connection.id), (2, None)]  # contiguous
    assert st.metrics.rest_signals == 1 and st.metrics.signals_delivered == 2


def test_a_subscriber_may_not_signal_and_only_a_moderator_may_force() -> None:
    st = _state()
    sub, ls = _member(st, "subscriber")
    pub, lp = _member(st)
    mod, lm = _member(st, "moderator")
    assert _ws_signal(st, sub, ls, 1, type="t", data="")["code"] == 403
    force = {"op": "force_disconnect", "id": 2, "connection_id": sub.connection.id}
    assert st.receive(pub, lp, json.dumps(force), 0.0, 5) == CONTINUE
    assert lp.sent[-1] == {"op": "nack", "id": 2, "code": 403,
                           "message": "only a moderator may force a disconnect"}
    lm.sent.clear()
    assert st.receive(mod, lm, json.dumps(force), 0.0, 5) == CONTINUE
    # The ack before the connection_destroyed it causes; the victim is told and closed.
    assert [f["op"] for f in lm.sent] == ["ack", "connection_destroyed"]
    assert ls.sent[-1] == {"op": "disconnected", "reason": "forceDisconnected"} and ls.closed
    assert st.receive(sub, ls, '{"op":"ping","id":1}', 0.0, 5) == STOP  # its link is no longer its own
    out: list[Refusal | None] = []
    st.force(SID, sub.connection.id, None, out.append)  # REST: gone already
    assert out == [(404, "no connection with that id in this session")]


@pytest.mark.parametrize(("frame", "code"), [
    ("not json", 400), ('{"op":"ping","id":1}', 400), ({"op": "connect", "token": "x.y.z"}, 401),
    ({"op": "connect", "token": _token(sid="other")}, 403),
    ({"op": "connect", "token": _token(age=7200)}, 401),
])
def test_connect_refusals_close_the_link_and_admit_nobody(frame: object, code: int) -> None:
    st = _state()
    m, link = _connect(st, frame)
    assert m is None and link.closed and link.ops() == ["error"] and link.sent[0]["code"] == code
    assert st.sessions == {}


def test_a_wrong_resume_secret_is_refused_and_the_right_one_replays() -> None:
    st = _state()
    a, la = _member(st)
    b, lb = _member(st)
    assert st.link_lost(b, lb, 1.0)
    assert _ws_signal(st, a, la, 1, type="t", data="kept", to=b.connection.id)["op"] == "ack"
    resume = {"connection_id": b.connection.id, "secret": "guess", "last_seq": 0}
    m, link = _connect(st, {"op": "connect", "token": _token(), "resume": resume})
    assert m is None and link.sent[0]["code"] == 403 and link.closed
    resume["secret"] = b.secret
    # Another role than the member's: refused even with the right secret.
    m, link = _connect(st, {"op": "connect", "token": _token("moderator"), "resume": resume})
    assert m is None and link.sent[0]["code"] == 403
    m, link = _connect(st, {"op": "connect", "token": _token(), "resume": {**resume, "secret": b.secret}})
    assert m is b and link.ops() == ["connected", "signal"] and link.sent[0]["resumed"] is True
    assert link.sent[1]["data"] == "kept"


def test_caps_are_refused_with_429_and_a_resume_past_its_grace_joins_afresh() -> None:
    st = _state(max_per_session=1)
    a, la = _member(st)
    m, link = _connect(st, {"op": "connect", "token": _token()})
    assert m is None and link.sent[0]["code"] == 429 and st.metrics.caps_refused == {"session": 1}
    st.link_lost(a, la, 1.0)
    st.expire(10.0)
    resume = {"connection_id": a.connection.id, "secret": a.secret, "last_seq": 0}
    m, link = _connect(st, {"op": "connect", "token": _token(), "resume": resume})
    assert m is not None and m is not a and link.sent[0]["resumed"] is False


def test_frames_past_the_rate_limit_are_refused_then_the_link_is_cut() -> None:
    st = _state(rate=1, burst=2)
    a, la = _member(st)
    verdicts = [st.receive(a, la, f'{{"op":"signal","id":{i},"type":"t"}}', 0.0, 5) for i in range(1, 6)]
    assert verdicts == [CONTINUE] * 4 + [FLOODED]
    assert [f.get("code") for f in la.sent if f["op"] != "signal"] == [None, None, 429, 429]
    assert st.metrics.frames_refused == 3 and st.metrics.flood_disconnects == 1
    b, lb = _member(_state(rate=1, burst=1))
    assert st.receive(b, lb, None, 0.0, 0, ping=True) == PONG  # a WebSocket ping is answered once...
    assert st.receive(b, lb, None, 0.0, 0, ping=True) == CONTINUE  # ...and metered like every frame


def test_socket_caps_of_the_process() -> None:
    st = HubState(MemoryEngine(grace_s=1.0, replay_size=0), api_key=KEY, api_secret=SECRET,
                  max_connections=3, max_per_address=2)
    assert [st.socket_opened("a"), st.socket_opened("a"), st.socket_opened("a")] == [None, None, "address"]
    assert st.socket_opened("b") is None and st.socket_opened("c") == "hub"
    st.socket_closed("a")
    assert st.socket_opened("a") is None and st.metrics.caps_refused == {"address": 1, "hub": 1}
