"""MQTT device link: publishes commands to devices behind a broker and hands their messages back.

Built on aiomqtt 2.x (paho-mqtt driven from the asyncio loop, no network thread). One connection per
link, kept up by ``run``:

* every connection is a fresh ``aiomqtt.Client`` with a clean session, so nothing published before an
  outage is ever replayed after it (stale commands are worse than lost ones);
* TCP_NODELAY on the socket (paho leaves Nagle on: 40-90 ms per QoS 1 hop without it);
* an availability topic: ``online`` published retained on every connect, ``offline`` retained as the
  last will (the broker publishes it if the link dies) and published by ``run`` itself on a clean stop;
* subscriptions are made again on every connect;
* reconnect with capped exponential backoff; the outage is logged once (warning) and the recovery once
  (info, when the connection has lasted twice ``reconnect_max_s``), however many attempts it takes and however
  often the broker drops us meanwhile (see ``backoff.Reconnect``).

``publish`` never blocks the caller and never loses a command while the broker is up but slower than a
burst: it hands the packet to paho's own outgoing queue and returns. paho sends QoS>0 messages in call
order, at most MAX_INFLIGHT of them awaiting their PUBACK/PUBCOMP, and holds the rest back in that queue
(QoS 0 goes straight to the socket buffer; MQTT orders messages per QoS level anyway). The queue holds at
most MAX_QUEUED QoS>0 messages; past that a publish is refused (False, ``publish_overflow``): the newest
is refused rather than an older accepted one silently dropped, so the caller knows (the engine nacks it
and a retry:true sender retries). Whenever the link is down, publishes are refused and counted
(``publishes_while_down``), and what was still queued when it went down is dropped with that connection
(``inflight_cancelled``): stale commands are never replayed after an outage. Commands are never retained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable, Sequence
from typing import Final, Literal

from bridge.devices.paho_client import paho  # first: paho without dnspython

# isort: split
import aiomqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.core.model import MqttDeviceConfig
from bridge.devices.outage import Reconnect, report_state
from bridge.devices.topics import check_filter, topic_ok

__all__ = ["MqttLink", "availability_topic"]

log = logging.getLogger(__name__)
# paho's own messages ("failed to receive on socket", ...) would repeat on every reconnect attempt; the
# link reports each outage once itself, with the cause. Lower this logger's level to see paho's detail.
_paho_log = logging.getLogger(__name__ + ".paho")
_paho_log.setLevel(logging.CRITICAL)

#: QoS>0 publishes sent and awaiting their handshake at once (paho's in-flight window); the others wait in
#: order in paho's queue. 64 was the fastest of 20/64/128/256/1000 for a 10,000 burst to a local broker
#: (paho scans the window on every PUBACK); 64 per round trip is still ~1,300/s over a 50 ms link.
MAX_INFLIGHT = 64
#: QoS>0 publishes accepted but not yet acknowledged (window included); past this, publish refuses the
#: new one (counted in publish_overflow). A burst of this many commands is queued, not lost. A QoS 0
#: publish is refused when this many of ours (QoS 0 not yet written included) are waiting.
#: Why 1,000: a queue is a delay, and commands at its end are stale by the time they leave (1,000 is
#: ~0.3 s at the ~3,500/s a local broker takes, ~0.8 s at 64 per round trip over 50 ms); and paho holds
#: ~1.8 KB per queued message (two threading.Conditions each), so 10,000 cost the daemon ~18 MB of RSS.
MAX_QUEUED = 1_000
#: Incoming messages waiting for the loop; past this aiomqtt discards them (counted: incoming_dropped).
MAX_INCOMING = 1000
OPERATION_TIMEOUT_S = 5.0
_NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def availability_topic(name: str, config: MqttDeviceConfig) -> str:
    """``config.availability_topic``, else ``sigbridge/{client_id or link name}/availability``."""
    return config.availability_topic or f"sigbridge/{config.client_id or name}/availability"


class MqttLink:
    """One broker connection for one device. Construct, then run ``run()`` as a task.

    ``subscriptions`` are topic filters (wildcards allowed), subscribed at QoS 1 on every connect; an
    invalid filter raises ValueError here, not later inside ``run``.
    ``on_message(topic, payload)`` is called on the loop for each message received; ``on_state(name, up)``
    on every change of ``up``. Exceptions from either are logged and swallowed.

    ``stats``: messages_in, incoming_dropped (the loop fell MAX_INCOMING behind), published (handshake
    done; QoS 0: written to the socket), publishes_while_down, publish_overflow (MAX_QUEUED waiting),
    publish_errors, bad_publish_refused, inflight_cancelled (queued or awaiting the handshake when the
    connection dropped: never sent again), connects, connect_failures, purged (dropped by ``purge``),
    publishes_sealed (refused after ``seal``), expired (dropped from paho's queue, never sent: their
    ``deadline`` passed while the broker was slow).
    """

    #: The link kind (see bridge.devices): checked instead of isinstance, so no module imports both.
    kind: Final[Literal["mqtt"]] = "mqtt"

    def __init__(self, name: str, config: MqttDeviceConfig, subscriptions: Sequence[str],
                 on_message: Callable[[str, bytes], None],
                 on_state: Callable[[str, bool], None] | None = None,
                 on_expired: Callable[[str, list[str]], None] | None = None) -> None:
        self.name = name
        self._on_expired = on_expired
        self.config = config
        self.subscriptions = tuple(subscriptions)
        for f in self.subscriptions:
            check_filter(f)
        self.availability = availability_topic(name, config)
        self._on_message = on_message
        self._on_state = on_state
        self._client: aiomqtt.Client | None = None
        self._paho: paho.Client | None = None
        # mids of our accepted publishes not yet handshaken, on the live connection (see _new_client).
        self._pending: set[int] = set()
        # Deadlines (monotonic s) of the pending publishes that carry one, and the earliest of them.
        self._deadlines: dict[int, float] = {}
        self._soonest = math.inf
        self._up = False
        self._sealed = False
        self.stats: dict[str, int] = dict.fromkeys(
            ("messages_in", "incoming_dropped", "published", "publishes_while_down", "publish_overflow",
             "publish_errors", "bad_publish_refused", "inflight_cancelled", "connects",
             "connect_failures", "purged", "publishes_sealed", "expired"), 0)

    @property
    def up(self) -> bool:
        """True while connected, announced online and subscribed."""
        return self._up

    def publish(self, topic: str, payload: bytes, qos: int = 0, deadline: float | None = None) -> bool:
        """Start publishing ``payload`` on ``topic`` (never retained) and return at once.

        Returns False, counting why, when the link is down, when MAX_QUEUED publishes are already waiting
        (QoS>0 ones count until their handshake; for a QoS 0 one, ours not yet written count too), or
        when ``topic``/``qos``/``payload`` are not publishable (empty topic, wildcards, NUL, qos not 0-2,
        payload over MQTT's 256 MB). True means the packet is queued in order on the live connection
        (sent once the in-flight window has room), not that it arrived. A QoS>0 publish with a
        ``deadline`` (monotonic seconds) still in paho's queue then is dropped before paho sends it,
        never sent (counted: expired; ``on_expired(name, ["topic payload", ...])``)."""
        if self._sealed:
            self.stats["publishes_sealed"] += 1
            return False
        client = self._paho
        if client is None or not self._up:
            self.stats["publishes_while_down"] += 1
            return False
        if not topic_ok(topic) or qos not in (0, 1, 2):
            self.stats["bad_publish_refused"] += 1
            log.warning("mqtt %s: refused publish to %r with qos %r", self.name, topic[:80], qos)
            return False
        if qos == 0 and len(self._pending) >= MAX_QUEUED:
            # paho bounds only QoS>0; QoS 0 packets a stalled socket has not taken yet count here too.
            self.stats["publish_overflow"] += 1
            return False
        # paho's publish directly, not aiomqtt's: aiomqtt.Client.publish makes this same call first, then
        # awaits the handshake in a task per message whose bookkeeping scans every pending call (O(n) per
        # publish: 9 s of CPU for a 10,000 burst, against 0.1 s here). paho's callbacks run on this loop.
        try:
            info = client.publish(topic, payload, qos, False)
        except ValueError as exc:              # payload too large
            self.stats["bad_publish_refused"] += 1
            log.warning("mqtt %s: refused publish to %r: %s", self.name, topic[:80], exc)
            return False
        if info.rc == paho.MQTT_ERR_SUCCESS:
            if info.is_published():
                self.stats["published"] += 1
            else:
                self._pending.add(info.mid)
                if deadline is not None and qos > 0:
                    self._deadlines[info.mid] = deadline
                    self._soonest = min(self._soonest, deadline)
            return True
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            self.stats["publish_overflow"] += 1
        elif info.rc == paho.MQTT_ERR_NO_CONN:   # dropped a moment ago; run() is about to hear of it
            self.stats["publishes_while_down"] += 1
        else:
            self.stats["publish_errors"] += 1
            log.warning("mqtt %s: publish failed: %s", self.name, paho.error_string(info.rc))
        return False

    def refusal(self, qos: int) -> str | None:
        """Why a publish at ``qos`` would be refused now: ``"down"`` (not connected, or sealed),
        ``"full"`` (MAX_QUEUED of ours waiting), or None when it would be taken (see ``publish``)."""
        if self._sealed or self._paho is None or not self._up:
            return "down"
        self._expire()                  # stale messages must not make room short
        return "full" if len(self._pending) >= MAX_QUEUED else None

    def purge(self) -> None:
        """Drop our QoS>0 publishes still waiting in paho's queue, never sent (counted: purged). Those in
        the in-flight window are on the wire already and stay. Called before an e-stop or the shutdown:
        a publish made next must not be followed by older commands (paho sends the queue in order, and
        a QoS 0 publish overtakes it)."""
        self.stats["purged"] += len(self._drop(None))

    def _drop(self, now: float | None) -> list[paho.MQTTMessage]:
        """Drop our publishes still queued in paho (never sent): all (``now`` None), or those whose
        deadline is at or before ``now``. Returns them."""
        client, pending, deadlines = self._paho, self._pending, self._deadlines
        if client is None or not pending:
            return []
        # paho's own queue (MQTTMessage.state == queued: not yet sent). Its lock: paho's callbacks run
        # on this loop, but the lock is what paho itself takes around this dict (an RLock: taken again
        # from paho's own _update_inflight, see _new_client).
        with client._out_message_mutex:
            out = client._out_messages
            dropped = [m for mid, m in out.items() if mid in pending and m.state == paho.mqtt_ms_queued
                       and (now is None or deadlines.get(mid, math.inf) <= now)]
            for m in dropped:
                del out[m.mid]
                pending.discard(m.mid)
                deadlines.pop(m.mid, None)
        self._soonest = min(deadlines.values(), default=math.inf)
        return dropped

    def _expire(self) -> None:
        """Drop the queued publishes whose deadline has passed; report them (counted: expired)."""
        if self._soonest > time.monotonic():
            return
        dropped = self._drop(time.monotonic())
        self._soonest = min(self._deadlines.values(), default=math.inf)
        if not dropped:
            return
        self.stats["expired"] += len(dropped)
        if self._on_expired is not None:
            texts = [f"{m.topic} {m.payload.decode('utf-8', 'replace')}" for m in dropped]
            try:
                self._on_expired(self.name, texts)
            except Exception:
                log.exception("mqtt %s: on_expired callback failed", self.name)

    def seal(self) -> None:
        """Refuse every later publish (counted: publishes_sealed); see ``SerialLink.seal``. The clean
        stop's retained ``offline`` (availability, not a command) is still published by ``run``."""
        self._sealed = True

    @property
    def queued(self) -> int:
        """Our publishes not yet handshaken (QoS>0) or not yet written (QoS 0)."""
        return len(self._pending)

    async def run(self) -> None:
        """Connect and stay connected until cancelled. On cancellation ``offline`` is published (retained)
        and the connection closed cleanly before the CancelledError propagates."""
        c = self.config
        retry = Reconnect(log, c.reconnect_min_s, c.reconnect_max_s)
        while True:
            try:
                async with self._new_client() as client:
                    try:
                        await client.publish(self.availability, b"online", qos=1, retain=True)
                        if self.subscriptions:
                            await client.subscribe([(t, 1) for t in self.subscriptions])
                        self.stats["connects"] += 1
                        retry.connected(f"mqtt {self.name}: connected again to {c.host}:{c.port}")
                        self._client = client
                        self._paho = client._client
                        self._set_up(True)
                        async for message in client.messages:
                            self._deliver(message)
                    except asyncio.CancelledError:
                        self._went_down()
                        # A clean stop sends no will: say "offline" ourselves, briefly.
                        with contextlib.suppress(aiomqtt.MqttError, ValueError):
                            await client.publish(self.availability, b"offline", qos=1, retain=True,
                                                 timeout=2)
                        raise
            except aiomqtt.MqttError as exc:
                was_up = self._up
                retry.disconnected()
                self._went_down()
                if not was_up:
                    self.stats["connect_failures"] += 1
                what = "lost" if was_up else "cannot connect to"
                await asyncio.sleep(retry.failed(
                    f"mqtt {self.name}: {what} {c.host}:{c.port} ({exc}); reconnecting"))
            finally:
                retry.disconnected()
                self._went_down()

    def _new_client(self) -> aiomqtt.Client:
        c = self.config
        stats = self.stats

        class CountingQueue(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt's incoming queue: when full, aiomqtt drops the message; we count it."""

            def put_nowait(self, item: aiomqtt.Message) -> None:
                if self.full():
                    stats["incoming_dropped"] += 1
                super().put_nowait(item)

        tls = aiomqtt.TLSParameters(ca_certs=c.ca_file) if c.tls else None
        client = aiomqtt.Client(
            c.host, c.port, username=c.username, password=c.password, identifier=c.client_id,
            # Bounds CONNACK/SUBACK/PUBACK waits: aiomqtt does not end them when the connection drops
            # meanwhile, so a broker lost during the setup costs up to this much before the retry.
            timeout=OPERATION_TIMEOUT_S,
            clean_session=True, keepalive=c.keepalive, tls_params=tls,
            will=aiomqtt.Will(self.availability, b"offline", qos=1, retain=True),
            socket_options=_NODELAY, max_queued_incoming_messages=MAX_INCOMING, queue_type=CountingQueue,
            logger=_paho_log,
            # paho sends QoS>0 packets in order, MAX_INFLIGHT unacknowledged at once, and queues the rest
            # (in-flight included) up to MAX_QUEUED; past that its publish returns MQTT_ERR_QUEUE_SIZE.
            max_inflight_messages=MAX_INFLIGHT, max_queued_outgoing_messages=MAX_QUEUED,
        )
        # Count our publishes' handshakes. The set is this connection's own: a new connection starts with
        # a new one (mids restart), and _went_down counts what is left in it as dropped.
        pending = self._pending = set()
        deadlines = self._deadlines = {}
        self._soonest = math.inf
        inner = client._client
        library_on_publish: Callable[..., None] | None = inner.on_publish   # aiomqtt's (API v2)

        def on_publish(c: paho.Client, userdata: object, mid: int, reason_code: ReasonCode,
                       properties: Properties) -> None:
            if library_on_publish is not None:
                library_on_publish(c, userdata, mid, reason_code, properties)  # wakes aiomqtt's awaits
            if mid in pending:
                pending.discard(mid)
                deadlines.pop(mid, None)
                stats["published"] += 1

        inner.on_publish = on_publish
        # paho sends queued messages from _update_inflight (a PUBACK freed a slot): the expired ones are
        # dropped right before it, so a message is never sent after its deadline (the broker slow or
        # frozen meanwhile). A private method, like the queue purge reads: checked with paho 2.2.
        library_update: Callable[[], MQTTErrorCode] = inner._update_inflight

        def update_inflight() -> MQTTErrorCode:
            self._expire()
            return library_update()

        setattr(inner, "_update_inflight", update_inflight)  # noqa: B010 (an instance's method)
        return client

    def _went_down(self) -> None:
        self._client = self._paho = None
        # Whatever paho still queues dies with this client: a new connection is a new client.
        self.stats["inflight_cancelled"] += len(self._pending)
        self._pending.clear()
        self._deadlines.clear()
        self._soonest = math.inf
        self._set_up(False)

    def _deliver(self, message: aiomqtt.Message) -> None:
        self.stats["messages_in"] += 1
        payload = message.payload
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        try:
            self._on_message(message.topic.value, data)
        except Exception:
            log.exception("mqtt %s: on_message callback failed", self.name)

    def _set_up(self, up: bool) -> None:
        if up == self._up:
            return
        self._up = up
        report_state(self._on_state, self.name, up, log)
