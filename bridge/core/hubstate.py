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

Bounds. A replay buffer holds at most ``replay_size`` frames and ``replay_bytes`` bytes (the oldest
go first), and all of them together at most half of the hub-wide :class:`~bridge.core.hublimits.Budget`
(a frame that does not fit is not kept: counted as dropped when its member has no link). A session holds
at most ``max_per_session`` members and one token at most ``max_per_token`` (:meth:`HubState.admit`),
members in their grace window included. A resume presents the secret of the ``connected`` frame it
resumes from; every resume hands out a new one (:meth:`HubState.resume`).

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
import sys
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from bridge.core import wire
from bridge.core.hublimits import Budget, ResumeThrottle
from bridge.core.signal import FORBIDDEN, NETWORK_DISCONNECTED, TOO_MANY, Connection

_sizeof = sys.getsizeof  # what a kept frame holds in memory


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


#: One /metrics sample: (name without the sigbridge_ prefix, "counter" | "gauge", labels, value).
MetricRow = tuple[str, str, tuple[tuple[str, str], ...], int | float]


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
    resume_refused: int = 0  # wrong or malformed secret, other token grant, or throttled
    slow_receivers: int = 0  # links closed because their outbox went past its bound (or the budget)
    flood_disconnects: int = 0  # links closed for sending frames far over their rate limit
    frames_refused: int = 0  # frames over the rate limit (signals nacked 429, the rest dropped)
    refused_frames: dict[str, int] = field(default_factory=dict)  # malformed frames by kind
    caps_refused: dict[str, int] = field(default_factory=dict)  # connections refused by which cap
    accept_errors: int = 0  # accept() failures (EMFILE...) the event loop reported
    bad_http_requests: int = 0  # requests aiohttp could not parse or serve (answered with a bare status)

    def nack(self, code: int) -> None:
        self.nacks[code] = self.nacks.get(code, 0) + 1


#: Nacks of the current link remembered per member for the next resume (the most recent ones).
MAX_REMEMBERED_NACKS = 256


class Member:
    """One connection of a session (see the module docstring for the life cycle)."""

    __slots__ = ("_budget", "_linked_until", "_nacks", "_replay_bytes", "_replay_max_bytes",
                 "_replay_size", "bucket", "connection", "grace_deadline", "last_id", "link", "metrics",
                 "replay", "secret", "seq", "session_id", "strikes", "token_id")

    def __init__(self, session_id: str, connection: Connection, link: Link, bucket: TokenBucket,
                 replay_size: int, metrics: Metrics, *, token_id: str = "",
                 strikes: TokenBucket | None = None, replay_bytes: int = 0,
                 budget: Budget | None = None) -> None:
        self.session_id = session_id
        self.connection = connection
        self.link: Link | None = link
        self.secret = secrets.token_urlsafe(24)
        #: tokens.token_identity of the token that created this connection (per-token caps).
        self.token_id = token_id
        self.seq = 0
        self.replay: deque[tuple[int, str, int]] = deque()  # (seq, frame, bytes)
        #: Every frame received takes a token; frames over the rate take from ``strikes``, and a link
        #: that empties both (sustained flood at twice the rate) is closed by the adapter.
        self.bucket = bucket
        self.strikes = strikes if strikes is not None else TokenBucket(0, 0, 0.0)
        self.grace_deadline: float | None = None
        self.metrics = metrics
        self._replay_size = max(replay_size, 0)
        self._replay_max_bytes = replay_bytes  # 0: no byte bound of its own
        self._replay_bytes = 0
        self._budget = budget if budget is not None else Budget(0)
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
        if retry and self._replay_size and not self._keep(frame) and link is None:
            self.metrics.dropped += 1  # numbered but neither sent nor kept: lost (and counted)
            return
        if link is None:
            self.metrics.buffered += 1
        else:
            link.send(frame)
            self.metrics.signals_delivered += 1

    def _keep(self, frame: str) -> bool:
        """Put ``frame`` (numbered ``self.seq``) into the replay buffer, pushing out the oldest frames
        as the bounds need; False when it cannot fit (the hub-wide budget is spent)."""
        cost = _sizeof(frame)
        replay, budget = self.replay, self._budget
        max_bytes = self._replay_max_bytes
        if (len(replay) < self._replay_size and not (max_bytes and self._replay_bytes + cost > max_bytes)
                and (not budget.limit or budget.used + cost <= budget.resume_limit)):
            budget.used += cost  # the common case, inlined: within every bound
        else:
            return self._keep_bounded(frame, cost)
        replay.append((self.seq, frame, cost))
        self._replay_bytes += cost
        return True

    def _keep_bounded(self, frame: str, cost: int) -> bool:
        """:meth:`_keep` past a bound: the oldest frames go until this one fits (all inline: with a full
        buffer this runs for every retry signal)."""
        replay, budget, metrics = self.replay, self._budget, self.metrics
        max_bytes, ceiling = self._replay_max_bytes, budget.resume_limit
        lost_after = self._linked_until if self.link is None else None  # frames never written
        while replay and (len(replay) >= self._replay_size
                          or (max_bytes and self._replay_bytes + cost > max_bytes)
                          or (ceiling and budget.used + cost > ceiling)):
            seq, _, old = replay.popleft()
            self._replay_bytes -= old
            budget.used -= old
            if lost_after is not None and seq > lost_after:
                metrics.dropped += 1
        if (max_bytes and cost > max_bytes) or (ceiling and budget.used + cost > ceiling):
            return False
        budget.used += cost
        replay.append((self.seq, frame, cost))
        self._replay_bytes += cost
        return True

    def clear_replay(self) -> None:
        while self.replay:
            _, _, cost = self.replay.popleft()
            self._budget.give(cost)
        self._replay_bytes = 0

    def send(self, text: str) -> None:
        """A non-signal frame (connection events, ...): sent when linked, else forgotten."""
        if self.link is not None:
            self.link.send(text)

    def replay_after(self, last_seq: int) -> list[str]:
        return [frame for seq, frame, _ in self.replay if seq > last_seq]


@dataclass(frozen=True, slots=True)
class Resumed:
    """The outcome of :meth:`HubState.resume`: ``last_id`` and ``nacks`` (id, code, message) for the
    ``connected`` frame, then ``replay``, the signal frames to send after it, in order."""

    last_id: int
    nacks: tuple[tuple[int, int, str], ...]
    replay: list[str]


class HubState:
    """All sessions of one hub. ``grace_s`` is the reconnection window; ``replay_size`` and
    ``replay_bytes`` the bounds of each member's replay buffer; ``rate``/``burst`` the per-connection
    frame rate limit (0 = off); ``budget`` the hub-wide byte budget (shared with the adapter's
    outboxes); ``max_per_session``/``max_per_token`` the connection caps (0 = none)."""

    def __init__(self, *, grace_s: float, replay_size: int, rate: float, burst: float,
                 replay_bytes: int = 0, budget: Budget | None = None, max_per_session: int = 0,
                 max_per_token: int = 0) -> None:
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
        self.metrics = Metrics()

    def admit(self, session_id: str, token_id: str) -> str | None:
        """None when a new connection of ``token_id`` may join ``session_id``, else the cap it would
        break ("session" or "token"; the adapter refuses it with 429, counted per cap)."""
        cap = None
        if self.max_per_session and len(self.sessions.get(session_id, ())) >= self.max_per_session:
            cap = "session"
        elif self.max_per_token and self._per_token.get(token_id, 0) >= self.max_per_token:
            cap = "token"
        if cap is not None:
            self.metrics.caps_refused[cap] = self.metrics.caps_refused.get(cap, 0) + 1
        return cap

    def join(self, session_id: str, role: str, data: str, link: Link, now: float,
             now_ms: int, token_id: str = "") -> Member:
        """Add a new connection; the others get ``connection_created``. The caller sends ``connected``
        (and asks :meth:`admit` first: ``join`` itself never refuses). ``token_id`` is the identity of
        the token it joined with (``tokens.token_identity``)."""
        conn = Connection(str(uuid.uuid4()), data, role, now_ms, token_id)
        member = Member(session_id, conn, link, TokenBucket(self.rate, self.burst, now),
                        self.replay_size, self.metrics, token_id=token_id,
                        strikes=TokenBucket(self.rate, self.burst, now), replay_bytes=self.replay_bytes,
                        budget=self.budget)
        self._per_token[token_id] = self._per_token.get(token_id, 0) + 1
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
        sent on that link) and are forgotten here. The member gets a new ``secret`` (for the resumed
        ``connected`` frame): the one just presented never works again. Contract for the adapter: the
        token and secret have been checked (:meth:`resume_check`); once this has returned,
        frames still arriving on the old link must be ignored, not processed: ``last_id`` has been
        told to the client, which re-sends on the new link whatever lies above it."""
        old = member.link
        member.link = link
        member.grace_deadline = None
        member.secret = secrets.token_urlsafe(24)
        if old is not None and old is not link:
            old.close()
        self.metrics.resumes += 1
        nacks = tuple((i, code, message) for i, (code, message) in member._nacks.items())
        member._nacks.clear()
        return Resumed(member.last_id, nacks, member.replay_after(last_seq))

    def resume_check(self, member: Member, role: str, data: str, token_id: str, secret: str,
                     now: float) -> tuple[int, str] | None:
        """None when a token granting ``role``/``data`` (identity ``token_id``) and ``secret`` may resume
        ``member``, else the refusal (code, message). A wrong secret (of any shape: it is compared as
        bytes) throttles ``token_id`` (:class:`~bridge.core.hublimits.ResumeThrottle`); a token for
        another role or connection data than the member's is refused outright."""
        wait = self.resume_throttle.wait(token_id, now)
        if wait > 0:
            refusal: tuple[int, str] = (TOO_MANY, f"too many wrong resume secrets, retry in {wait:.1f} s")
        elif (role, data) != (member.connection.role, member.connection.data):
            refusal = (FORBIDDEN, "this token is not the one of the connection it tries to resume")
        elif not secrets.compare_digest(member.secret.encode(), secret.encode("utf-8", "surrogatepass")):
            self.resume_throttle.failed(token_id, now)
            refusal = (FORBIDDEN, "resume secret does not match that connection")
        else:
            self.resume_throttle.succeeded(token_id)
            return None
        self.metrics.resume_refused += 1
        return refusal

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
        member.clear_replay()
        left = self._per_token.pop(member.token_id, 0) - 1
        if left > 0:
            self._per_token[member.token_id] = left
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

    def metric_rows(self, links: int) -> list[MetricRow]:
        """What /metrics shows, as data (the adapter renders it with prometheus-client): one
        ``(name, kind, labels, value)`` per sample, ``name`` without the ``sigbridge_`` prefix, counters
        named with ``_total``. ``links`` is the adapter's count of open links."""
        m = self.metrics
        values: list[tuple[str, str, int | float]] = [
            ("connections", "gauge", self.connection_count), ("links", "gauge", links),
            ("sessions", "gauge", len(self.sessions)), ("signals_received_total", "counter", m.signals_in),
            ("signals_rest_total", "counter", m.rest_signals),
            ("signals_delivered_total", "counter", m.signals_delivered),
            ("signals_buffered_total", "counter", m.buffered),
            ("signals_dropped_total", "counter", m.dropped),
            ("resumes_total", "counter", m.resumes), ("auth_failures_total", "counter", m.auth_failures),
            ("resume_refused_total", "counter", m.resume_refused),
            ("slow_receivers_total", "counter", m.slow_receivers),
            ("flood_disconnects_total", "counter", m.flood_disconnects),
            ("frames_refused_total", "counter", m.frames_refused),
            ("accept_errors_total", "counter", m.accept_errors),
            ("bad_http_requests_total", "counter", m.bad_http_requests),
            ("buffered_bytes", "gauge", self.budget.used),
        ]
        rows: list[MetricRow] = [(name, kind, (), value) for name, kind, value in values]
        for name, label, counts in (("nacks_total", "code", m.nacks),
                                    ("malformed_frames_total", "kind", m.refused_frames),
                                    ("connections_refused_total", "cap", m.caps_refused)):
            rows += [(name, "counter", ((label, str(k)),), n) for k, n in sorted(counts.items())]
        return rows
