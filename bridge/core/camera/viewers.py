"""The camera's viewers: who may watch, how many at once, and when a stream is given up.

Theory of operation. One stream per viewer connection, each with its own peer connection (the
adapter's). A stream moves through

    OFFERING --offer_ready--> AWAITING_ANSWER --answer complete--> CONNECTING --connected--> LIVE

and ends (``Close`` for the adapter, ``camera.ended`` for the viewer unless it asked) on
``camera.stop``, a new ``camera.watch`` from the same viewer (``replaced``), the viewer leaving the
session (no signal: it is gone), a failure reported by the adapter, or a timeout checked by
:meth:`Viewers.tick`: no offer or no answer within ``answer_timeout_ms``, not connected within
``connect_timeout_ms``, or live but silent (no RTCP from the viewer, reported as :meth:`alive`) for
``stall_timeout_ms``. So a viewer that leaves or stalls holds nothing after its timeout.

Everything affecting a stream's state lives in this file. Methods take the time (ms, monotonic) and
return the actions to carry out, in order; nothing here does I/O.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from bridge.core.camera import signals as cs
from bridge.core.signal import FORBIDDEN, NOT_FOUND, TOO_MANY


@dataclass(frozen=True, slots=True)
class ViewerPolicy:
    """``viewers:`` of camera.yaml, and the camera's name."""

    name: str = "camera"
    roles: frozenset[str] = frozenset({"moderator", "publisher"})
    max_viewers: int = 2
    answer_timeout_ms: int = 10_000
    connect_timeout_ms: int = 10_000
    stall_timeout_ms: int = 5_000
    #: A viewer's next camera.watch is refused (429) sooner than this after its last one: each watch
    #: costs a peer connection, a DTLS key and an offer, and a replaced one is thrown away.
    watch_interval_ms: int = 1_000
    #: Trickled candidates accepted per stream (a browser sends a handful); the rest are refused.
    max_candidates: int = 32


class State(enum.Enum):
    OFFERING = "offering"
    AWAITING_ANSWER = "awaiting_answer"
    CONNECTING = "connecting"
    LIVE = "live"


# ---------------------------------------------------------------- actions for the adapter


@dataclass(frozen=True, slots=True)
class Send:
    """Send a targeted, ``retry: false`` signal."""

    to: str
    type: str
    data: str


@dataclass(frozen=True, slots=True)
class Open:
    """Create a peer connection for ``stream`` and report its offer with :meth:`Viewers.offer_ready`
    (or :meth:`Viewers.failed`)."""

    stream: str
    viewer: str


@dataclass(frozen=True, slots=True)
class ApplyAnswer:
    stream: str
    sdp: str


@dataclass(frozen=True, slots=True)
class AddCandidate:
    stream: str
    candidate: cs.Candidate


@dataclass(frozen=True, slots=True)
class Close:
    """Close the stream's peer connection; nothing of it may be left afterwards."""

    stream: str
    reason: str


Action = Send | Open | ApplyAnswer | AddCandidate | Close


@dataclass(slots=True)
class _Stream:
    id: str
    viewer: str
    state: State
    since_ms: float
    alive_ms: float
    answer: cs.Reassembly = field(default_factory=cs.Reassembly)
    candidates: int = 0


class Viewers:
    """The viewer table of one camera. ``info`` goes to viewers with each offer (size, rate, codec);
    ``stream_prefix`` makes stream ids of this run distinct from those of an earlier run."""

    def __init__(self, policy: ViewerPolicy, info: dict[str, Any], stream_prefix: str) -> None:
        self.policy = policy
        self.info = dict(info, camera=policy.name)
        self._prefix = stream_prefix
        self._next = 0
        self._streams: dict[str, _Stream] = {}
        self._by_viewer: dict[str, str] = {}
        self._last_watch: dict[str, float] = {}
        self.counters: dict[str, int] = {"watches": 0, "refused": 0, "bad": 0, "live": 0}
        self.ended: dict[str, int] = {}

    # ------------------------------------------------------------ signals

    def on_signal(self, now_ms: float, sender: str, role: str, type_: str, data: str) -> list[Action]:
        """A ``camera.*`` signal from connection ``sender`` with the role the hub gave it."""
        msg = cs.parse(type_, data)
        if isinstance(msg, cs.Watch) and msg.camera not in (None, self.policy.name):
            return []                       # another camera's viewer
        if role not in self.policy.roles:
            self.counters["refused"] += 1
            allowed = ", ".join(sorted(self.policy.roles))
            return [Send(sender, cs.REFUSED, cs.refused(
                FORBIDDEN, f"camera {self.policy.name!r} shows its picture to the roles {allowed}; "
                           f"this connection's role is {role!r}"))]
        if isinstance(msg, cs.Bad):
            self.counters["bad"] += 1
            return [Send(sender, cs.REFUSED, cs.refused(msg.code, msg.message))]
        if isinstance(msg, cs.Describe):
            return [Send(sender, cs.STATUS, self.status_json())]
        if isinstance(msg, cs.Watch):
            return self._watch(now_ms, sender)
        stream = self._streams.get(msg.stream)
        if stream is None or stream.viewer != sender:
            if isinstance(msg, cs.Stop):
                return []                   # already over: nothing to do, nothing to say
            return [Send(sender, cs.REFUSED, cs.refused(
                NOT_FOUND, f"{type_}: no stream {msg.stream!r} of this connection (ended, or never "
                           f"offered); send {cs.WATCH} to start one", msg.stream))]
        if isinstance(msg, cs.Stop):
            return self._end(stream, "stopped by the viewer", tell=False)
        if isinstance(msg, cs.AnswerPart):
            return self._answer(now_ms, stream, msg)
        stream.candidates += 1
        if stream.candidates > self.policy.max_candidates:     # said once, then ignored quietly
            return [] if stream.candidates > self.policy.max_candidates + 1 else [Send(
                sender, cs.REFUSED, cs.refused(TOO_MANY, f"{cs.CANDIDATE}: at most "
                                               f"{self.policy.max_candidates} candidates per stream; the "
                                               f"rest are ignored", stream.id))]
        return [AddCandidate(stream.id, msg)]

    def _watch(self, now_ms: float, viewer: str) -> list[Action]:
        self.counters["watches"] += 1
        last = self._last_watch.get(viewer)
        interval = self.policy.watch_interval_ms
        if last is not None and now_ms - last < interval:
            self.counters["refused"] += 1
            return [Send(viewer, cs.REFUSED, cs.refused(
                TOO_MANY, f"{cs.WATCH} again after {now_ms - last:.0f} ms; at most one a "
                          f"{interval} ms per connection"))]
        if len(self._last_watch) >= 1024:      # bounded: forget the watches that no longer matter
            self._last_watch = {v: t for v, t in self._last_watch.items() if now_ms - t < interval}
        self._last_watch[viewer] = now_ms
        actions: list[Action] = []
        old = self._by_viewer.get(viewer)
        if old is not None:
            actions += self._end(self._streams[old], "replaced by a new camera.watch")
        if len(self._streams) >= self.policy.max_viewers:
            self.counters["refused"] += 1
            return [*actions, Send(viewer, cs.REFUSED, cs.refused(
                TOO_MANY, f"camera {self.policy.name!r} already has {len(self._streams)} viewers, "
                          f"at most {self.policy.max_viewers}; try again later"))]
        self._next += 1
        sid = f"{self._prefix}{self._next}"
        self._streams[sid] = _Stream(sid, viewer, State.OFFERING, now_ms, now_ms)
        self._by_viewer[viewer] = sid
        return [*actions, Open(sid, viewer)]

    def _answer(self, now_ms: float, stream: _Stream, part: cs.AnswerPart) -> list[Action]:
        if stream.state is not State.AWAITING_ANSWER:
            return [Send(stream.viewer, cs.REFUSED, cs.refused(
                400, f"{cs.ANSWER}: stream {stream.id!r} is {stream.state.value}, not awaiting an answer",
                stream.id))]
        try:
            sdp = stream.answer.add(part)
        except ValueError as exc:
            return self._end(stream, f"bad answer: {exc}")
        if sdp is None:
            return []
        stream.state, stream.since_ms = State.CONNECTING, now_ms
        return [ApplyAnswer(stream.id, sdp)]

    # ------------------------------------------------------------ adapter reports

    def offer_ready(self, now_ms: float, stream_id: str, sdp: str) -> list[Action]:
        """The peer connection of ``stream_id`` has its local offer (every candidate inside)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is not State.OFFERING:
            return []                       # ended meanwhile (its Close is already out)
        try:
            parts = cs.offer_parts(stream.id, sdp, self.info)
        except ValueError as exc:
            return self._end(stream, f"cannot send the offer: {exc}")
        stream.state, stream.since_ms = State.AWAITING_ANSWER, now_ms
        return [Send(stream.viewer, cs.OFFER, p) for p in parts]

    def connected(self, now_ms: float, stream_id: str) -> list[Action]:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.state is State.CONNECTING:
            stream.state, stream.since_ms, stream.alive_ms = State.LIVE, now_ms, now_ms
            self.counters["live"] += 1
        return []

    def alive(self, now_ms: float, stream_id: str) -> None:
        """The viewer of ``stream_id`` was heard from (an RTCP report): it is not stalled."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.alive_ms = now_ms

    def failed(self, stream_id: str, reason: str) -> list[Action]:
        stream = self._streams.get(stream_id)
        return [] if stream is None else self._end(stream, reason)

    def left(self, connection_id: str) -> list[Action]:
        """A connection left the session: its stream ends, with nobody to tell."""
        self._last_watch.pop(connection_id, None)
        sid = self._by_viewer.get(connection_id)
        return [] if sid is None else self._end(self._streams[sid], "the viewer left", tell=False)

    def tick(self, now_ms: float) -> list[Action]:
        """End every stream past its timeout; call about once a second."""
        p = self.policy
        actions: list[Action] = []
        for stream in list(self._streams.values()):
            age = now_ms - stream.since_ms
            if stream.state in (State.OFFERING, State.AWAITING_ANSWER) and age > p.answer_timeout_ms:
                actions += self._end(stream, f"no answer within {p.answer_timeout_ms} ms")
            elif stream.state is State.CONNECTING and age > p.connect_timeout_ms:
                actions += self._end(stream, f"not connected within {p.connect_timeout_ms} ms")
            elif stream.state is State.LIVE and now_ms - stream.alive_ms > p.stall_timeout_ms:
                actions += self._end(stream, f"stalled: nothing heard for {p.stall_timeout_ms} ms")
        return actions

    def close_all(self, reason: str) -> list[Action]:
        """Shutdown: every stream ends and its viewer is told."""
        actions: list[Action] = []
        for stream in list(self._streams.values()):
            actions += self._end(stream, reason)
        return actions

    # ------------------------------------------------------------ state

    def _end(self, stream: _Stream, reason: str, *, tell: bool = True) -> list[Action]:
        del self._streams[stream.id]
        if self._by_viewer.get(stream.viewer) == stream.id:
            del self._by_viewer[stream.viewer]
        key = reason.split(":")[0].split(" within")[0].split(" by ")[0]
        self.ended[key] = self.ended.get(key, 0) + 1
        actions: list[Action] = [Close(stream.id, reason)]
        if tell:
            actions.append(Send(stream.viewer, cs.ENDED, cs.ended(stream.id, reason)))
        return actions

    def streams(self) -> dict[str, tuple[str, State]]:
        """stream id -> (viewer connection id, state)."""
        return {s.id: (s.viewer, s.state) for s in self._streams.values()}

    def viewer_of(self, stream_id: str) -> str | None:
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.viewer

    def status(self) -> dict[str, Any]:
        return {**self.info, "viewers": len(self._streams), "max_viewers": self.policy.max_viewers,
                "roles": sorted(self.policy.roles),
                "streams": [{"stream": s.id, "viewer": s.viewer, "state": s.state.value}
                            for s in self._streams.values()],
                "counters": dict(self.counters), "ended": dict(self.ended)}

    def status_json(self) -> str:
        return json.dumps(self.status(), separators=(",", ":"))
