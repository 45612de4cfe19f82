"""The Redis session store: sessions shared by many hub processes (docs/cluster.md).

One ``RedisSessionStore`` per hub process. Every state change is one Lua script on the session's shard
(bridge/cluster/scripts.py), so it is atomic: its writes and its notification happen together or not at
all. Notifications reach the hubs subscribed to the session (``subscribe``) through ``on_note``, called
from the reader task, in the order the scripts ran on that shard.

Guarantees (each holds on one Redis primary; see docs/cluster.md for what a failover can lose):

- ``seq`` is contiguous per receiver: the script that stores a signal increments each receiver's
  counter and appends to its resume stream in one step, for one receiver or for everyone.
- Order per sender holds when the caller awaits a sender's ``signal`` before issuing its next one.
- A resume replays every retry signal after ``last_seq`` or reports a gap (``ResumeGap``): the stream
  was trimmed past ``last_seq``, the client is ahead of the store (history lost in a failover), or the
  newest buffered entry is missing. Never a silent gap.
- Only a member's owner hub acts for it (signals, nacks, leave); a hub whose lease lapsed is fenced by
  every script (``Fenced``) and learns it on its next heartbeat or call.
- A dead hub's members are destroyed by ``sweep`` once its lease has lapsed for the grace window,
  each with exactly one ``LeaveNote`` whichever hubs sweep concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from bridge.cluster import scripts
from bridge.cluster.config import JoinResult, ResumeGap, ResumeResult, StoreConfig, digest
from bridge.cluster.connection import RedisLink
from bridge.cluster.keys import HUBS_KEY, SessionKeys, hub_sessions_key, session_tag
from bridge.cluster.notes import (
    Fenced,
    Member,
    Note,
    Receipt,
    Resync,
    SignalBody,
    StoreError,
    Unavailable,
    decode_note,
)

log = logging.getLogger("bridge.cluster")
_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


class RedisSessionStore:
    """Async API of the store. ``start`` connects and registers this hub; every other call raises
    ``Unavailable`` while Redis cannot be reached, ``Fenced`` once this hub's lease lapsed, or a
    ``StoreError`` with the protocol's code for a refusal."""

    def __init__(self, config: StoreConfig, on_note: Callable[[Note], None] | None = None) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self._on_note = on_note or (lambda note: None)
        self._link = RedisLink(list(config.urls), self._message, lambda: self._on_note(Resync()),
                               timeout_s=config.timeout_s, check_s=min(0.25, config.lease_ms / 3000))
        self._channels: dict[str, str] = {}
        self._sessions: set[str] = set()
        self._scripts: dict[str, Any] = {}
        self._fenced = False
        self._deadline = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- life ----------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while Redis answers and this hub holds its lease: the hub's /healthz."""
        return self._link.ready and not self.fenced

    @property
    def fenced(self) -> bool:
        """True once the lease is known lost, or its deadline passed on this process's monotonic clock
        (a frozen hub knows it on waking, before any round trip)."""
        return self._fenced or (self._deadline > 0 and time.monotonic() > self._deadline)

    async def start(self) -> None:
        try:
            await self._link.open()
            for name in ("JOIN", "SIGNAL", "RESUME", "LEAVE", "NACK", "HEARTBEAT", "SWEEP", "HUB_LEASE",
                         "DEAD_HUBS"):
                self._scripts[name] = self._link.client.register_script(getattr(scripts, name))
            sent = time.monotonic()
            if (await self._run("HUB_LEASE", [HUBS_KEY], [self.hub_id, self.config.lease_ms,
                                                          "register"]))[0] != "ok":
                raise StoreError("exists", f"hub id {self.hub_id} is registered already")
            self._deadline = sent + self.config.lease_ms / 1000
        except _ERRORS as e:
            await self._link.close()
            raise Unavailable(f"redis is unreachable: {e}") from e
        self._start_tasks()

    async def renew(self) -> None:
        """Start again as a new hub (a fresh id, no members) once ``Fenced``: the hub has closed its
        links (their clients resume here or elsewhere). Also the way back after Redis lost its data
        (a restart without persistence), which fences every hub. Subscriptions are kept."""
        await self._stop_tasks()
        self.hub_id = uuid.uuid4().hex
        self._sessions.clear()
        sent = time.monotonic()
        if (await self._run("HUB_LEASE", [HUBS_KEY], [self.hub_id, self.config.lease_ms,
                                                      "register"]))[0] != "ok":
            raise StoreError("exists")
        self._deadline = sent + self.config.lease_ms / 1000
        self._fenced = False
        self._start_tasks()

    def _start_tasks(self) -> None:
        self._tasks = [asyncio.create_task(self._heartbeats(), name="redis-heartbeat"),
                       asyncio.create_task(self._sweeps(), name="redis-sweep")]

    async def _stop_tasks(self) -> None:
        # The flag as well as cancel(): a cancellation that lands inside a redis-py call may be
        # absorbed by its retry, so the loops also look at the flag before each step.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2 * self.config.timeout_s)
        self._tasks = []
        self._stopping = False

    async def close(self) -> None:
        """Stop heartbeats and disconnect. Members are left as they are (as if this hub died): a hub
        that shuts down cleanly calls ``leave`` for its members first."""
        await self._stop_tasks()
        await self._link.close()

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        try:
            return list(await self._scripts[name](keys=keys, args=args))
        except _ERRORS as e:
            raise Unavailable(f"redis: {e}") from e

    async def _session_call(self, name: str, sk: SessionKeys, args: list[Any]) -> list[Any]:
        if self.fenced:
            raise Fenced()
        if not self._link.ready:
            raise Unavailable()
        out = await self._run(name, sk.all(), args)
        if out[0] == "fenced":
            self._fenced = True
            raise Fenced()
        return out

    # -- sessions ------------------------------------------------------------------------------------

    async def subscribe(self, session_id: str) -> None:
        """Receive the session's notifications; returns once Redis confirmed it, so call it before the
        join or resume that makes this hub care about the session, and nothing is missed in between."""
        sk = SessionKeys.of(session_id)
        self._channels[sk.channel] = session_id
        try:
            await self._link.subscribe(sk.channel)
        except ConnectionError as e:
            raise Unavailable(str(e)) from e

    async def unsubscribe(self, session_id: str) -> None:
        sk = SessionKeys.of(session_id)
        self._channels.pop(sk.channel, None)
        await self._link.unsubscribe(sk.channel)
        self._sessions.discard(session_id)

    def _message(self, channel: str, raw: str) -> None:
        session_id = self._channels.get(channel)
        if session_id is None:
            return
        try:
            note = decode_note(session_id, raw)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("unreadable notification on %s: %s", channel, e)
            return
        self._on_note(note)

    async def _track(self, session_id: str) -> None:
        """Note (before its first member) that this hub holds members in the session: a sweeper finds
        the session through it when this hub dies."""
        if session_id not in self._sessions:
            try:
                await self._link.client.sadd(hub_sessions_key(self.hub_id), session_id)
            except _ERRORS as e:
                raise Unavailable(f"redis: {e}") from e
            self._sessions.add(session_id)

    async def join(self, session_id: str, member: Member, secret: str) -> JoinResult:
        """Add a member owned by this hub, atomically with the caps (``max_per_session``,
        ``max_per_token``: ``StoreError`` 429) and its ``JoinNote``. Answers the session as it is at
        that instant, the new member included."""
        sk = SessionKeys.of(session_id)
        await self._track(session_id)
        c = self.config
        out = await self._session_call("JOIN", sk, [
            self._link.publish_command, sk.channel, self.hub_id, member.id, member.to_json(),
            member.token_id, digest(secret), c.max_per_session, c.max_per_token, c.ttl_ms, c.lease_ms])
        if out[0] != "ok":
            raise StoreError(str(out[0]))
        return JoinResult(tuple(Member.from_json(m) for m in out[1]))

    async def resume(self, session_id: str, connection_id: str, secret: str, new_secret: str,
                     token_id: str, last_seq: int,
                     grant: tuple[str, str] | None = None) -> ResumeResult | ResumeGap:
        """Take a member over (from any hub, alive or dead) if ``secret`` is its latest one and the
        token is the member's (else 403; 429 while a wrong secret's back-off runs, which doubles per
        wrong secret and holds on every hub). In the same step: the owner becomes this hub, the epoch
        increments, ``new_secret`` replaces the secret, a ``TakeoverNote`` goes out, and the retry
        signals after ``last_seq`` are read. ``ResumeGap`` (nothing changed) when they are not whole.
        ``grant`` (role, data): instead of the same token, any token granting these (a refreshed one)."""
        sk = SessionKeys.of(session_id)
        await self._track(session_id)
        c = self.config
        out = await self._session_call("RESUME", sk, [
            self._link.publish_command, sk.channel, self.hub_id, connection_id, digest(secret),
            digest(new_secret), token_id, last_seq, c.ttl_ms, c.lease_ms, sk.prefix, c.block_base_ms,
            c.block_max_ms, c.resume_buffer, "0" if grant is None else "1", *(grant or ("", ""))])
        if out[0] == "gap":
            return ResumeGap(str(out[1]))
        if out[0] != "ok":
            raise StoreError(str(out[0]))
        _, epoch, last_id, nacks, members, entries = out
        replay = tuple((int(eid.split("-", 1)[0]), SignalBody.from_obj(json.loads(dict(
            zip(fields[::2], fields[1::2], strict=True))["b"]))) for eid, fields in entries)
        return ResumeResult(int(epoch), int(last_id), tuple(json.loads(n) for n in reversed(nacks)),
                            tuple(Member.from_json(m) for m in members), replay)

    async def signal(self, session_id: str, sender: str | None, to: str | None, body: SignalBody,
                     retry: bool, signal_id: int = 0) -> tuple[Receipt, ...]:
        """Store one signal for one receiver (``to``) or everyone, in ONE script: each receiver's next
        seq, its stream entry (retry signals; the stream keeps about ``resume_buffer``), the sender's
        ``last_id`` and one ``SignalNote``. ``sender`` None is a REST signal (any hub may send it);
        otherwise the sender must be this hub's (409). 404 when ``to`` is not a member."""
        sk = SessionKeys.of(session_id)
        c = self.config
        out = await self._session_call("SIGNAL", sk, [
            self._link.publish_command, sk.channel, self.hub_id, sender or "", to or "",
            "1" if retry else "0", body.to_json(), c.resume_buffer, c.ttl_ms, signal_id, sk.prefix])
        if out[0] != "ok":
            raise StoreError(str(out[0]))
        triples = zip(*[iter(out[1])] * 3, strict=True)
        return tuple(Receipt(str(c), int(seq), str(hub)) for c, seq, hub in triples)

    async def record_nack(self, session_id: str, connection_id: str, signal_id: int, code: int,
                          message: str) -> None:
        """Remember a refusal for the member's next resume (``last_id``, ``nacks``: the latest kept)."""
        sk = SessionKeys.of(session_id)
        c = self.config
        nack = json.dumps({"id": signal_id, "code": code, "message": message}, separators=(",", ":"))
        out = await self._session_call("NACK", sk, [self.hub_id, connection_id, signal_id, nack,
                                                    c.nacks_kept, c.ttl_ms, sk.prefix])
        if out[0] != "ok":
            raise StoreError(str(out[0]))

    async def leave(self, session_id: str, connection_id: str, reason: str) -> bool:
        """Destroy a member this hub owns (disconnect, or its grace ran out here): one ``LeaveNote``.
        False when it is no member any more; 409 when another hub took it over (then it is not ours
        to destroy: its client resumed there)."""
        return await self._leave(session_id, connection_id, reason, self.hub_id)

    async def force_disconnect(self, session_id: str, connection_id: str) -> bool:
        """Destroy a member on whichever hub holds it (REST DELETE, a moderator's force_disconnect):
        its owner closes its link on the ``LeaveNote`` (reason ``forceDisconnected``)."""
        return await self._leave(session_id, connection_id, "forceDisconnected", "")

    async def _leave(self, session_id: str, connection_id: str, reason: str, hub: str) -> bool:
        sk = SessionKeys.of(session_id)
        out = await self._session_call("LEAVE", sk, [self._link.publish_command, sk.channel, hub,
                                                     connection_id, reason, sk.prefix])
        if out[0] == "nomember":
            return False
        if out[0] != "ok":
            raise StoreError(str(out[0]))
        return True

    async def members(self, session_id: str) -> dict[str, tuple[Member, str]]:
        """The session's members with their owner hubs (a read, not atomic with anything)."""
        sk = SessionKeys.of(session_id)
        try:
            raw, owners = await asyncio.gather(self._link.client.hgetall(sk.members),
                                               self._link.client.hgetall(sk.owners))
        except _ERRORS as e:
            raise Unavailable(f"redis: {e}") from e
        return {cid: (Member.from_json(m), str(owners.get(cid, ""))) for cid, m in raw.items()}

    async def stream_after(self, session_id: str, connection_id: str,
                           after_seq: int) -> tuple[tuple[int, SignalBody], ...]:
        """The retry signals stored for a member after ``after_seq`` (catch-up after a ``Resync``)."""
        sk = SessionKeys.of(session_id)
        try:
            entries = await self._link.client.xrange(sk.stream(connection_id), f"({after_seq}-0", "+")
        except _ERRORS as e:
            raise Unavailable(f"redis: {e}") from e
        return tuple((int(eid.split("-", 1)[0]), SignalBody.from_obj(json.loads(f["b"])))
                     for eid, f in entries)

    # -- liveness ------------------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Renew this hub's lease (registry and every session it holds members in). ``Fenced`` when a
        lease had lapsed: never renewed then, the hub must stop."""
        if self.fenced:
            self._fenced = True
            raise Fenced()
        sent = time.monotonic()
        c = self.config
        out = await self._run("HUB_LEASE", [HUBS_KEY], [self.hub_id, c.lease_ms, "renew"])
        if out[0] != "ok":
            self._fenced = True
            raise Fenced()
        results = await asyncio.gather(*(self._run("HEARTBEAT", SessionKeys.of(s).all(),
                                                   [self.hub_id, c.lease_ms, c.ttl_ms])
                                          for s in list(self._sessions)))
        if any(r[0] == "dead" for r in results):
            self._fenced = True
            raise Fenced()
        self._deadline = sent + c.lease_ms / 1000

    async def _heartbeats(self) -> None:
        await self._loop(self.heartbeat, self.config.lease_ms / 3000, stop_on_fence=True)

    async def _sweeps(self) -> None:
        await self._loop(self.sweep, self.config.sweep_s, stop_on_fence=False)

    async def _loop(self, step: Callable[[], Awaitable[Any]], every: float, *, stop_on_fence: bool) -> None:
        while not self._stopping:
            try:
                await step()
            except Fenced:
                log.error("hub %s is fenced: its lease lapsed", self.hub_id)
                self._on_note(Resync())
                if stop_on_fence:
                    return
            except StoreError as e:
                log.debug("%s: %s", step, e)
            await asyncio.sleep(every)

    async def sweep(self) -> int:
        """Destroy the members of hubs whose lease lapsed more than ``grace_ms`` ago, in every session
        they held; returns how many this call destroyed. Safe to run on every hub at once: a member
        is destroyed (and announced) once. A dead hub leaves the registry only when all its sessions
        are swept, so a hub that comes back later still finds itself fenced."""
        c = self.config
        dead = await self._run("DEAD_HUBS", [HUBS_KEY], [])
        total = 0
        for hub in dead:
            if hub == self.hub_id:
                continue
            try:
                sessions = await self._link.client.smembers(hub_sessions_key(hub))
            except _ERRORS as e:
                raise Unavailable(f"redis: {e}") from e
            done = True
            for session_id in sessions:
                sk = SessionKeys.of(session_id)
                out = await self._run("SWEEP", sk.all(), [self._link.publish_command, sk.channel, hub,
                                                          c.grace_ms, sk.prefix])
                if out[0] == "ok":
                    total += int(out[1])
                else:
                    done = False
            if done:
                with contextlib.suppress(*_ERRORS):
                    await self._link.client.zrem(HUBS_KEY, hub)
                    await self._link.client.delete(hub_sessions_key(hub))
        return total


__all__ = ["JoinResult", "RedisSessionStore", "ResumeGap", "ResumeResult", "StoreConfig", "digest",
           "session_tag"]
