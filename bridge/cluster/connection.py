"""The store's link to Redis: one client for commands and scripts, pub/sub readers, and recovery.

Standalone Redis or a Redis Cluster, told apart by asking the first URL (``INFO cluster``). In a
cluster, notifications use sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``: a channel lives on the shard of
its session, so a notification never crosses the cluster bus to every node) with one subscriber
connection per node; standalone uses ``PUBLISH``/``SUBSCRIBE``. A supervisor pings Redis every
``check_s``: while that fails the link is not ready; when it answers again the readers are rebuilt,
every channel is subscribed again, and ``on_resync`` is called, because pub/sub messages published
meanwhile are gone (pub/sub is at most once; the streams are the record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

log = logging.getLogger("bridge.cluster")
_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


def _host_port(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    return u.hostname or "127.0.0.1", u.port or 6379


class RedisLink:
    """Commands, scripts and subscriptions over standalone Redis or a Redis Cluster."""

    def __init__(self, urls: list[str], on_message: Callable[[str, str], None],
                 on_resync: Callable[[], None], *, timeout_s: float = 2.0, check_s: float = 0.25) -> None:
        if not urls:
            raise ValueError("cluster.url: at least one redis:// URL")
        self.urls = urls
        self._on_message = on_message
        self._on_resync = on_resync
        self._timeout = timeout_s
        self._check_s = check_s
        self.client: Any = None
        self.cluster = False
        self.publish_command = "PUBLISH"
        self.ready = False
        self._channels: set[str] = set()
        self._subs: dict[str, tuple[Redis, PubSub, asyncio.Task[None]]] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._broken = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    def _opts(self) -> dict[str, Any]:
        return {"decode_responses": True, "socket_timeout": self._timeout,
                "socket_connect_timeout": self._timeout, "health_check_interval": 0}

    async def open(self) -> None:
        """Connect (raises RedisError/OSError when Redis cannot be reached) and start the supervisor.
        May be called again after a failed attempt or a ``close``."""
        self._closed = False
        probe = Redis.from_url(self.urls[0], **self._opts())
        try:
            info = await probe.info("cluster")
        finally:
            await probe.aclose()
        self.cluster = bool(info.get("cluster_enabled"))
        if self.cluster:
            nodes = [ClusterNode(*_host_port(u)) for u in self.urls]
            self.client = RedisCluster(startup_nodes=nodes, **self._opts())
            await self.client.initialize()
            self.publish_command = "SPUBLISH"
        else:
            self.client = Redis.from_url(self.urls[0], **self._opts())
            await self.client.ping()
        self.ready = True
        self._supervisor = asyncio.create_task(self._supervise(), name="redis-supervisor")

    async def close(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._drop_readers()
        if self.client is not None:
            with contextlib.suppress(*_ERRORS):
                await self.client.aclose()
        self.ready = False

    # -- subscriptions -------------------------------------------------------------------------------

    def _node_of(self, channel: str) -> tuple[str, int]:
        if not self.cluster:
            return _host_port(self.urls[0])
        node = self.client.get_node_from_key(channel)
        return str(node.host), int(node.port)

    async def subscribe(self, channel: str) -> None:
        """Subscribe and return once Redis has confirmed it: a script run after this returns is seen."""
        self._channels.add(channel)
        await self._subscribe_on_node(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        host, port = self._node_of(channel)
        entry = self._subs.get(f"{host}:{port}")
        if entry is not None:
            with contextlib.suppress(*_ERRORS):
                if self.cluster:
                    await entry[1].sunsubscribe(channel)
                else:
                    await entry[1].unsubscribe(channel)

    async def _subscribe_on_node(self, channel: str) -> None:
        host, port = self._node_of(channel)
        name = f"{host}:{port}"
        if name not in self._subs:
            conn = Redis(host=host, port=port, **self._opts())
            ps = conn.pubsub()
            # A reader must have a subscription before it may read; the first one is made here.
            self._subs[name] = (conn, ps, asyncio.create_task(self._read(ps), name=f"redis-sub-{name}"))
        ps = self._subs[name][1]
        fut = self._pending.setdefault(channel, asyncio.get_running_loop().create_future())
        try:
            if self.cluster:
                await ps.ssubscribe(channel)
            else:
                await ps.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(fut), self._timeout)
        except _ERRORS as e:
            self._broken.set()
            raise ConnectionError(f"cannot subscribe: {e}") from e
        finally:
            self._pending.pop(channel, None)

    async def _read(self, ps: PubSub) -> None:
        try:
            while not ps.subscribed:
                await asyncio.sleep(0.001)
            async for m in ps.listen():
                kind = m.get("type")
                if kind in ("message", "smessage"):
                    self._on_message(str(m["channel"]), str(m["data"]))
                elif kind in ("subscribe", "ssubscribe"):
                    fut = self._pending.get(str(m["channel"]))
                    if fut is not None and not fut.done():
                        fut.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any failure of a reader means: rebuild and resync
            log.warning("redis subscriber lost: %s", e)
            self.ready = False
            self._broken.set()

    async def _drop_readers(self) -> None:
        subs, self._subs = self._subs, {}
        for conn, ps, task in subs.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_ERRORS):
                await task
            with contextlib.suppress(*_ERRORS):
                await ps.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1
            with contextlib.suppress(*_ERRORS):
                await conn.aclose()

    # -- supervision ---------------------------------------------------------------------------------

    async def _ping(self) -> None:
        if self.cluster:
            await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.client.ping()

    async def _supervise(self) -> None:
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._broken.wait(), self._check_s)
            try:
                await asyncio.wait_for(self._ping(), self._timeout)
                if self._broken.is_set():
                    self._broken.clear()
                    await self._drop_readers()
                    for channel in sorted(self._channels):
                        await self._subscribe_on_node(channel)
                    log.info("redis link restored (%d channels)", len(self._channels))
                    self.ready = True
                    self._on_resync()
                self.ready = True
            except _ERRORS as e:
                if self.ready:
                    log.warning("redis unreachable: %s", e)
                self.ready = False
                self._broken.set()
                await asyncio.sleep(self._check_s)
