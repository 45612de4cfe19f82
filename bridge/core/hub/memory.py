"""The in-memory hub engine: every session of one hub process in its dicts (the default engine; see
:mod:`bridge.core.hub.engine` for the contract). Every ``done`` is called before the method returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from bridge.core import wire
from bridge.core.hub.admission import NO_SUCH_CONNECTION, cap_message, caps_refusal, resume_refusal
from bridge.core.hub.counters import Metrics
from bridge.core.hub.engine import Admitted, Answer, JoinRequest, Refusal, ResumeRequest
from bridge.core.hub.limits import Budget, ResumeThrottle
from bridge.core.hub.member import EXPIRED, LEFT, LINK_LOST, RESUMED, Link, Member
from bridge.core.signal import NETWORK_DISCONNECTED, Connection
from bridge.core.tokenbucket import TokenBucket


class MemoryEngine:
    """All sessions of one hub. ``grace_s`` is the reconnection window; ``replay_size`` and
    ``replay_bytes`` the bounds of each member's replay buffer; ``rate``/``burst`` the per-connection
    frame rate limit (0 = off); ``budget`` the hub-wide byte budget (shared with the adapter's
    outboxes); ``max_per_session``/``max_per_token`` the connection caps (0 = none)."""

    def __init__(self, *, grace_s: float, replay_size: int, rate: float = 0, burst: float = 0,
                 replay_bytes: int = 0, budget: Budget | None = None, max_per_session: int = 0,
                 max_per_token: int = 0, metrics: Metrics | None = None) -> None:
        self.grace_s = grace_s
        self.replay_size = replay_size
        self.replay_bytes = replay_bytes
        self.rate = rate
        self.burst = burst
        self.budget = budget if budget is not None else Budget(0)
        self.max_per_session = max_per_session
        self.max_per_token = max_per_token
        self.sessions: dict[str, dict[str, Member]] = {}
        self._per_token: dict[str, int] = {}
        self.resume_throttle = ResumeThrottle()
        self.metrics = metrics if metrics is not None else Metrics()

    # ---- joining and resuming --------------------------------------------------------------------

    def join(self, req: JoinRequest, link: Link, done: Callable[[Admitted | Refusal], None]) -> None:
        cap = caps_refusal(len(self.sessions.get(req.session_id, ())), self._per_token.get(req.token_id, 0),
                           self.max_per_session, self.max_per_token)
        if cap is not None:
            self.metrics.refused_cap(cap)
            done(cap_message(cap))
            return
        conn = Connection(str(uuid.uuid4()), req.data, req.role, req.now_ms, req.token_id)
        member = Member(req.session_id, conn, link, TokenBucket(self.rate, self.burst, req.now),
                        self.replay_size, self.metrics, token_id=req.token_id,
                        strikes=TokenBucket(self.rate, self.burst, req.now),
                        replay_bytes=self.replay_bytes, budget=self.budget)
        self._per_token[req.token_id] = self._per_token.get(req.token_id, 0) + 1
        members = self.sessions.setdefault(req.session_id, {})
        others = [m.connection for m in members.values()]
        frame = wire.connection_created(conn)
        for other in members.values():
            other.send(frame)
        members[conn.id] = member
        done(Admitted(member, others))

    def resume(self, req: ResumeRequest, link: Link,
               done: Callable[[Admitted | Refusal | None], None]) -> None:
        member = self.find(req.session_id, req.connection_id)
        if member is None:
            done(None)
            return
        c = member.connection
        throttle = self.resume_throttle
        refused = resume_refusal(throttle.wait(req.token_id, req.now), (req.role, req.data),
                                 (c.role, c.data), member.secret, req.secret)
        if refused is not None:
            refusal, wrong_secret = refused
            if wrong_secret:
                throttle.failed(req.token_id, req.now)
            self.metrics.resume_refused += 1
            done(refusal)
            return
        throttle.succeeded(req.token_id)
        member.to(RESUMED, link)
        self.metrics.resumes += 1
        others = [m.connection for m in self.sessions[req.session_id].values() if m is not member]
        done(Admitted(member, others, True, member.last_id, member.take_nacks(),
                      tuple(member.replay_after(req.last_seq))))

    # ---- signals (the hot path) ------------------------------------------------------------------

    def signal(self, sender: Member | None, frame_id: int, session_id: str, to: str | None,
               body: wire.SignalBody, retry: bool, done: Answer) -> None:
        members = self.sessions.get(session_id)
        if to is not None:
            target = None if members is None else members.get(to)
            if target is None:
                if sender is not None:
                    sender.answered(frame_id, NO_SUCH_CONNECTION)
                done(sender, frame_id, NO_SUCH_CONNECTION)
                return
            if sender is not None:
                sender.answered(frame_id)
            target.deliver_signal(body, retry)
        else:
            if sender is not None:
                sender.answered(frame_id)
            if members is not None:
                # A broadcast's sender gets its copy first; delivery never changes membership.
                for m in members.values():
                    m.deliver_signal(body, retry)
        done(sender, frame_id, None)

    def answered(self, member: Member, frame_id: int, refusal: Refusal) -> None:
        member.answered(frame_id, refusal)

    # ---- leaving ---------------------------------------------------------------------------------

    def link_lost(self, member: Member, link: Link, now: float) -> bool:
        return member.to(LINK_LOST, link, now + self.grace_s)

    def leave(self, session_id: str, connection_id: str, reason: str,
              done: Callable[[Member | None], None]) -> None:
        member = self.find(session_id, connection_id)
        done(member)
        if member is not None:
            self._remove(member, LEFT, reason)

    def expire(self, now: float) -> list[Member]:
        gone = [m for members in self.sessions.values() for m in members.values()
                if m.grace_deadline is not None and m.grace_deadline <= now]
        for m in gone:
            self._remove(m, EXPIRED, NETWORK_DISCONNECTED)
        return gone

    def _remove(self, member: Member, event: str, reason: str) -> None:
        members = self.sessions[member.session_id]
        del members[member.connection.id]
        member.to(event)
        left = self._per_token.pop(member.token_id, 0) - 1
        if left > 0:
            self._per_token[member.token_id] = left
        frame = wire.connection_destroyed(member.connection, reason)
        for other in members.values():
            other.send(frame)
        if not members:
            del self.sessions[member.session_id]

    # ---- looking -----------------------------------------------------------------------------------

    def connections(self, session_id: str,
                    done: Callable[[list[tuple[Connection, bool]]], None]) -> None:
        done([(m.connection, m.link is not None) for m in self.sessions.get(session_id, {}).values()])

    def find(self, session_id: str, connection_id: str) -> Member | None:
        members = self.sessions.get(session_id)
        return None if members is None else members.get(connection_id)

    @property
    def buffered_bytes(self) -> int:
        return self.budget.used
