"""Hubs for tests that run on either engine: ``engine_hubs("memory", ())`` is one in-process hub (the
same handle ``n`` times), ``engine_hubs("redis", urls)`` ``n`` in-process hubs sharing one Redis, with
the same credentials, each ready (its store started) before it is handed out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bridge.config.hub import ClusterConfig
from tests.helpers.hub import HubHandle, running_hub, test_credentials
from tests.helpers.poll import until

#: Short liveness for tests: a dead hub is noticed within a second.
TEST_LEASE_MS = 1000


@contextlib.asynccontextmanager
async def engine_hubs(engine: str, urls: tuple[str, ...], n: int = 2, lease_ms: int = TEST_LEASE_MS,
                      **overrides: Any) -> AsyncIterator[list[HubHandle]]:
    if engine == "memory":
        async with running_hub(**overrides) as h:
            yield [h] * n
        return
    key, secret = test_credentials()
    cluster = ClusterConfig("redis", urls, lease_ms)
    async with contextlib.AsyncExitStack() as stack:
        hubs = [await stack.enter_async_context(running_hub(api_key=key, api_secret=secret, cluster=cluster,
                                                            **overrides)) for _ in range(n)]
        for h in hubs:
            await until(lambda h=h: ready(h))  # type: ignore[misc]
        yield hubs


def ready(h: HubHandle) -> bool:
    assert h.hub is not None
    cluster = h.hub.hub.cluster
    return cluster is None or bool(cluster.ready)
