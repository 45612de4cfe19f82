"""``session.embedded``: the bridge daemon hosts its session itself (one hop for an operator on the LAN).

The hub runs in the bridge's process and event loop: :func:`bridge.hub.run.start_hub` with the
memory engine, serving the same WebSocket protocol, REST API and console as ``sigbridge hub``, with the
hub's API credentials in ``state_dir`` (so ``sigbridge token --state-dir DIR`` mints operator tokens
for it). The bridge itself joins as a member without a WebSocket (:class:`bridge.hub.local.LocalClient`):
admitted by a token it mints with those credentials (role publisher, connection data ``bridge``),
through the same admission as any member, so consoles trust it and every safety behaviour of the
engine (on_disconnect when the operator leaves, the lease, the stale guard, watchdogs) is the one a
remote bridge has. Its signals' age is read on the hub's own clock.

Shutdown (SIGTERM): the daemon's order is kept - on_shutdown actions, links sealed, drained - then the
bridge leaves its session (the operators see it go) and only then the hub closes its WebSockets
(code 1001) and stops serving.

Imported only when the config has ``session.embedded`` (the hub's aiohttp stays out of a remote
bridge's memory).
"""

from __future__ import annotations

import logging
import time

from bridge.config.hub import HubConfig, HubConfigError, load_hub_config
from bridge.core.model import EmbeddedSession, SessionSettings
from bridge.core.signal import PUBLISHER
from bridge.core.tokens import mint_client_token
from bridge.daemon.port import SessionPort
from bridge.hub.http import exposure_warnings
from bridge.hub.local import LocalClient
from bridge.hub.run import RunningHub, start_hub

log = logging.getLogger(__name__)

#: The bridge's own token is minted afresh for every join; this long is plenty for one admission.
OWN_TOKEN_TTL_S = 300


def hub_config(e: EmbeddedSession) -> HubConfig:
    """The embedded hub's config: ``hub_config`` (if any) with ``listen`` and ``state_dir`` applied,
    the credentials from the state dir (created there on first start). Raises HubConfigError."""
    return load_hub_config(e.hub_config, listen=e.listen, state_dir=e.state_dir)


class EmbeddedHub:
    """The hub this bridge hosts; :meth:`client` makes the bridge's own membership of it."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.running: RunningHub | None = None

    async def start(self) -> RunningHub:
        """Bind and serve (OSError: address in use, no permission, TLS files)."""
        self.running = await start_hub(self.config)
        return self.running

    def warnings(self) -> list[str]:
        """What ``sigbridge hub`` warns about at start for the same config (a listener beyond loopback
        with any origin allowed: the session is then only as private as its tokens)."""
        return exposure_warnings(self.config)

    def client(self, s: SessionSettings) -> SessionPort:
        running = self.running
        assert running is not None, "start() first"
        cfg = self.config
        token = mint_client_token(api_key=cfg.api_key, api_secret=cfg.api_secret, session_id=s.session_id,
                                  role=PUBLISHER, data="bridge", ttl_s=OWN_TOKEN_TTL_S, now=time.time())
        return LocalClient(running.state, s.session_id, token, f"{running.url}/v1/session/{s.session_id} "
                           "(embedded)")

    async def close(self) -> None:
        if self.running is not None:
            await self.running.close()
            self.running = None


__all__ = ["EmbeddedHub", "HubConfigError", "hub_config"]
