"""bridge.core.wire and the hub memory engine (bridge.core.hub) without any socket: frames in and out."""

from __future__ import annotations

import json

import pytest

from bridge.core import wire
from bridge.core.hub import Admitted, JoinRequest, Member, MemoryEngine, ResumeRequest
from bridge.core.hub.limits import Budget, ResumeThrottle
from bridge.core.hub.member import MAX_REMEMBERED_NACKS, Link
from bridge.core.signal import Connection
from bridge.core.tokenbucket import TokenBucket


def test_parse_client_frames() -> None:
    assert wire.parse_client_frame('{"op":"connect","token":"t"}') == wire.ConnectFrame("t", None)
    f = wire.parse_client_frame(
        '{"op":"connect","token":"t","resume":{"connection_id":"c","secret":"s","last_seq":4}}')
    assert f == wire.ConnectFrame("t", wire.Resume("c", "s", 4))
    assert wire.parse_client_frame('{"op":"signal","id":3}') == wire.SignalFrame(3, "", "", None, True)
    assert wire.parse_client_frame(
        '{"op":"signal","id":3,"type":"a","data":"b","to":"c","retry":false}'
    ) == wire.SignalFrame(3, "a", "b", "c", False)
    assert wire.parse_client_frame('{"op":"ping","id":9}') == wire.PingFrame(9)
    assert wire.parse_client_frame('{"op":"disconnect"}') == wire.DisconnectFrame()
    assert wire.parse_client_frame(
        '{"op":"force_disconnect","id":2,"connection_id":"c"}') == wire.ForceDisconnectFrame(2, "c")


@pytest.mark.parametrize(("text", "code", "frame_id"), [
    ("nope", 400, None), ("[]", 400, None), ('{"op":1}', 400, None), ('{"op":"x","id":5}', 400, 5),
    ('{"op":"signal","id":true}', 400, None), ('{"op":"signal","id":2,"type":1}', 400, 2),
    ('{"op":"signal","id":2,"to":""}', 400, 2), ('{"op":"ping","id":1.5}', 400, None),
    ('{"op":"connect"}', 400, None),
    ('{"op":"connect","token":"t","resume":{"connection_id":"c"}}', 400, None),
    ('{"op":"connect","token":"t","resume":{"connection_id":"c","secret":"s","last_seq":-1}}', 400, None),
    ('{"op":"force_disconnect","id":1,"connection_id":5}', 400, 1),
    ('{"op":"signal","id":1,"data":"' + "x" * 70_000 + '"}', 413, None),
    ('{"op":"signal","id":1,"data":"' + "€" * 22_000 + '"}', 413, None),  # 66 000 bytes, 22 000 chars
])
def test_parse_refusals(text: str, code: int, frame_id: int | None) -> None:
    with pytest.raises(wire.WireError) as e:
        wire.parse_client_frame(text)
    assert (e.value.code, e.value.frame_id) == (code, frame_id) and e.value.message


def test_hub_frames_are_json_in_design_key_order() -> None:
    body = wire.SignalBody("robot.move", 'he said "hi"\n\u2028€', None, 123)
    f1, f2 = body.frame(1), body.frame(42)
    assert json.loads(f2) == {"op": "signal", "seq": 42, "type": "robot.move",
                              "data": 'he said "hi"\n\u2028€', "from": None, "ts": 123}
    assert list(json.loads(f1)) == ["op", "seq", "type", "data", "from", "ts"]
    assert json.loads(wire.SignalBody("", "", "c1", 1).frame(1))["from"] == "c1"
    me = Connection("a", "d", "publisher", 5)
    c = json.loads(*wire.connected_frames(me, [], "s", True, 7))
    assert c["resumed"] is True and c["connection"] == me.to_wire() and c["limits"]["max_data"] == 8192
    assert "last_id" not in c and "nacks" not in c  # only a resume that knows them passes them
    c = json.loads(*wire.connected_frames(me, [], "s", True, 7, 9, ((8, 404, "gone"),)))
    assert (c["last_id"], c["nacks"]) == (9, [{"id": 8, "code": 404, "message": "gone"}])
    assert json.loads(wire.nack(3, 404, "x")) == {"op": "nack", "id": 3, "code": 404, "message": "x"}
    assert json.loads(wire.pong(3, 9)) == {"op": "pong", "id": 3, "server_time": 9}


def test_token_bucket() -> None:
    b = TokenBucket(10, 3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.1) and not b.take(0.1)
    assert all(TokenBucket(0, 0, 0.0).take(0.0) for _ in range(10_000))
    assert not b.take(-5.0) and not b.take(0.1)  # a clock stepping back adds nothing
    assert all(TokenBucket(100, 1, 0.0).take(i / 100) for i in range(1000))  # exactly at the rate


class _Link:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed = False

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def close(self) -> None:
        self.closed = True


def join(st: MemoryEngine, link: Link, role: str = "publisher", data: str = "", *, sid: str = "s",
         now: float = 0.0, token_id: str = "") -> Member:
    out: list[object] = []
    st.join(JoinRequest(sid, role, data, token_id, now, 0), link, out.append)
    assert len(out) == 1 and isinstance(out[0], Admitted), out  # answered before join() returned
    return out[0].member


def join_refused(st: MemoryEngine, token_id: str, sid: str = "s") -> object:
    out: list[object] = []
    st.join(JoinRequest(sid, "publisher", "", token_id, 0.0, 0), _Link(), out.append)
    return out[0]


def resume(st: MemoryEngine, m: Member, link: Link, last_seq: int, *, secret: str | None = None,
           role: str | None = None, data: str | None = None, token_id: str = "X", now: float = 0.0) -> object:
    out: list[object] = []
    c = m.connection
    st.resume(ResumeRequest(m.session_id, c.id, m.secret if secret is None else secret, last_seq,
                     c.role if role is None else role, c.data if data is None else data, token_id, now),
              link, out.append)
    return out[0]


def leave(st: MemoryEngine, m: Member, reason: str = "clientDisconnected") -> None:
    st.leave(m.session_id, m.connection.id, reason, lambda _m: None)


def test_state_grace_replay_and_expiry() -> None:
    st = MemoryEngine(grace_s=5.0, replay_size=2)
    la, lb = _Link(), _Link()
    a = join(st, la)
    b = join(st, lb)
    assert la.sent[0]["op"] == "connection_created"
    b.deliver_signal(wire.SignalBody("t", "1", a.connection.id, 1), retry=True)
    st.link_lost(b, lb, now=1.0)
    for i in (2, 3, 4):
        b.deliver_signal(wire.SignalBody("t", str(i), None, 1), retry=True)
    b.deliver_signal(wire.SignalBody("t", "nr", None, 1), retry=False)
    assert (st.metrics.buffered, st.metrics.dropped) == (3, 2)  # "2" pushed out; "nr" not buffered
    assert st.expire(now=5.9) == [] and len(la.sent) == 1  # nobody told yet
    lb2 = _Link()
    resumed = resume(st, b, lb2, last_seq=1)
    assert isinstance(resumed, Admitted) and resumed.others == [a.connection]
    assert [json.loads(f)["data"] for f in resumed.replay] == ["3", "4"]
    assert (resumed.last_id, resumed.nacks) == (0, ())
    assert st.link_lost(b, lb2, now=10.0)
    assert not st.link_lost(b, lb, now=10.0)  # a stale link dropping later changes nothing
    assert b.grace_deadline == 15.0 and b.state == "grace"
    assert st.expire(now=15.0) == [b] and b.state == "gone"
    assert la.sent[-1]["op"] == "connection_destroyed" and la.sent[-1]["reason"] == "networkDisconnected"
    leave(st, a)
    assert st.sessions == {} and a.state == "gone"


def test_resume_tells_last_id_and_the_nacks_of_the_previous_link() -> None:
    st = MemoryEngine(grace_s=5.0, replay_size=2)
    link = _Link()
    m = join(st, link)
    assert m.last_id == 0  # a new connection starts from 0
    m.answered(1)
    m.answered(2, (404, "no such connection"))
    m.answered(5)
    st.link_lost(m, link, now=1.0)
    r = resume(st, m, _Link(), last_seq=0)
    assert isinstance(r, Admitted) and (r.last_id, r.nacks) == (5, ((2, 404, "no such connection"),))
    # The next resume lists only the nacks of the link in between; last_id is the highest id so far,
    # also when the client restarted its ids on the new link.
    m.answered(1, (429, "slow down"))
    r = resume(st, m, _Link(), last_seq=0)
    assert isinstance(r, Admitted) and (r.last_id, r.nacks) == (5, ((1, 429, "slow down"),))
    for i in range(6, 6 + MAX_REMEMBERED_NACKS + 10):
        m.answered(i, (429, "slow down"))
    r = resume(st, m, _Link(), last_seq=0)
    assert isinstance(r, Admitted) and r.last_id == 5 + MAX_REMEMBERED_NACKS + 10
    assert [n[0] for n in r.nacks] == list(range(16, 6 + MAX_REMEMBERED_NACKS + 10))  # the latest ones


def test_replay_buffers_are_bounded_in_bytes_and_by_the_shared_budget() -> None:
    budget = Budget(200_000)  # resume buffers may use at most half: 100,000 bytes
    st = MemoryEngine(grace_s=5.0, replay_size=1000, replay_bytes=50_000, budget=budget)
    links = [_Link() for _ in range(3)]
    members = [join(st, link) for link in links]
    for m, link in zip(members, links, strict=True):
        st.link_lost(m, link, now=1.0)
    for i in range(40):
        for m in members:
            m.deliver_signal(wire.SignalBody("t", f"{i:04d}" + "x" * 8000, None, 1), retry=True)
    sizes = [sum(cost for _, _, cost in m.replay) for m in members]
    assert all(s <= 50_000 for s in sizes) and sum(sizes) == budget.used <= 100_000
    # Each keeps its newest frames, in order; the hub-wide half is shared out.
    for m in members:
        seqs = [seq for seq, _, _ in m.replay]
        assert seqs == sorted(seqs) and (not seqs or seqs[-1] == 40)
    assert st.metrics.dropped == 3 * 40 - sum(len(m.replay) for m in members)
    leave(st, members[0])
    assert budget.used == sum(sizes[1:])  # a member leaving gives its bytes back


def test_join_caps_sessions_and_tokens_grace_members_included() -> None:
    st = MemoryEngine(grace_s=5.0, replay_size=2, max_per_session=3, max_per_token=2)
    link = _Link()
    a = join(st, link, token_id="T")
    join(st, _Link(), token_id="T")
    assert join_refused(st, "T") == join_refused(st, "T", sid="other") == (
        429, "too many connections for this token (hub.yaml max_connections_per_token)")
    st.link_lost(a, link, now=1.0)
    assert isinstance(join_refused(st, "T"), tuple)  # still in its grace window
    join(st, _Link(), token_id="U")
    assert join_refused(st, "V")[1].startswith("too many connections for this session")  # type: ignore[index]
    assert isinstance(join_refused(st, "V", sid="t"), Admitted)
    leave(st, a)
    assert isinstance(join_refused(st, "T", sid="t"), Admitted)
    assert st.metrics.caps_refused == {"token": 3, "session": 1}


def test_resume_check_grant_secret_rotation_and_throttle() -> None:
    st = MemoryEngine(grace_s=5.0, replay_size=2)
    m = join(st, _Link(), "moderator", "ops")
    secret = m.secret
    assert (resume(st, m, _Link(), 0, role="subscriber", now=1.0) or (0,))[0] == 403  # type: ignore[index]
    assert resume(st, m, _Link(), 0, secret="é\ud800", now=1.0)[0] == 403  # type: ignore[index]
    assert resume(st, m, _Link(), 0, now=1.1)[0] == 429  # type: ignore[index]  # X throttled
    link = _Link()
    assert isinstance(resume(st, m, link, 0, token_id="Y", now=1.1), Admitted)  # another token: not locked
    assert m.secret != secret and m.link is link
    assert isinstance(resume(st, m, _Link(), 0, secret=secret, token_id="Y", now=2.0), tuple)
    assert isinstance(resume(st, m, _Link(), 0, now=1.6), Admitted)  # 0.5 s after the guess
    assert link.closed  # the link it replaced is closed
    assert st.metrics.resume_refused == 4


def test_resume_of_a_connection_gone_is_none_so_the_hub_joins_afresh() -> None:
    st = MemoryEngine(grace_s=5.0, replay_size=2)
    m = join(st, _Link())
    leave(st, m)
    assert resume(st, m, _Link(), 0) is None


def test_member_life_cycle_follows_its_table() -> None:
    from bridge.core.hub.member import EXPIRED, GONE, LEFT, LINK_LOST, RESUMED, TRANSITIONS

    st = MemoryEngine(grace_s=5.0, replay_size=2)
    link = _Link()
    m = join(st, link)
    assert not m.to(EXPIRED)  # not in the table for a linked member
    assert m.to(LINK_LOST, link, 3.0) and m.state == "grace" and m.grace_deadline == 3.0
    assert not m.to(LINK_LOST, link, 9.0) and m.grace_deadline == 3.0
    assert m.to(RESUMED, _Link()) and m.grace_deadline is None
    assert m.to(LEFT) and m.state == GONE and not any(m.to(e) for e in (LEFT, EXPIRED, RESUMED))
    assert TRANSITIONS[GONE] == {}


def test_resume_throttle_backs_off_and_forgets_the_oldest() -> None:
    t = ResumeThrottle(base_s=0.5, max_s=4.0, max_keys=2)
    assert [t.failed("a", 0.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert t.wait("a", 1.0) == 3.0
    t.failed("b", 0.0)
    t.failed("c", 0.0)
    assert t.wait("a", 0.0) == 0.0  # forgotten: at most max_keys remembered
