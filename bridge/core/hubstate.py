"""Sans-I/O state of the session hub: sessions, connections, per-receiver seq, resume buffers, rate
limits and reconnection grace windows.

Theory of operation. A :class:`Member` is one connection of a session. It has a *link* (anything with
``send(text)`` and ``close()``; the aiohttp adapter hands one in) while its WebSocket is up, and
no link while it is inside its grace window after a dropped link. Every frame a member should receive
goes through :meth:`Member.deliver_signal`: a ``signal`` takes the member's next ``seq``; when the signal was
sent with ``retry: true`` its frame is also kept in the member's bounded *replay* buffer, whether the
link is up or not, so that frames written into a link that then died are not lost either. On resume
with ``last_seq`` = N, the frames with ``seq`` > N are sent again, in order. Signals sent with
``retry: false`` to a member without a link are dropped (and counted).

Duplicate signals *from* a member: a client re-sends a retry signal whose ack it did not get before its
link dropped, with the same ``id`` (ids count up over the connection's life, across resumes). The hub
may have relayed it already (only the ack was lost), so each member remembers the highest signal id it
has answered; :meth:`Member.repeat_answer` gives, for an id not above it, the answer to send again
(the ack, or the nack it got) and the hub does not relay that signal a second time.

Time is passed in: ``now`` is a monotonic clock in seconds (grace deadlines, token buckets). Nothing
here blocks, sleeps or schedules; the adapter calls :meth:`HubState.expire` when a deadline is due.
"""

from __future__ import annotations

import secrets
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from bridge.core import wire
from bridge.core.signal import NETWORK_DISCONNECTED, Connection


class Link(Protocol):
    """The adapter's side of one WebSocket: queue a text frame; close (after what is queued)."""

    def send(self, text: str) -> None: ...

    def close(self) -> None: ...


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. ``rate <= 0`` means no limit."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._tokens = self._burst
        self._last = now

    def take(self, now: float) -> bool:
        """Take one token; False when the bucket is empty (the caller answers 429)."""
        if self._rate <= 0:
            return True
        tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


@dataclass(slots=True)
class Metrics:
    """Counters shown on /metrics. Mutated in place by the hub; read by the adapter."""

    signals_in: int = 0
    signals_delivered: int = 0
    rest_signals: int = 0
    nacks: dict[int, int] = field(default_factory=dict)
    buffered: int = 0  # retry frames numbered while their receiver had no link
    dropped: int = 0  # frames lost: retry:false to a member without link, or pushed out of its buffer
    resumes: int = 0
    auth_failures: int = 0
    resent: int = 0  # signals re-sent by their client with an id already answered: answered, not relayed

    def nack(self, code: int) -> None:
        self.nacks[code] = self.nacks.get(code, 0) + 1


#: Nacks remembered per member for re-sent ids (a client re-sends only what it sent just before a drop).
MAX_REMEMBERED_NACKS = 256


class Member:
    """One connection of a session (see the module docstring for the life cycle)."""

    __slots__ = ("_linked_until", "_nacks", "_replay_size", "bucket", "connection", "grace_deadline",
                 "last_signal_id", "link", "metrics", "replay", "secret", "seq", "session_id")

    def __init__(self, session_id: str, connection: Connection, link: Link, bucket: TokenBucket,
                 replay_size: int, metrics: Metrics) -> None:
        self.session_id = session_id
        self.connection = connection
        self.link: Link | None = link
        self.secret = secrets.token_urlsafe(24)
        self.seq = 0
        self.replay: deque[tuple[int, str]] = deque()
        self.bucket = bucket
        self.grace_deadline: float | None = None
        self.metrics = metrics
        self._replay_size = max(replay_size, 0)
        # seq of the last frame written into a live link before it dropped: frames after it were only
        # buffered, so pushing one of them out of the replay buffer loses it (counted as dropped).
        self._linked_until = 0
        #: Highest signal id answered for this connection; a new connection starts from 0.
        self.last_signal_id = 0
        self._nacks: dict[int, str] = {}

    def repeat_answer(self, signal_id: int) -> str | None:
        """None for a new signal id (above every id answered so far): the caller checks and relays it.
        For an id already answered (a re-send after a lost ack), the answer frame to send again: the
        nack it got, when still remembered, else its ack. The caller must not relay it again."""
        if signal_id > self.last_signal_id:
            return None
        return self._nacks.get(signal_id) or wire.ack(signal_id)

    def answered(self, signal_id: int, nack_frame: str | None) -> None:
        """Record the answer to new signal ``signal_id``: None for an ack, else the nack frame sent."""
        self.last_signal_id = signal_id
        if nack_frame is not None:
            nacks = self._nacks
            nacks[signal_id] = nack_frame
            if len(nacks) > MAX_REMEMBERED_NACKS:
                del nacks[next(iter(nacks))]  # the oldest (dicts keep insertion order)

    def deliver_signal(self, body: wire.SignalBody, retry: bool) -> None:
        """Hand one signal to this member: numbered, sent if linked, kept for replay if ``retry``."""
        link = self.link
        if link is None and not (retry and self._replay_size):
            self.metrics.dropped += 1
            return
        self.seq += 1
        frame = body.frame(self.seq)
        if retry and self._replay_size:
            replay = self.replay
            if len(replay) >= self._replay_size:
                if link is None and replay[0][0] > self._linked_until:
                    self.metrics.dropped += 1
                replay.popleft()
            replay.append((self.seq, frame))
        if link is None:
            self.metrics.buffered += 1
        else:
            link.send(frame)
            self.metrics.signals_delivered += 1

    def send(self, text: str) -> None:
        """A non-signal frame (connection events, ...): sent when linked, else forgotten."""
        if self.link is not None:
            self.link.send(text)

    def replay_after(self, last_seq: int) -> list[str]:
        return [frame for seq, frame in self.replay if seq > last_seq]


class HubState:
    """All sessions of one hub. ``grace_s`` is the reconnection window; ``replay_size`` the bound of
    each member's replay buffer; ``rate``/``burst`` the per-connection signal rate limit (0 = off)."""

    def __init__(self, *, grace_s: float, replay_size: int, rate: float, burst: float) -> None:
        self.grace_s = grace_s
        self.replay_size = replay_size
        self.rate = rate
        self.burst = burst
        self.sessions: dict[str, dict[str, Member]] = {}
        self.metrics = Metrics()

    def join(self, session_id: str, role: str, data: str, link: Link, now: float,
             now_ms: int) -> Member:
        """Add a new connection; the others get ``connection_created``. The caller sends ``connected``."""
        conn = Connection(str(uuid.uuid4()), data, role, now_ms)
        member = Member(session_id, conn, link, TokenBucket(self.rate, self.burst, now),
                        self.replay_size, self.metrics)
        members = self.sessions.setdefault(session_id, {})
        frame = wire.connection_created(conn)
        for other in members.values():
            other.send(frame)
        members[conn.id] = member
        return member

    def find(self, session_id: str, connection_id: str) -> Member | None:
        members = self.sessions.get(session_id)
        return None if members is None else members.get(connection_id)

    def others(self, member: Member) -> list[Connection]:
        return [m.connection for m in self.sessions.get(member.session_id, {}).values() if m is not member]

    def resume(self, member: Member, link: Link, last_seq: int) -> list[str]:
        """Attach a new link to ``member`` (closing an old one the hub had not yet seen die).
        Returns the frames to replay after ``connected``, in order."""
        old = member.link
        member.link = link
        member.grace_deadline = None
        if old is not None and old is not link:
            old.close()
        self.metrics.resumes += 1
        return member.replay_after(last_seq)

    def link_lost(self, member: Member, link: Link, now: float) -> None:
        """The link of ``member`` dropped without ``disconnect``: start its grace window."""
        if member.link is not link:
            return  # an old link of a member that has resumed already
        member.link = None
        member._linked_until = member.seq
        member.grace_deadline = now + self.grace_s

    def leave(self, member: Member, reason: str) -> None:
        """Remove ``member`` for good; the others get ``connection_destroyed`` with ``reason``."""
        members = self.sessions.get(member.session_id)
        if members is None or members.get(member.connection.id) is not member:
            return
        del members[member.connection.id]
        member.link = None
        member.replay.clear()
        frame = wire.connection_destroyed(member.connection, reason)
        for other in members.values():
            other.send(frame)
        if not members:
            del self.sessions[member.session_id]

    def expire(self, now: float) -> list[Member]:
        """Remove the members whose grace window has ended (``networkDisconnected``)."""
        gone = [m for members in self.sessions.values() for m in members.values()
                if m.grace_deadline is not None and m.grace_deadline <= now]
        for m in gone:
            self.leave(m, NETWORK_DISCONNECTED)
        return gone

    def members(self, session_id: str) -> list[Member]:
        return list(self.sessions.get(session_id, {}).values())

    @property
    def connection_count(self) -> int:
        return sum(len(m) for m in self.sessions.values())

    def prometheus(self, links: int) -> str:
        """The /metrics page (Prometheus text format); ``links`` is the adapter's count of open links."""
        m = self.metrics
        values = [
            ("connections", "gauge", self.connection_count), ("links", "gauge", links),
            ("sessions", "gauge", len(self.sessions)), ("signals_received_total", "counter", m.signals_in),
            ("signals_rest_total", "counter", m.rest_signals),
            ("signals_delivered_total", "counter", m.signals_delivered),
            ("signals_buffered_total", "counter", m.buffered),
            ("signals_dropped_total", "counter", m.dropped),
            ("signals_resent_total", "counter", m.resent),
            ("resumes_total", "counter", m.resumes), ("auth_failures_total", "counter", m.auth_failures),
        ]
        lines: list[str] = []
        for name, kind, value in values:
            lines += [f"# TYPE sigbridge_{name} {kind}", f"sigbridge_{name} {value}"]
        lines.append("# TYPE sigbridge_nacks_total counter")
        lines += [f'sigbridge_nacks_total{{code="{code}"}} {n}' for code, n in sorted(m.nacks.items())]
        return "\n".join(lines) + "\n"
