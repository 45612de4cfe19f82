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

Signals *from* a member: the hub keeps, per connection, ``last_id``, the highest signal id it has
processed (acked or nacked) on any of its links, and the nacks given on the current link. A resumed
``connected`` carries both (:meth:`HubState.resume`), so a client knows which of its unanswered
signals the hub already had (only their answers were lost with the link) and re-sends only those
above ``last_id``. Ids are otherwise taken as they come: nothing is dropped for its id, so a client
that restarts its ids at 1 on a new link (wire v1 allows it) is served normally.

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

    def nack(self, code: int) -> None:
        self.nacks[code] = self.nacks.get(code, 0) + 1


#: Nacks of the current link remembered per member for the next resume (the most recent ones).
MAX_REMEMBERED_NACKS = 256


class Member:
    """One connection of a session (see the module docstring for the life cycle)."""

    __slots__ = ("_linked_until", "_nacks", "_replay_size", "bucket", "connection", "grace_deadline",
                 "last_id", "link", "metrics", "replay", "secret", "seq", "session_id")

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
        #: Highest signal id processed (acked or nacked) for this connection; a new one starts from 0.
        self.last_id = 0
        self._nacks: dict[int, tuple[int, str]] = {}  # id -> (code, message), current link only

    def answered(self, signal_id: int, refusal: tuple[int, str] | None = None) -> None:
        """Record that signal ``signal_id`` was processed: acked (``refusal`` None) or nacked with
        ``(code, message)``. Call it for every signal as it is answered."""
        if signal_id > self.last_id:
            self.last_id = signal_id
        if refusal is not None:
            nacks = self._nacks
            nacks.pop(signal_id, None)  # re-inserted last: the newest (a client may reuse an id)
            nacks[signal_id] = refusal
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


@dataclass(frozen=True, slots=True)
class Resumed:
    """The outcome of :meth:`HubState.resume`: ``last_id`` and ``nacks`` (id, code, message) for the
    ``connected`` frame, then ``replay``, the signal frames to send after it, in order."""

    last_id: int
    nacks: tuple[tuple[int, int, str], ...]
    replay: list[str]


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
             now_ms: int, token_id: str = "") -> Member:
        """Add a new connection; the others get ``connection_created``. The caller sends ``connected``.
        ``token_id`` is the identity of the token it joined with (``tokens.token_identity``)."""
        conn = Connection(str(uuid.uuid4()), data, role, now_ms, token_id)
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

    def resume(self, member: Member, link: Link, last_seq: int) -> Resumed:
        """Attach a new link to ``member`` (closing an old one the hub had not yet seen die).

        Returns what the resumed ``connected`` frame needs and the frames to replay after it. The nacks
        handed back are those given on the previous link (anything a client still waits for was last
        sent on that link) and are forgotten here. Contract for the adapter: once this has returned,
        frames still arriving on the old link must be ignored, not processed: ``last_id`` has been
        told to the client, which re-sends on the new link whatever lies above it."""
        old = member.link
        member.link = link
        member.grace_deadline = None
        if old is not None and old is not link:
            old.close()
        self.metrics.resumes += 1
        nacks = tuple((i, code, message) for i, (code, message) in member._nacks.items())
        member._nacks.clear()
        return Resumed(member.last_id, nacks, member.replay_after(last_seq))

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
            ("resumes_total", "counter", m.resumes), ("auth_failures_total", "counter", m.auth_failures),
        ]
        lines: list[str] = []
        for name, kind, value in values:
            lines += [f"# TYPE sigbridge_{name} {kind}", f"sigbridge_{name} {value}"]
        lines.append("# TYPE sigbridge_nacks_total counter")
        lines += [f'sigbridge_nacks_total{{code="{code}"}} {n}' for code, n in sorted(m.nacks.items())]
        return "\n".join(lines) + "\n"
