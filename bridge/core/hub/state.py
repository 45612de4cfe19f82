"""Sans-I/O state of the session hub: every admission decision for WebSocket and REST alike.

Theory of operation. The adapters (:mod:`bridge.hub`) only move frames: a WebSocket's read loop hands
each frame it reads to :meth:`HubState.connect` (the first) or :meth:`HubState.receive` (the rest) and
acts on the verdict returned (go on, stop reading, cut the link for flooding, answer a WebSocket ping);
the REST handlers call :meth:`HubState.rest_signal`, :meth:`HubState.force` and
:meth:`HubState.connections`. Everything a member should receive is written to its
:class:`~bridge.core.hub.member.Link` from here or from the engine, never by the adapter.

Decisions taken here, from the frame, the member and the clock alone: the client token (signature,
session, expiry, role), the rate limit of each frame (``Member.bucket``; past it signals are nacked 429
and other frames dropped, and a link that also empties ``Member.strikes`` - frames sustained at twice
the limit - is cut), malformed frames, the sender's role, the signal's type and size
(:mod:`bridge.core.hub.admission`, the same functions for REST). Decisions that need the session are the
engine's (:mod:`bridge.core.hub.engine`: caps, resume secrets, targets), whose outcomes come back
through callbacks - at once for the in-memory engine.

Time is passed in: ``now`` is a monotonic clock in seconds (grace deadlines, token buckets), ``now_ms``
the hub clock in milliseconds (``ts``, ``server_time``), ``wall_s`` epoch seconds (token expiry).
Nothing here blocks, sleeps or schedules; the adapter calls :meth:`HubState.expire` when a grace
deadline is due (:meth:`HubState.link_lost` says when to).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bridge.core import wire
from bridge.core.hub.admission import (
    NO_SUCH_CONNECTION,
    force_refusal,
    signal_refusal,
    socket_refusal,
)
from bridge.core.hub.counters import MetricRow, metric_rows
from bridge.core.hub.engine import Admitted, HubEngine, JoinRequest, Refusal, ResumeRequest
from bridge.core.hub.member import Link, Member
from bridge.core.signal import (
    BAD_REQUEST,
    CLIENT_DISCONNECTED,
    FORCE_DISCONNECTED,
    TOO_LARGE,
    UNAUTHORIZED,
    Connection,
)
from bridge.core.tokens import TokenError, token_identity, verify_client_token

#: Verdicts of :meth:`HubState.receive` for the read loop.
CONTINUE, STOP, FLOODED, PONG = 0, 1, 2, 3


class HubLog(Protocol):
    """Where the state reports: ``warn`` for refusals a client can cause at will (the adapter logs
    at most one line per ``key`` and interval), ``info`` for the life of connections."""

    def warn(self, key: str, fmt: str, *args: object) -> None: ...

    def info(self, fmt: str, *args: object) -> None: ...


class _Silent:
    def warn(self, key: str, fmt: str, *args: object) -> None:
        pass

    def info(self, fmt: str, *args: object) -> None:
        pass


class HubState:
    """The decisions of one hub over ``engine``. ``api_key``/``api_secret``/``apps`` check client
    tokens; ``limits`` go into every ``connected`` frame; ``max_connections`` and
    ``max_per_address`` cap this process's WebSockets (0 = none)."""

    def __init__(self, engine: HubEngine, *, api_key: str, api_secret: str,
                 apps: Mapping[str, Any] | None = None, limits: dict[str, Any] | None = None,
                 max_connections: int = 0, max_per_address: int = 0, log: HubLog | None = None) -> None:
        self.engine = engine
        self.metrics = engine.metrics
        self._api_key, self._api_secret = api_key, api_secret
        self._apps = dict(apps or {})
        self.limits = limits if limits is not None else wire.LIMITS
        self.max_connections, self.max_per_address = max_connections, max_per_address
        self.log: HubLog = log if log is not None else _Silent()
        self.open = 0  # WebSockets being upgraded or open (what max_connections counts)
        self.per_address: dict[str, int] = {}

    # ---- sockets of this process -------------------------------------------------------------------

    def socket_opened(self, address: str) -> str | None:
        """A WebSocket upgrade from ``address``: None (counted as open) or the cap it would break
        (``"hub"``: answer 503, ``"address"``: 429)."""
        cap = socket_refusal(self.open, self.per_address.get(address, 0), self.max_connections,
                             self.max_per_address)
        if cap is not None:
            self.metrics.refused_cap(cap)
            self.log.warn(f"cap-{cap}", "refused a connection from %s: max_connections%s reached", address,
                          "" if cap == "hub" else f"_per_{cap}")
            return cap
        self.open += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        return None

    def socket_closed(self, address: str) -> None:
        """The WebSocket :meth:`socket_opened` accepted has ended."""
        self.open -= 1
        left = self.per_address.pop(address, 1) - 1
        if left > 0:
            self.per_address[address] = left

    # ---- the first frame ---------------------------------------------------------------------------

    def connect(self, session_id: str, text: str | None, link: Link, now: float, now_ms: int,
                wall_s: float, done: Callable[[Member | None], None]) -> None:
        """The first frame of a link (``text`` None: it was not a text frame): ``connected`` (and the
        replay of a resume) or an error frame and a close are written to ``link``; ``done`` gets the
        member, or None when refused."""
        if text is None:
            return self._refuse(link, BAD_REQUEST, "expected a connect text frame", done)
        try:
            frame = wire.parse_client_frame(text)
        except wire.WireError as e:
            return self._refuse(link, e.code, e.message, done)
        if not isinstance(frame, wire.ConnectFrame):
            return self._refuse(link, BAD_REQUEST, "the first frame must be {\"op\":\"connect\",...}", done)
        try:
            grant = verify_client_token(frame.token, api_key=self._api_key, api_secret=self._api_secret,
                                        session_id=session_id, now=wall_s, apps=self._apps)
        except TokenError as e:
            self.metrics.auth_failures += 1
            self.log.warn("client token", "refused client token: %s", e.message)
            return self._refuse(link, e.code, e.message, done)
        if not wire.is_text(grant.data):
            return self._refuse(link, BAD_REQUEST, "the token's connection data is not valid UTF-8 text",
                                done)
        join = JoinRequest(session_id, grant.role, grant.data, token_identity(frame.token), now, now_ms)
        r = frame.resume
        cid = "" if r is None else r.connection_id
        if r is None:
            self.engine.join(join, link, lambda out: self._admitted(out, link, join, now_ms, done))
            return

        def resumed(out: Admitted | Refusal | None) -> None:
            if out is None:  # its grace window has ended: it joins afresh ("resumed": false)
                self.engine.join(join, link, lambda o: self._admitted(o, link, join, now_ms, done))
            elif isinstance(out, tuple):
                self.log.warn("resume", "session %s: refused to resume connection %s: %s", session_id,
                              cid, out[1])
                self._refuse(link, *out, done)
            else:
                self._admitted(out, link, join, now_ms, done)

        self.engine.resume(ResumeRequest(session_id, r.connection_id, r.secret, r.last_seq, grant.role,
                                  grant.data, join.token_id, now), link, resumed)

    def no_connect_frame(self, link: Link, timeout_s: float) -> None:
        """No connect frame came within ``timeout_s`` of the upgrade: refuse the link."""
        self._refuse(link, UNAUTHORIZED, f"no connect frame within {timeout_s:g} s", None)

    def _admitted(self, out: Admitted | Refusal, link: Link, join: JoinRequest, now_ms: int,
                  done: Callable[[Member | None], None]) -> None:
        if isinstance(out, tuple):
            self.log.warn("cap", "session %s: refused a connection: %s", join.session_id, out[1])
            return self._refuse(link, *out, done)
        m = out.member
        if out.resumed:
            self.log.info("session %s: connection %s resumed (last_id %d), %d signals replayed",
                          m.session_id, m.connection.id, out.last_id, len(out.replay))
            frames = wire.connected_frames(m.connection, out.others, m.secret, True, now_ms, out.last_id,
                                           out.nacks, self.limits)
        else:
            self.log.info("session %s: connection %s joined as %s", m.session_id, m.connection.id,
                          m.connection.role)
            frames = wire.connected_frames(m.connection, out.others, m.secret, False, now_ms,
                                           limits=self.limits)
        for f in frames:
            link.send(f)
        for f in out.replay:
            link.send(f)
        done(m)

    @staticmethod
    def _refuse(link: Link, code: int, message: str, done: Callable[[Member | None], None] | None) -> None:
        link.send(wire.error(code, message))
        link.close()
        if done is not None:
            done(None)

    # ---- the frames of a connected member (the hot path) -------------------------------------------

    def receive(self, member: Member, link: Link, text: str | bytes | None, now: float, now_ms: int,
                ping: bool = False) -> int:
        """One frame read on ``link`` of ``member``: ``text`` is a text frame's text, a binary frame's
        bytes, or None for a control frame (a WebSocket ping when ``ping``; pongs are only metered).
        Every frame takes a token from the member's rate limit first. Returns the read loop's verdict:
        :data:`CONTINUE`, :data:`STOP` (stop reading: left, forced out, resumed on another link),
        :data:`FLOODED` (cut the link, close code 4029; the member keeps its grace window and its
        empty buckets) or :data:`PONG` (answer the ping)."""
        if member.link is not link:
            # Resumed on another link, whose `connected` told the client our last_id: what still
            # arrives here is re-sent there if unanswered, so it must not count twice.
            return STOP
        limited = not member.bucket.take(now)
        if limited:
            self.metrics.frames_refused += 1
            if not member.strikes.take(now):
                self.metrics.flood_disconnects += 1
                self.log.warn("flood", "session %s: cut connection %s, frames at more than twice its rate "
                              "limit (hub.yaml rate_limit)", member.session_id, member.connection.id)
                return FLOODED
        if text is None:
            return PONG if ping and not limited else CONTINUE
        if isinstance(text, bytes):
            self._malformed(link, member, "binary", None if limited else wire.error(
                BAD_REQUEST, "binary frames are not part of the protocol"))
            return CONTINUE
        try:
            frame = wire.parse_client_frame(text)
        except wire.WireError as e:
            self._malformed(link, member, "oversize" if e.code == TOO_LARGE else "invalid",
                            None if limited else wire.error(e.code, e.message) if e.frame_id is None
                            else wire.nack(e.frame_id, e.code, e.message))
            return CONTINUE
        if isinstance(frame, wire.SignalFrame):
            self.signal(member, frame, now_ms, limited)
        elif limited:
            return CONTINUE  # nothing else is answered past the rate limit
        elif isinstance(frame, wire.PingFrame):
            link.send(wire.pong(frame.id, now_ms))
        elif isinstance(frame, wire.DisconnectFrame):
            self.engine.leave(member.session_id, member.connection.id, CLIENT_DISCONNECTED,
                              lambda m: link.send(wire.disconnected(CLIENT_DISCONNECTED)))
            return STOP
        elif isinstance(frame, wire.ForceDisconnectFrame):
            fid = frame.id
            self.force(member.session_id, frame.connection_id, member.connection.role,
                       lambda refusal: self._answer(member, fid, refusal))
        else:
            link.send(wire.error(BAD_REQUEST, "already connected"))
        return CONTINUE if member.link is link else STOP  # forced out, or resumed on another link

    def signal(self, member: Member, f: wire.SignalFrame, now_ms: int, limited: bool = False) -> None:
        """A signal frame from ``member``: refused here (nack) or handed to the engine, which delivers
        it (each receiver's frame before the sender's ack) and answers through :meth:`_answer`."""
        self.metrics.signals_in += 1
        refusal = signal_refusal(member.connection.role, f.type, f.data, limited)
        if refusal is not None:
            self.engine.answered(member, f.id, refusal)
            self._answer(member, f.id, refusal)
            return
        # ts: when the sender issued it, for a signal that waited in the sender's queue (queued_ms).
        body = wire.SignalBody(f.type, f.data, member.connection.id, max(0, now_ms - f.queued_ms))
        self.engine.signal(member, f.id, member.session_id, f.to, body, f.retry, self._answer)

    def _answer(self, sender: Member | None, frame_id: int, refusal: Refusal | None) -> None:
        """The engine's answer to a WebSocket signal: ack or nack on the sender's link."""
        if sender is None or (link := sender.link) is None:
            return
        if refusal is None:
            link.send(wire.ack(frame_id))
        else:
            self.metrics.nack(refusal[0])
            link.send(wire.nack(frame_id, *refusal))

    def _malformed(self, link: Link, member: Member, kind: str, answer: str | None) -> None:
        kinds = self.metrics.refused_frames
        kinds[kind] = kinds.get(kind, 0) + 1
        self.log.warn(f"frame-{kind}", "session %s: connection %s sent a frame refused as %s",
                      member.session_id, member.connection.id, kind)
        if answer is not None:
            link.send(answer)

    # ---- shared by WebSocket and REST --------------------------------------------------------------

    def force(self, session_id: str, connection_id: str, by_role: str | None,
              done: Callable[[Refusal | None], None]) -> None:
        """Force ``connection_id`` out, asked by a member of ``by_role`` (None: a REST caller, whose
        credentials the adapter checked). ``done`` gets None (forced: called before anyone is told)
        or the refusal (403 not a moderator, 404 no such connection)."""
        refusal = force_refusal(by_role)
        if refusal is not None:
            done(refusal)
            return

        def forced(target: Member | None) -> None:
            if target is None:
                done(NO_SUCH_CONNECTION)
                return
            done(None)  # the ack goes before the connection_destroyed it causes
            out = target.link
            if out is not None:
                out.send(wire.disconnected(FORCE_DISCONNECTED))
                out.close()

        self.engine.leave(session_id, connection_id, FORCE_DISCONNECTED, forced)

    def rest_signal(self, session_id: str, to: str | None, type_: object, data: object, now_ms: int,
                    done: Callable[[Refusal | None], None]) -> None:
        """A REST signal (``from`` null, always ``retry``) to ``to`` or to everyone; ``done`` gets None
        (delivered: 204) or the refusal (400/413 as for a WebSocket signal, 404 no such connection)."""
        refusal = signal_refusal(None, type_, data)
        if refusal is not None:
            self.metrics.nack(refusal[0])
            done(refusal)
            return

        def answered(_sender: Member | None, _id: int, refusal: Refusal | None) -> None:
            if refusal is None:
                self.metrics.rest_signals += 1
            else:
                self.metrics.nack(refusal[0])
            done(refusal)

        assert isinstance(type_, str) and isinstance(data, str)  # signal_refusal checked them
        self.engine.signal(None, 0, session_id, to, wire.SignalBody(type_, data, None, now_ms), True,
                           answered)

    def connections(self, session_id: str,
                    done: Callable[[list[tuple[Connection, bool]]], None]) -> None:
        """Every connection of the session and whether it is linked (REST listing)."""
        self.engine.connections(session_id, done)

    # ---- links lost, grace windows -----------------------------------------------------------------

    def link_lost(self, member: Member, link: Link, now: float) -> bool:
        """``link`` of ``member`` dropped without ``disconnect``; True when that started its grace
        window (the adapter then calls :meth:`expire` once it has passed)."""
        if not self.engine.link_lost(member, link, now):
            return False
        self.log.info("session %s: connection %s link lost", member.session_id, member.connection.id)
        return True

    def expire(self, now: float) -> list[Member]:
        """Remove the members whose grace window has ended (``networkDisconnected``)."""
        gone = self.engine.expire(now)
        for m in gone:
            self.log.info("connection %s left after its grace window", m.connection.id)
        return gone

    # ---- looking -----------------------------------------------------------------------------------

    @property
    def sessions(self) -> Mapping[str, Mapping[str, Member]]:
        return self.engine.sessions

    def find(self, session_id: str, connection_id: str) -> Member | None:
        return self.engine.find(session_id, connection_id)

    @property
    def connection_count(self) -> int:
        """Members this hub holds (linked or in their grace window)."""
        return sum(len(m) for m in self.engine.sessions.values())

    def metric_rows(self, links: int) -> list[MetricRow]:
        """What /metrics shows, as data; ``links`` is the adapter's count of open links."""
        return metric_rows(self.metrics, connections=self.connection_count,
                           sessions=len(self.engine.sessions), links=links,
                           buffered_bytes=self.engine.buffered_bytes)
