"""The hub engine interface: where the sessions of a hub live.

:class:`~bridge.core.hub.state.HubState` takes every decision that needs nothing but the frame, the
member and the clock (tokens, roles, sizes, rate limits); the engine holds what must be shared by every
hub process serving a session, and takes the decisions that need it (caps, resume secrets, targets).
The in-memory engine (:class:`~bridge.core.hub.memory.MemoryEngine`) is the default; a Redis engine
(docs/cluster.md) implements the same interface so that several hub processes share sessions.

What an engine holds, per session: its members (connection id, role, data, token id, creation time,
resume secret, liveness: linked to some hub, or in its grace window until a deadline), and per member
the receiver's contiguous ``seq``, its bounded resume buffer of ``retry: true`` frames, and the sender's
``last_id`` and nacks of its current link (told on resume). A :class:`~bridge.core.hub.member.Member`
is this hub's handle on one of them; its ``link`` (:class:`~bridge.core.hub.member.Link`) is set only
on the hub whose WebSocket carries it, and frames for a member linked elsewhere reach that hub through
the engine (pub/sub for Redis), which hands them to the member's link there.

Calling contract (what makes one interface serve a store in this process and one across the network):

* **Outcomes come back through callbacks** (``done``), never as return values, and every frame for a
  member goes out through its link. The memory engine calls ``done`` before the method returns (the hot
  path never suspends, allocates no future and switches no task); a Redis engine calls it when its
  script's reply arrives. Callers must not assume either: do nothing after the call that ``done``
  would have to see first.
* **Order**: the calls one hub makes take effect in the order it makes them (a Redis engine runs them
  through one pipeline), so signals keep their order per sender, and a ``signal`` issued after a
  ``join``'s ``done`` sees that member.
* **Atomic per call**: ``join`` (caps check + insert + ``connection_created`` to the others),
  ``resume`` (grant and secret check + new secret + link + replay after ``last_seq`` + ``last_id`` and
  nacks), ``signal`` (target check + per-receiver ``seq`` + buffer append + delivery + the sender's
  ``last_id``: one Lua script), ``leave`` (remove + ``connection_destroyed`` to the others).
* **Notices**: ``connection_created`` / ``connection_destroyed`` go to every other member of the
  session on every hub, exactly once per member; ``leave``'s ``done`` runs before this hub delivers
  them (a moderator's ack comes before the ``connection_destroyed`` it caused).
* **Grace**: ``link_lost`` starts a member's grace window (``grace_s``); ``expire(now)`` removes the
  members whose window has ended, with one ``connection_destroyed`` each (``networkDisconnected``),
  whichever hub runs it. A Redis engine also treats the members of a hub whose liveness lapsed as
  having lost their link (the hub died), and fences that hub: it delivers nothing more.
* **Rate limits** are per connection, on the hub that carries its link (``Member.bucket`` and
  ``strikes``, checked by ``HubState`` before anything reaches the engine); caps per session and per
  token are the engine's (``join``), the hub-wide and per-address socket caps the process's own.
* Refusals are ``(code, message)`` tuples (:data:`Refusal`), answered by ``HubState`` as nacks or
  error frames; nothing an engine is handed can make it raise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bridge.core import wire
from bridge.core.hub.counters import Metrics
from bridge.core.hub.member import Link, Member
from bridge.core.signal import Connection

#: A refusal: (code, message) as the wire carries it in nack and error frames.
Refusal = tuple[int, str]
#: ``done`` of :meth:`HubEngine.signal`: (sender or None for REST, the frame id, None = delivered).
Answer = Callable[[Member | None, int, Refusal | None], None]


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A new connection, its token checked: ``token_id`` is ``tokens.token_identity`` of it; ``now``
    monotonic seconds (rate-limit buckets), ``now_ms`` the hub clock (``creation_time``)."""

    session_id: str
    role: str
    data: str
    token_id: str
    now: float
    now_ms: int


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """A resume of ``connection_id`` by a checked token granting ``role``/``data`` (``token_id``),
    presenting ``secret`` and the last ``seq`` it received."""

    session_id: str
    connection_id: str
    secret: str
    last_seq: int
    role: str
    data: str
    token_id: str
    now: float


@dataclass(frozen=True, slots=True)
class Admitted:
    """A member joined or resumed: what its ``connected`` frame needs, then (resume) the frames to
    replay after it, in order. ``nacks`` are (id, code, message) of the previous link."""

    member: Member
    others: list[Connection]
    resumed: bool = False
    last_id: int = 0
    nacks: tuple[tuple[int, int, str], ...] = ()
    replay: tuple[str, ...] = ()


class HubEngine(Protocol):
    """Where sessions live (see the module docstring for the contract every method keeps)."""

    #: This hub's counters (delivered, buffered, dropped, resumes, caps refused ...).
    metrics: Metrics
    @property
    def sessions(self) -> Mapping[str, Mapping[str, Member]]:
        """The members this hub holds a handle on, by session then connection id."""

    def join(self, req: JoinRequest, link: Link, done: Callable[[Admitted | Refusal], None]) -> None:
        """Admit a new member (or refuse it 429 for a session or token cap) and tell the others."""

    def resume(self, req: ResumeRequest, link: Link,
               done: Callable[[Admitted | Refusal | None], None]) -> None:
        """Re-attach a member in its grace window (or still linked) to ``link``; None when there is no
        such connection any more (the caller joins afresh, ``resumed: false``)."""

    def signal(self, sender: Member | None, frame_id: int, session_id: str, to: str | None,
               body: wire.SignalBody, retry: bool, done: Answer) -> None:
        """Deliver ``body`` to ``to`` (404 when not in the session) or to every member (the sender
        included), numbered per receiver; record the answer as the sender's ``last_id``."""

    def answered(self, member: Member, frame_id: int, refusal: Refusal) -> None:
        """Record a refusal ``HubState`` gave (its ``last_id`` and nacks for the next resume)."""

    def link_lost(self, member: Member, link: Link, now: float) -> bool:
        """``link`` of ``member`` dropped without ``disconnect``: start the grace window. False when
        it was not the member's link any more (it resumed elsewhere)."""

    def leave(self, session_id: str, connection_id: str, reason: str,
              done: Callable[[Member | None], None]) -> None:
        """Remove a member for good (``reason`` goes into ``connection_destroyed``); ``done`` gets its
        handle (its link still set), or None when it is not in the session."""

    def expire(self, now: float) -> list[Member]:
        """Remove the members whose grace window ended by ``now``; returns those removed."""

    def connections(self, session_id: str,
                    done: Callable[[list[tuple[Connection, bool]]], None]) -> None:
        """Every member of the session with whether it is linked (REST listing)."""

    def find(self, session_id: str, connection_id: str) -> Member | None:
        """This hub's handle on a member, if it holds one."""

    @property
    def buffered_bytes(self) -> int:
        """Bytes of resume buffers held in this process (for /metrics)."""
