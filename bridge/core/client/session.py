"""The session client without I/O: hub frames in, session events out; signals in, frames out.

:class:`ClientSession` holds everything a session client knows (the link state table, the clock
estimate, the seq filter, the outbox, the members) and takes every decision; the asyncio adapter
(:class:`bridge.client.SessionClient`) only moves text between it and a WebSocket and runs the
timers. Times are the caller's monotonic clock in seconds (``now``); nothing here reads a clock.

Calling contract (the adapter's loop, in this order):

1. Joining: send :meth:`ClientSession.connect_frame`; feed the answer to a ``wire.JoinReader``
   until it returns the hub's ``connected`` (or ``error``); pass that to :meth:`joined`, which
   returns the events to hand to the user and, when the hub gave us a connection we must not keep,
   a frame to send back.
2. While connected: every text frame received goes to :meth:`receive`, which returns at most one
   event. A :class:`Disconnected` event means the hub put us out: the session is over, close the
   socket. A ProtocolError it raises is a bad frame: log it and go on.
   :meth:`signal` / :meth:`nowait_frame` / :meth:`ping_frame` / :meth:`force_disconnect_frame`
   give the frames to write; :meth:`next_queued` those queued during an outage (write them before
   anything new, in order). Every ``keepalive_tick_s`` call :meth:`keepalive`.
3. When the socket drops (or :meth:`keepalive` said it went silent): :meth:`link_lost`, then
   :meth:`reconnect_delay`, sleep, :meth:`attempt_timeout` (None: :meth:`give_up`), try to join
   again (a failed attempt: :meth:`attempt_failed`). Every attempt dials ``hubs.url``: with several
   hub URLs the session moves to the next one on a drop and on a failed attempt (``.hubs``).
4. :meth:`finish` ends the session (idempotent): every pending ticket fails.

Callers wait on *tickets*: any object with ``done()``, ``set_result()`` and ``set_exception()``
(an ``asyncio.Future`` in the adapter, a ``concurrent.futures.Future`` in the tests). The session
settles them when the hub answers, the link drops or the session ends.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.core.backoff import Backoff
from bridge.core.client.clock import ClockEstimator
from bridge.core.client.hubs import HubList
from bridge.core.client.outbox import Outbox, Outgoing, SeqFilter, Ticket
from bridge.core.client.state import LinkEvent, LinkMachine, LinkState, Notice
from bridge.core.errors import SignalError
from bridge.core.events import (
    ConnectionCreated,
    ConnectionDestroyed,
    Disconnected,
    Reconnected,
    Reconnecting,
    SessionEvent,
    Signal,
)
from bridge.core.signal import (
    BAD_REQUEST,
    FORCE_DISCONNECTED,
    NETWORK_DISCONNECTED,
    NOT_CONNECTED,
    Connection,
)
from bridge.core.signal import check_signal as _check_signal
from bridge.core.wire import (
    Ack,
    Connected,
    HubDisconnected,
    HubError,
    Nack,
    Pong,
    ProtocolError,
    Resume,
    connect_frame,
    disconnect_frame,
    force_disconnect_frame,
    parse_hub_frame,
    ping_frame,
    signal_frame,
)

_Out = Outgoing[Ticket[None]]


def check_signal(type_: str, data: str, to: str | None) -> None:
    """The local check of a signal before anything is sent or queued; raises SignalError 400/413."""
    refusal = _check_signal(type_, data)
    if refusal is not None:
        raise SignalError(refusal.code, refusal.message)
    if to is not None and (not isinstance(to, str) or not to):
        raise SignalError(BAD_REQUEST, "'to' must be a connection id")


class ClientSession:
    """One session client's state and decisions (see the module docstring for the calling contract).

    Options (seconds): ``ping_interval_s`` between keep-alive pings; ``link_timeout_s`` of silence
    after which the link is lost; ``reconnect_min_s``/``reconnect_max_s`` bound the backoff;
    ``give_up_s`` after a drop before the session ends (None: never); ``open_timeout_s`` per attempt;
    ``urls`` the hub base URL(s) to dial, in order (:class:`bridge.core.client.hubs.HubList`; the
    default is the hub's own default address, for callers that never dial).
    """

    def __init__(self, *, ping_interval_s: float = 2.0, link_timeout_s: float = 6.0,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 5.0,
                 give_up_s: float | None = 60.0, open_timeout_s: float = 10.0,
                 urls: str | Iterable[str] = "ws://127.0.0.1:8765") -> None:
        self.hubs = HubList(urls)
        self.ping_interval_s = ping_interval_s
        self.link_timeout_s = link_timeout_s
        self.give_up_s = give_up_s
        self.open_timeout_s = open_timeout_s
        #: How often the adapter calls :meth:`keepalive`.
        self.keepalive_tick_s = min(ping_interval_s, link_timeout_s / 4)
        self.link = LinkMachine()
        self.clock = ClockEstimator()
        self.seq = SeqFilter()
        self.outbox: Outbox[Ticket[None]] = Outbox()
        self.backoff = Backoff(reconnect_min_s, reconnect_max_s)
        self.requests: dict[int, Ticket[None]] = {}
        #: ping id -> (sent at, monotonic ms; who waits for the round-trip time, if anyone)
        self.pings: dict[int, tuple[float, Ticket[float] | None]] = {}
        self.connection: Connection | None = None
        self.connections: dict[str, Connection] = {}
        #: The hub's rate limit for this connection (signals/s, burst), as its last 'connected' said.
        self.rate_limit: tuple[float, float] | None = None
        self.stats: dict[str, int] = {"sent": 0, "acked": 0, "dropped": 0, "duplicates": 0,
                                      "reconnects": 0, "received": 0, "events_dropped": 0,
                                      "nowait_nacked": 0}
        self._resume_secret = ""
        self._last_rx = 0.0
        self._next_ping = 0.0
        self._give_up_at: float | None = None

    @property
    def state(self) -> LinkState:
        return self.link.state

    @property
    def connected(self) -> bool:
        return self.link.state is LinkState.CONNECTED

    def hub_now_ms(self, now: float) -> float:
        """The hub's clock at local monotonic ``now`` (s), ms. Before any exchange: 0-offset."""
        return self.clock.hub_now_ms(now * 1000.0)

    # ---- joining ---------------------------------------------------------------------------------

    def connect_frame(self, token: str) -> str:
        """The ``connect`` frame to open a link with: with ``resume`` while reconnecting."""
        resume = None
        if self.link.state is LinkState.RECONNECTING and self.connection is not None:
            resume = Resume(self.connection.id, self._resume_secret, self.seq.last_seq)
        return connect_frame(token, resume)

    def joined(self, answer: Connected | HubError, sent: float, received: float
               ) -> tuple[list[SessionEvent], str | None]:
        """The hub's answer to the ``connect`` written at ``sent`` and read (with its pages) at
        ``received``: (events for the user, a frame to send back before closing, or None).

        The first join refused (``error``) raises SignalError with the hub's code. A resume refused,
        or answered with a fresh connection (not ours: the others already saw us leave, so it is given
        back with ``disconnect``), ends the session: the events end with Disconnected."""
        resuming = self.link.state is LinkState.RECONNECTING
        if isinstance(answer, HubError):
            if not resuming:
                self.link.handle(LinkEvent.REFUSED)
                raise SignalError(answer.code, answer.message)
            return self.finish(NETWORK_DISCONNECTED, LinkEvent.REFUSED), None
        if resuming and (not answer.resumed or self.connection is None
                         or answer.connection.id != self.connection.id):
            return self.finish(NETWORK_DISCONNECTED, LinkEvent.REFUSED), disconnect_frame()
        self.clock.add(sent * 1000.0, answer.server_time, received * 1000.0)
        events: list[SessionEvent] = []
        if self.link.handle(LinkEvent.UP) is Notice.RECONNECTED:
            self.stats["reconnects"] += 1
            self.backoff.stable()
            events.append(Reconnected())
        self._adopt(answer, events, first=not resuming)
        self._last_rx = self._next_ping = received
        if resuming:
            self._settle_resumed(answer)
        return events, None

    def _adopt(self, hello: Connected, events: list[SessionEvent], *, first: bool) -> None:
        """Take the hub's view of the session; tell the user what changed (all of it the first time:
        a newcomer gets connectionCreated for each client already there)."""
        self.connection = hello.connection
        self._resume_secret = hello.resume_secret
        self.rate_limit = hello.rate_limit
        now = {c.id: c for c in hello.connections if c.id != hello.connection.id}
        if not first:
            events.extend(ConnectionDestroyed(gone, NETWORK_DISCONNECTED)
                          for cid, gone in self.connections.items() if cid not in now)
        events.extend(ConnectionCreated(c) for cid, c in now.items() if first or cid not in self.connections)
        self.connections = now

    def _settle_resumed(self, hello: Connected) -> None:
        """Signals in flight at the drop with an id up to the hub's ``last_id`` were processed (their
        answer was lost with the link): settle them with the ack, or the nack the hub lists, instead
        of re-sending them. An older hub sends no ``last_id``: everything queued is re-sent."""
        if hello.last_id is None:
            return
        nacks = {n.id: n for n in hello.nacks}
        for out in self.outbox.resumed(hello.last_id):
            self._settle(out, nacks.get(out.id) or Ack(out.id))

    # ---- frames in -------------------------------------------------------------------------------

    def receive(self, text: str | bytes, now: float) -> SessionEvent | None:
        """One frame from the hub, read at ``now``: the event to hand to the user, or None. Raises
        ProtocolError for a frame that is not wire protocol v1, or one that has no place here."""
        self._last_rx = now
        frame = parse_hub_frame(text, now * 1000.0 + self.clock.offset_ms)
        if isinstance(frame, Signal):  # the hot path first
            if self.seq.accept(frame.seq):
                self.stats["received"] += 1
                return frame
            self.stats["duplicates"] += 1
        elif isinstance(frame, Ack | Nack):
            self._answered(frame)
        elif isinstance(frame, Pong):
            sent, waiter = self.pings.pop(frame.id, (None, None))
            if sent is not None:
                received = now * 1000.0
                self.clock.add(sent, frame.server_time, received)
                if waiter is not None and not waiter.done():
                    waiter.set_result(received - sent)
        elif isinstance(frame, ConnectionCreated):
            cid = frame.connection.id
            if self.connection is not None and cid != self.connection.id and cid not in self.connections:
                self.connections[cid] = frame.connection
                return frame
        elif isinstance(frame, ConnectionDestroyed):
            if self.connections.pop(frame.connection.id, None) is not None:
                return frame
        elif isinstance(frame, HubDisconnected):
            ended = self.finish(frame.reason or FORCE_DISCONNECTED)
            return ended[0] if ended else None
        else:
            raise ProtocolError(f"unexpected {type(frame).__name__} frame")
        return None

    def _answered(self, frame: Ack | Nack) -> None:
        out = self.outbox.answered(frame.id)
        if out is not None:
            self._settle(out, frame)
        elif (ticket := self.requests.pop(frame.id, None)) is not None:
            if ticket.done():
                pass
            elif isinstance(frame, Ack):
                ticket.set_result(None)
            else:
                ticket.set_exception(SignalError(frame.code, frame.message))
        elif isinstance(frame, Nack):
            # The answer to a nowait signal (its ack is ignored): nobody waits for it.
            self.stats["nowait_nacked"] += 1

    def _settle(self, out: _Out, answer: Ack | Nack) -> None:
        """Resolve a signal's caller with the hub's answer."""
        if out.ticket.done():  # its caller gave up (cancelled)
            return
        if isinstance(answer, Ack):
            self.stats["acked"] += 1
            out.ticket.set_result(None)
        else:
            out.ticket.set_exception(SignalError(answer.code, answer.message))

    # ---- frames out ------------------------------------------------------------------------------

    def signal(self, type_: str, data: str, to: str | None, retry: bool, ticket: Ticket[None],
               now: float) -> str | None:
        """A signal issued at ``now``; ``ticket`` is settled with the hub's answer. Returns the frame
        to write now, or None when it was queued (reconnecting, or behind a flush: keep the order).
        Raises SignalError: 400/413 (the local check), 500 when it can be neither sent nor queued."""
        check_signal(type_, data, to)
        state = self.link.state
        if state is LinkState.CONNECTED:
            out = self.outbox.new(type_, data, to, retry, ticket, now)
            if self.outbox.has_queued:
                self.outbox.enqueue(out)
                return None
            return self._sent(out, now)
        if state is LinkState.RECONNECTING:
            if not retry:
                self.stats["dropped"] += 1
                raise SignalError(NOT_CONNECTED, "not connected (reconnecting): signal dropped")
            self.outbox.enqueue(self.outbox.new(type_, data, to, True, ticket, now))
            return None
        raise SignalError(NOT_CONNECTED, f"not connected ({state.value})")

    def _sent(self, out: _Out, now: float) -> str:
        self.outbox.sent(out)
        self.stats["sent"] += 1
        return self.outbox.frame_at(out, now)  # with queued_ms when it had to wait

    def next_queued(self, now: float) -> str | None:
        """The next queued signal's frame to write at ``now`` (recorded as sent), or None: none left.
        Signals whose caller gave up are skipped."""
        while (out := self.outbox.next_queued()) is not None:
            if not out.ticket.done():
                return self._sent(out, now)
        return None

    @property
    def awaiting_answer(self) -> int:
        """Signals written to the current link and not yet answered."""
        return self.outbox.awaiting_answer

    def nowait_frame(self, type_: str, data: str, to: str | None) -> str | None:
        """A fire-and-forget signal (retry false, no ticket): its frame to write at once, or None when
        it cannot go now (not connected, or queued signals must go first: overtaking would reorder).
        Report what became of it with :meth:`nowait_written`. Raises SignalError 400/413."""
        check_signal(type_, data, to)
        if self.link.state is not LinkState.CONNECTED or self.outbox.has_queued:
            return None
        return signal_frame(self.outbox.new_id(), type_, data, to, False)

    def nowait_written(self, written: bool) -> bool:
        """Count a fire-and-forget signal as sent or dropped; returns ``written``."""
        self.stats["sent" if written else "dropped"] += 1
        return written

    def ping_frame(self, now: float, waiter: Ticket[float] | None = None) -> str:
        """A ping written at ``now``; ``waiter`` gets the round-trip time (ms). SignalError 500 when
        not connected."""
        self._require_link()
        id_ = self.outbox.new_id()
        self.pings[id_] = (now * 1000.0, waiter)
        return ping_frame(id_)

    def force_disconnect_frame(self, connection_id: str, ticket: Ticket[None]) -> str:
        """A request to put ``connection_id`` out (moderators only); ``ticket`` gets the answer."""
        self._require_link()
        id_ = self.outbox.new_id()
        self.requests[id_] = ticket
        return force_disconnect_frame(id_, connection_id)

    def _require_link(self) -> None:
        if self.link.state is not LinkState.CONNECTED:
            raise SignalError(NOT_CONNECTED, f"not connected ({self.link.state.value})")

    def keepalive(self, now: float) -> str | None:
        """Called every ``keepalive_tick_s`` while connected: a ping frame to write when one is due, else
        None (also when not connected). Raises TimeoutError when nothing came from the hub for
        ``link_timeout_s`` (drop the socket, then :meth:`link_lost`)."""
        if self.link.state is not LinkState.CONNECTED:
            return None
        if now - self._last_rx > self.link_timeout_s:
            raise TimeoutError(f"no frame from the hub for {now - self._last_rx:.1f} s")
        if now < self._next_ping:
            return None
        self._next_ping = now + self.ping_interval_s
        return self.ping_frame(now)

    # ---- the link drops, comes back, or the session ends -----------------------------------------

    def link_lost(self, now: float) -> list[SessionEvent]:
        """The socket is gone: unanswered retry signals are queued again (to re-send after the resume),
        the others and every request fail with 500; the give-up clock starts."""
        events: list[SessionEvent] = []
        if self.link.handle(LinkEvent.LOST) is Notice.RECONNECTING:
            self.hubs.link_lost()
            events.append(Reconnecting())
            self._give_up_at = None if self.give_up_s is None else now + self.give_up_s
            self.backoff.stable()
        for out in self.outbox.link_lost():
            if not out.ticket.done():
                self.stats["dropped"] += 1
                out.ticket.set_exception(SignalError(NOT_CONNECTED, "link lost before the hub's ack"))
        self._fail_requests("link lost before the hub answered")
        return events

    def reconnect_delay(self, now: float, jitter: float) -> float:
        """The wait before the next attempt (``jitter`` in [0.5, 1]), never past the give-up time;
        0 while URLs of this round are left untried (the backoff grows once per round)."""
        if not self.hubs.round_done:
            return 0.0
        delay, _ = self.backoff.failed(jitter)
        if self._give_up_at is not None:
            delay = min(delay, max(0.0, self._give_up_at - now))
        return delay

    def attempt_timeout(self, now: float) -> float | None:
        """How long the attempt starting at ``now`` may take; None: give up (:meth:`give_up`)."""
        if self._give_up_at is None:
            return self.open_timeout_s
        left = self._give_up_at - now
        return min(self.open_timeout_s, left) if left > 0 else None

    def attempt_failed(self) -> None:
        """A connection attempt failed in a way worth another one (the first ``connect`` ends here);
        the next attempt goes to the next hub URL."""
        self.link.handle(LinkEvent.LOST)
        if self.link.state is LinkState.RECONNECTING:
            self.hubs.attempt_failed()

    def first_failed(self) -> bool:
        """The first connect to ``hubs.url`` failed (unreachable, not refused): True when another URL
        is left to try (dial ``hubs.url`` again); False ends the attempt (as :meth:`attempt_failed`)."""
        if self.link.state is LinkState.CONNECTING and self.hubs.first_failed():
            return True
        self.attempt_failed()
        return False

    def give_up(self) -> list[SessionEvent]:
        return self.finish(NETWORK_DISCONNECTED, LinkEvent.GAVE_UP)

    def finish(self, reason: str, event: LinkEvent = LinkEvent.CLOSE) -> list[SessionEvent]:
        """End the session (idempotent): everything pending fails with 500; Disconnected(reason) is
        returned once, by the call that ended it."""
        events: list[SessionEvent] = []
        if self.link.handle(event) is Notice.DISCONNECTED:
            events.append(Disconnected(reason))
        if self.link.state is LinkState.CLOSED:
            error = SignalError(NOT_CONNECTED, f"not connected (session closed: {reason})")
            for out in self.outbox.clear():
                if not out.ticket.done():
                    out.ticket.set_exception(error)
            self._fail_requests(f"session closed: {reason}")
        return events

    def _fail_requests(self, why: str) -> None:
        error = SignalError(NOT_CONNECTED, why)
        for ticket in self.requests.values():
            if not ticket.done():
                ticket.set_exception(error)
        for _, waiter in self.pings.values():
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        self.requests.clear()
        self.pings.clear()
