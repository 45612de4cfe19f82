"""The Redis hub engine: :class:`bridge.core.hub.engine.HubEngine` over :class:`RedisSessionStore`, so
that several hub processes share sessions (docs/cluster.md).

This hub holds a :class:`~bridge.core.hub.member.Member` handle only for the members whose link it
carries (or whose grace window it runs); everything shared (members, caps, seqs, resume streams,
``last_id`` and nacks, secrets) is in Redis. Each call of the interface runs the store's script in a
task and answers through its ``done`` when the reply arrives. How the promises are kept:

* **Order per sender**: a member's calls (signals, nacks, leave) run one after the other in its own
  chain, so its signals reach the store, and are acked, in the order read.
* **Nothing missed**: the hub subscribes to a session before the join or resume that makes it care;
  notifications for a member whose join or resume is still in flight are held and applied once it is
  admitted (connection events at once, signals only above the seq it resumed from).
* **Deliveries** go only to the receipts this hub owns, numbered by the store; a resume replays the
  stream after ``last_seq`` and later notifications at or below the last replayed seq are skipped.
* A ``TakeoverNote`` for a member this hub holds (it resumed elsewhere) drops it silently; a
  ``LeaveNote`` gives ``connection_destroyed`` to this hub's other members of the session, and to
  the member itself (forced out) its ``disconnected``.
* **Fencing**: once the store says this hub's lease lapsed, it closes every link (their clients resume
  on a live hub) and starts again as a new hub (``renew``). ``Resync`` (the pub/sub link came back)
  re-reads each local member's stream after its last delivered seq and drops members taken over.
* While Redis is unreachable joins and resumes are refused 503 (an error frame), signals nacked 503,
  and :attr:`ready` is False (``/healthz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from bridge.cluster.engine_parts import (
    FENCED,
    RESUME_REFUSALS,
    RETRY_S,
    STORE_DOWN,
    Chain,
    Early,
    connection_of,
    frame_of,
    placeholder,
)
from bridge.cluster.notes import (
    Fenced,
    JoinNote,
    LeaveNote,
    Note,
    Receipt,
    Resync,
    SignalBody,
    SignalNote,
    StoreError,
    TakeoverNote,
    Unavailable,
)
from bridge.cluster.notes import Member as StoreMember
from bridge.cluster.store import RedisSessionStore, ResumeGap, StoreConfig
from bridge.core import wire
from bridge.core.hub.admission import NO_SUCH_CONNECTION, cap_message
from bridge.core.hub.counters import Metrics
from bridge.core.hub.engine import Admitted, Answer, JoinRequest, Refusal, ResumeRequest
from bridge.core.hub.member import EXPIRED, GONE, LEFT, LINK_LOST, RESUMED, Link, Member
from bridge.core.signal import FORCE_DISCONNECTED, NETWORK_DISCONNECTED, Connection
from bridge.core.tokenbucket import TokenBucket

log = logging.getLogger("bridge.cluster")


class RedisEngine:
    """The hub engine on Redis. ``grace_s``, ``rate``/``burst`` and the caps as for the memory engine;
    ``store`` the configured store (its ``on_note`` is this engine's). :meth:`start` before serving,
    :meth:`close` after."""

    def __init__(self, config: StoreConfig, *, grace_s: float, rate: float = 0, burst: float = 0,
                 metrics: Metrics | None = None) -> None:
        self.grace_s = grace_s
        self.rate = rate
        self.burst = burst
        self.metrics = metrics if metrics is not None else Metrics()
        self.store = RedisSessionStore(config, self._note)
        self.sessions: dict[str, dict[str, Member]] = {}
        self._early: dict[tuple[str, str], Early] = {}
        self._chains: dict[int, Chain] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._renewing = False
        self._closed = False

    # ---- life --------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Redis answers and this hub holds its lease (``/healthz``)."""
        return self._started and self.store.ready and not self._renewing

    async def start(self) -> None:
        """Connect; while Redis cannot be reached, keep trying in the background (not ready)."""
        try:
            await self.store.start()
            self._started = True
        except Unavailable as e:
            log.warning("session store unreachable at start (%s): retrying", e)
            self._spawn(self._start_later())

    async def _start_later(self) -> None:
        while not self._closed and not self._started:
            await asyncio.sleep(RETRY_S)
            with contextlib.suppress(Unavailable):
                await self.store.start()
                self._started = True
                log.info("session store reachable: hub %s ready", self.store.hub_id)

    async def close(self) -> None:
        """Stop (members stay in Redis, as if this hub died: their clients resume elsewhere)."""
        self._closed = True
        for t in list(self._tasks):
            t.cancel()
        await self.store.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, member: Member) -> None:
        """Wait until the calls made for ``member`` so far have been answered (its link is closed only
        then, so that the answers of its last frames, ``disconnected`` included, reach it)."""
        chain = self._chains.get(id(member))
        if chain is not None:
            await chain.drained()

    def _chain(self, member: Member) -> Chain:
        chain = self._chains.get(id(member))
        if chain is None:
            chain = self._chains[id(member)] = Chain()
        return chain

    def _new_member(self, session_id: str, conn: Connection, link: Link, now: float) -> Member:
        return Member(session_id, conn, link, TokenBucket(self.rate, self.burst, now), 0, self.metrics,
                      token_id=conn.token_id, strikes=TokenBucket(self.rate, self.burst, now))

    def _failed(self, e: StoreError) -> Refusal:
        if isinstance(e, Fenced):
            self._fence()
            return FENCED
        if isinstance(e, Unavailable):
            return STORE_DOWN
        return (e.code, str(e))

    # ---- joining and resuming ----------------------------------------------------------------------

    def join(self, req: JoinRequest, link: Link, done: Callable[[Admitted | Refusal], None]) -> None:
        if not self.ready:
            done(STORE_DOWN)
            return
        self._spawn(self._join(req, link, done))

    async def _join(self, req: JoinRequest, link: Link, done: Callable[[Admitted | Refusal], None]) -> None:
        conn = Connection(str(uuid.uuid4()), req.data, req.role, req.now_ms, req.token_id)
        member = self._new_member(req.session_id, conn, link, req.now)
        key = (req.session_id, conn.id)
        self._early[key] = early = Early()
        try:
            await self.store.subscribe(req.session_id)
            result = await self.store.join(req.session_id, StoreMember(
                conn.id, conn.data, conn.role, conn.creation_time, conn.token_id), member.secret)
        except StoreError as e:
            self._early.pop(key, None)
            if e.code == 429:
                cap = "session" if e.reason == "full" else "token"
                self.metrics.refused_cap(cap)
                done(cap_message(cap))
                return
            done(self._failed(e))
            return
        self._early.pop(key, None)
        self.sessions.setdefault(req.session_id, {})[conn.id] = member
        others = [connection_of(m) for m in result.members if m.id != conn.id]
        done(Admitted(member, others))
        self._flush(member, early, others)

    def resume(self, req: ResumeRequest, link: Link,
               done: Callable[[Admitted | Refusal | None], None]) -> None:
        if not self.ready:
            done(STORE_DOWN)
            return
        self._spawn(self._resume(req, link, done))

    async def _resume(self, req: ResumeRequest, link: Link,
                      done: Callable[[Admitted | Refusal | None], None]) -> None:
        key = (req.session_id, req.connection_id)
        self._early[key] = early = Early()
        new_secret = secrets.token_urlsafe(24)
        try:
            await self.store.subscribe(req.session_id)
            out = await self.store.resume(req.session_id, req.connection_id, req.secret, new_secret,
                                          req.token_id, req.last_seq, (req.role, req.data))
        except StoreError as e:
            self._early.pop(key, None)
            if e.code == 404:
                done(None)
                return
            self.metrics.resume_refused += 1
            done(RESUME_REFUSALS.get(e.reason) or self._failed(e))
            return
        self._early.pop(key, None)
        if isinstance(out, ResumeGap):
            log.warning("session %s: connection %s cannot resume whole (%s): joins afresh",
                        req.session_id, req.connection_id, out.reason)
            done(None)
            return
        me = next((m for m in out.members if m.id == req.connection_id), None)
        if me is None:
            done(None)
            return
        member = self.find(req.session_id, req.connection_id)
        if member is None or member.state == GONE:
            member = self._new_member(req.session_id, connection_of(me), link, req.now)
            self.sessions.setdefault(req.session_id, {})[me.id] = member
        else:
            member.to(RESUMED, link)
        member.secret = new_secret
        member.last_id = out.last_id
        member.nacks.clear()
        replay = tuple(frame_of(body, seq) for seq, body in out.replay if seq > req.last_seq)
        member.seq = max([req.last_seq, *(seq for seq, _ in out.replay)])
        self.metrics.resumes += 1
        nacks = tuple((int(n["id"]), int(n["code"]), str(n["message"])) for n in out.nacks)
        others = [connection_of(m) for m in out.members if m.id != me.id]
        done(Admitted(member, others, True, out.last_id, nacks, replay))
        self._flush(member, early, others)

    def _flush(self, member: Member, early: Early, others: list[Connection]) -> None:
        """The frames held while ``member`` was being admitted, after its ``connected`` (and replay):
        signals above its seq; connection events unless ``connected`` told it already (a member
        in ``others`` is known, one not in it unknown), so each member is announced once."""
        known = {c.id for c in others}
        for seq, frame, about, created in early.frames:
            if seq:
                if seq > member.seq:
                    member.seq = seq
                    member.send(frame)
            elif created and about not in known:
                known.add(about)
                member.send(frame)
            elif not created and about in known:
                known.discard(about)
                member.send(frame)

    # ---- signals -----------------------------------------------------------------------------------

    def signal(self, sender: Member | None, frame_id: int, session_id: str, to: str | None,
               body: wire.SignalBody, retry: bool, done: Answer) -> None:
        f = body.fields()
        stored = SignalBody(str(f["type"]), str(f["data"]), f["from"], int(f["ts"]))

        async def run() -> None:
            try:
                receipts = await self.store.signal(session_id, None if sender is None
                                                   else sender.connection.id, to, stored, retry, frame_id)
            except StoreError as e:
                refusal = NO_SUCH_CONNECTION if e.code == 404 else self._failed(e)
                if sender is not None:
                    sender.answered(frame_id, refusal)
                done(sender, frame_id, refusal)
                return
            # This hub's receivers next in line get it now (the sender's own copy before its ack);
            # any other waits for its notification, which comes in the store's order.
            self._deliver(session_id, receipts, body, contiguous=True)
            if sender is not None:
                sender.answered(frame_id)
            done(sender, frame_id, None)

        if sender is None:
            self._spawn(run())
        else:
            self._chain(sender).add(run)

    def answered(self, member: Member, frame_id: int, refusal: Refusal) -> None:
        member.answered(frame_id, refusal)

        async def run() -> None:
            with contextlib.suppress(StoreError):
                await self.store.record_nack(member.session_id, member.connection.id, frame_id, *refusal)

        self._chain(member).add(run)

    # ---- leaving -----------------------------------------------------------------------------------

    def link_lost(self, member: Member, link: Link, now: float) -> bool:
        return member.to(LINK_LOST, link, now + self.grace_s)

    def leave(self, session_id: str, connection_id: str, reason: str,
              done: Callable[[Member | None], None]) -> None:
        member = self.find(session_id, connection_id)

        async def run() -> None:
            try:
                if member is not None and reason != FORCE_DISCONNECTED:
                    gone = await self.store.leave(session_id, connection_id, reason)
                else:
                    gone = await self.store.force_disconnect(session_id, connection_id)
            except StoreError as e:
                log.warning("session %s: could not remove connection %s: %s", session_id, connection_id, e)
                gone = False
            if not gone:
                done(None)
                return
            # A handle for a member held by another hub: only its link (none here) is looked at.
            done(member if member is not None else placeholder(session_id, connection_id, self.metrics))
            if member is not None:
                self._drop(member, LEFT)

        if member is not None:
            self._chain(member).add(run)
        else:
            self._spawn(run())

    def expire(self, now: float) -> list[Member]:
        gone = [m for members in self.sessions.values() for m in members.values()
                if m.grace_deadline is not None and m.grace_deadline <= now]
        for m in gone:
            self._drop(m, EXPIRED)

            self._spawn(self._expire_in_store(m.session_id, m.connection.id))
        return gone

    async def _expire_in_store(self, session_id: str, connection_id: str) -> None:
        """Destroy a member whose grace ended here; while Redis cannot be reached, try again (else it
        would stay in the session for as long as this hub lives)."""
        while not self._closed:
            try:
                await self.store.leave(session_id, connection_id, NETWORK_DISCONNECTED)
                return
            except (Unavailable, Fenced):
                if self.store.fenced:
                    return  # a fenced hub's members are the sweepers' now
                await asyncio.sleep(RETRY_S)
            except StoreError:
                return  # 409: resumed on another hub meanwhile (its TakeoverNote dropped it here)

    def _drop(self, member: Member, event: str) -> None:
        """Forget this hub's handle on ``member`` (the store has or will have removed it)."""
        members = self.sessions.get(member.session_id)
        if members is not None and members.get(member.connection.id) is member:
            del members[member.connection.id]
            if not members:
                del self.sessions[member.session_id]
        member.to(event)
        self._chains.pop(id(member), None)

    # ---- notifications -----------------------------------------------------------------------------

    def _note(self, note: Note) -> None:
        if self.store.fenced:
            # Frozen past its lease (notifications piled up in the socket meanwhile): deliver nothing.
            self._fence()
            return
        if isinstance(note, SignalNote):
            b = note.body
            self._deliver(note.session_id, note.receivers, wire.SignalBody(b.type, b.data, b.sender, b.ts))
        elif isinstance(note, JoinNote):
            self._tell(note.session_id, note.member.id, wire.connection_created(connection_of(note.member)),
                       True)
        elif isinstance(note, LeaveNote):
            self._left(note)
        elif isinstance(note, TakeoverNote):
            if note.hub_id != self.store.hub_id:
                member = self.find(note.session_id, note.connection_id)
                if member is not None:
                    link = member.link
                    self._drop(member, LEFT)  # silently: the client is on its new link already
                    if link is not None:
                        link.close()
        elif isinstance(note, Resync):
            if self.store.fenced:
                self._fence()
            else:
                self._spawn(self._resync())

    def _deliver(self, session_id: str, receivers: tuple[Receipt, ...], body: wire.SignalBody,
                 contiguous: bool = False) -> None:
        """Hand a stored signal to the receivers this hub owns, each at most once by seq (a seq at or
        below the member's last is a duplicate: replayed, or delivered from the script's reply).
        ``contiguous``: only to those whose seq is the next one (from a reply, which may overtake
        the notifications of earlier signals)."""
        me = self.store.hub_id
        for r in receivers:
            if r.hub_id != me:
                continue
            early = self._early.get((session_id, r.connection_id))
            if early is not None:
                if not contiguous:
                    early.frames.append((r.seq, body.frame(r.seq), "", False))
                continue
            member = self.find(session_id, r.connection_id)
            if member is None or r.seq <= member.seq or (contiguous and r.seq != member.seq + 1):
                continue  # replayed already (resume), not ours any more, or not next in line
            member.seq = r.seq
            link = member.link
            if link is None:
                self.metrics.buffered += 1  # in its stream, for its resume
            else:
                link.send(body.frame(r.seq))
                self.metrics.signals_delivered += 1

    def _tell(self, session_id: str, about: str, frame: str, created: bool) -> None:
        """A connection event for every member of this hub in the session but ``about``."""
        for cid, m in (self.sessions.get(session_id) or {}).items():
            if cid != about:
                m.send(frame)
        for (sid, cid), early in self._early.items():
            if sid == session_id and cid != about:
                early.frames.append((0, frame, about, created))

    def _left(self, note: LeaveNote) -> None:
        cid = note.member.id
        member = self.find(note.session_id, cid)
        if member is not None:
            link = member.link
            self._drop(member, LEFT)
            if link is not None and note.reason == FORCE_DISCONNECTED:
                link.send(wire.disconnected(FORCE_DISCONNECTED))
                link.close()
        self._tell(note.session_id, cid, wire.connection_destroyed(connection_of(note.member), note.reason),
                   False)

    async def _resync(self) -> None:
        """Notifications may have been lost: catch each local member up from its stream, and drop
        those another hub owns now."""
        for session_id, members in list(self.sessions.items()):
            try:
                owners = await self.store.members(session_id)
            except StoreError:
                continue
            for cid, member in list(members.items()):
                owner = owners.get(cid)
                if owner is None or owner[1] != self.store.hub_id:
                    link = member.link
                    self._drop(member, LEFT)
                    if link is not None:
                        link.close()
                    continue
                with contextlib.suppress(StoreError):
                    for seq, body in await self.store.stream_after(session_id, cid, member.seq):
                        if seq > member.seq:
                            member.seq = seq
                            member.send(frame_of(body, seq))

    def _fence(self) -> None:
        """This hub's lease lapsed: it may deliver nothing more. Close every link (its clients resume
        on a live hub) and start again as a new hub."""
        if self._renewing:
            return
        self._renewing = True
        log.error("hub %s fenced (its lease lapsed): closing %d links, starting again as a new hub",
                  self.store.hub_id, sum(len(m) for m in self.sessions.values()))
        for members in list(self.sessions.values()):
            for member in list(members.values()):
                link = member.link
                self._drop(member, LEFT)
                if link is not None:
                    link.close()
        self._early.clear()
        self._spawn(self._renew())

    async def _renew(self) -> None:
        try:
            while not self._closed:
                try:
                    await self.store.renew()
                    return
                except StoreError as e:
                    log.warning("cannot start again as a new hub yet: %s", e)
                    await asyncio.sleep(RETRY_S)
        finally:
            self._renewing = False

    # ---- looking -----------------------------------------------------------------------------------

    def connections(self, session_id: str,
                    done: Callable[[list[tuple[Connection, bool]]], None]) -> None:
        async def run() -> None:
            try:
                members = await self.store.members(session_id)
            except StoreError:
                done([])
                return
            out = []
            for cid, (m, _owner) in members.items():
                local = self.find(session_id, cid)
                out.append((connection_of(m), local is None or local.link is not None))
            done(out)

        self._spawn(run())

    def find(self, session_id: str, connection_id: str) -> Member | None:
        members = self.sessions.get(session_id)
        return None if members is None else members.get(connection_id)

    @property
    def buffered_bytes(self) -> int:
        return 0  # resume buffers are in Redis
