"""One connection of a session as the hub holds it, and the table of its life cycle.

Theory of operation. A :class:`Member` is *linked* while a WebSocket of this hub carries it (``link``
is the adapter's :class:`Link`), in its *grace* window after that link dropped without ``disconnect``
(no link, ``grace_deadline`` set), and *gone* once it left (``disconnect``, forced out, or its grace
window ended). Every change of that state goes through :meth:`Member.to` and the table
:data:`TRANSITIONS`; an event the table does not list for the current state changes nothing (a stale
link dropping after a resume, a second ``leave``), and the caller is told so (False).

Every signal a member should receive goes through :meth:`Member.deliver_signal`: it takes the member's
next ``seq`` (contiguous per receiver); a ``retry: true`` signal's frame is also kept in the bounded
*replay* buffer, linked or not, so that frames written into a link that then died are not lost either.
On resume with ``last_seq`` = N, the frames with ``seq`` > N are sent again, in order. A ``retry:
false`` signal to a member without a link is dropped (and counted).

Bounds. A replay buffer holds at most ``replay_size`` frames and ``replay_bytes`` bytes (the oldest
go first), and all of them together at most half of the hub-wide :class:`~bridge.core.hub.limits.Budget`
(a frame that does not fit is not kept: counted as dropped when its member has no link).

Signals *from* a member: ``last_id`` is the highest signal id processed (acked or nacked) on any of its
links; the nacks given on the current link are remembered (the newest :data:`MAX_REMEMBERED_NACKS`)
for the next resume, so that a client re-sends only what the hub never had.
"""

from __future__ import annotations

import secrets
import sys
from collections import deque
from typing import Protocol

from bridge.core import wire
from bridge.core.hub.counters import Metrics
from bridge.core.hub.limits import Budget
from bridge.core.signal import Connection
from bridge.core.tokenbucket import TokenBucket

_sizeof = sys.getsizeof  # what a kept frame holds in memory

#: Nacks of the current link remembered per member for the next resume (the most recent ones).
MAX_REMEMBERED_NACKS = 256

# States and events of the life cycle.
LINKED, GRACE, GONE = "linked", "grace", "gone"
LINK_LOST, RESUMED, LEFT, EXPIRED = "link_lost", "resumed", "left", "expired"

#: state -> {event: next state}. Resuming a linked member is the take-over of a link the hub had not
#: yet seen die; nothing leaves GONE.
TRANSITIONS: dict[str, dict[str, str]] = {
    LINKED: {LINK_LOST: GRACE, RESUMED: LINKED, LEFT: GONE},
    GRACE: {RESUMED: LINKED, LEFT: GONE, EXPIRED: GONE},
    GONE: {},
}


class Link(Protocol):
    """The adapter's side of one WebSocket: queue a text frame; close (after what is queued)."""

    def send(self, text: str) -> None: ...

    def close(self) -> None: ...


class Member:
    """One connection of a session (see the module docstring for the life cycle)."""

    __slots__ = ("_budget", "_linked_until", "_replay_bytes", "_replay_max_bytes", "_replay_size",
                 "bucket", "connection", "grace_deadline", "last_id", "link", "metrics", "nacks", "replay",
                 "secret", "seq", "session_id", "state", "strikes", "token_id")

    def __init__(self, session_id: str, connection: Connection, link: Link, bucket: TokenBucket,
                 replay_size: int, metrics: Metrics, *, token_id: str = "",
                 strikes: TokenBucket | None = None, replay_bytes: int = 0,
                 budget: Budget | None = None) -> None:
        self.session_id = session_id
        self.connection = connection
        self.link: Link | None = link
        self.state = LINKED
        #: What the next resume must present; every resume hands out a new one.
        self.secret = secrets.token_urlsafe(24)
        #: tokens.token_identity of the token that created this connection (per-token caps).
        self.token_id = token_id
        self.seq = 0
        self.replay: deque[tuple[int, str, int]] = deque()  # (seq, frame, bytes)
        #: Every frame received takes a token; frames over the rate take from ``strikes``, and a link
        #: that empties both (sustained flood at twice the rate) is cut. Both outlive a link.
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
        #: id -> (code, message): the nacks of the current link, oldest first.
        self.nacks: dict[int, tuple[int, str]] = {}

    # ---- the life cycle (every state change is here) ---------------------------------------------

    def to(self, event: str, link: Link | None = None, deadline: float | None = None) -> bool:
        """Apply ``event``; False (nothing changed) when :data:`TRANSITIONS` has no such step, or for
        ``LINK_LOST`` of a link that is not the member's (an old one, after a resume). ``link`` is the
        link lost (``LINK_LOST``) or the new one (``RESUMED``, which closes an old one still open);
        ``deadline`` the end of the grace window (``LINK_LOST``)."""
        nxt = TRANSITIONS[self.state].get(event)
        if nxt is None or (event == LINK_LOST and self.link is not link):
            return False
        self.state = nxt
        if event == LINK_LOST:
            self.link = None
            self._linked_until = self.seq
            self.grace_deadline = deadline
        elif event == RESUMED:
            old, self.link = self.link, link
            self.grace_deadline = None
            self.secret = secrets.token_urlsafe(24)
            if old is not None and old is not link:
                old.close()
        else:  # LEFT, EXPIRED
            self.link = None
            self.grace_deadline = None
            self._clear_replay()
        return True

    # ---- signals from it -------------------------------------------------------------------------

    def answered(self, signal_id: int, refusal: tuple[int, str] | None = None) -> None:
        """Record that signal ``signal_id`` was processed: acked (``refusal`` None) or nacked with
        ``(code, message)``. Called for every signal as it is answered."""
        if signal_id > self.last_id:
            self.last_id = signal_id
        if refusal is not None:
            nacks = self.nacks
            nacks.pop(signal_id, None)  # re-inserted last: the newest (a client may reuse an id)
            nacks[signal_id] = refusal
            if len(nacks) > MAX_REMEMBERED_NACKS:
                del nacks[next(iter(nacks))]  # the oldest (dicts keep insertion order)

    def take_nacks(self) -> tuple[tuple[int, int, str], ...]:
        """The nacks of the link that is being replaced, as (id, code, message), forgotten here."""
        nacks = tuple((i, code, message) for i, (code, message) in self.nacks.items())
        self.nacks.clear()
        return nacks

    # ---- signals to it ---------------------------------------------------------------------------

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

    def send(self, text: str) -> None:
        """A non-signal frame (connection events, ...): sent when linked, else forgotten."""
        if self.link is not None:
            self.link.send(text)

    def replay_after(self, last_seq: int) -> list[str]:
        """The kept frames numbered above ``last_seq``, in order."""
        return [frame for seq, frame, _ in self.replay if seq > last_seq]

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

    def _clear_replay(self) -> None:
        while self.replay:
            _, _, cost = self.replay.popleft()
            self._budget.give(cost)
        self._replay_bytes = 0
