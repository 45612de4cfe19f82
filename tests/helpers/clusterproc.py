"""``sigbridge hub`` processes sharing one Redis (hub.yaml ``cluster: {engine: redis, url: [...]}``),
with the same credentials, each ready (``/healthz`` 200: its store started) when handed out."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers.hub import HubHandle, hub_process, test_credentials


@contextlib.contextmanager
def cluster_hubs(urls: tuple[str, ...], n: int, *, grace_s: float = 30.0, lease_ms: int = 1000,
                 extra: str = "") -> Iterator[list[HubHandle]]:
    key, secret = test_credentials()
    env = dict(os.environ, SIGBRIDGE_API_KEY=key, SIGBRIDGE_API_SECRET=secret)
    with tempfile.TemporaryDirectory(prefix="sigbridge-hubs-") as tmp:
        cfg = Path(tmp) / "hub.yaml"
        url_list = ", ".join(f'"{u}"' for u in urls)
        cfg.write_text(f"reconnect_grace_s: {grace_s}\nheartbeat_s: 0.5\n"
                       f"cluster: {{engine: redis, url: [{url_list}], lease_ms: {lease_ms}}}\n{extra}")
        managers = [hub_process("-c", str(cfg), "--state-dir", tmp, env=env) for _ in range(n)]
        with contextlib.ExitStack() as stack:
            # Started side by side (each takes a second or more to import and join Redis).
            with ThreadPoolExecutor(n) as pool:
                futures = [pool.submit(m.__enter__) for m in managers]
                for m, f in zip(managers, futures, strict=True):
                    if f.exception() is None:  # waits for it; only a started hub is stopped
                        stack.push(m.__exit__)
                handles = [f.result() for f in futures]
            yield handles
