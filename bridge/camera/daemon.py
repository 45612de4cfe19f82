"""``sigbridge camera -c camera.yaml``: the camera daemon. It joins the session as its own connection and
streams the camera to each viewer who asks, over WebRTC (aiortc), signaled with ``camera.*`` signals.

A process of its own (and its own systemd unit), so that an encoder or camera fault never slows or
stops the bridge's control path. The signaling decisions are `bridge.core.camera.viewers`; this module
carries them out: one RTCPeerConnection per stream (the camera offers, with every candidate in the
SDP: aiortc does not trickle), the viewer's trickled candidates added as tasks (a Chromium ``.local``
candidate waits ~1 s on mDNS), and once a second the timeouts and each viewer's liveness (a new RTCP
receiver report in the sender's stats).

Exit status: 0 after SIGTERM/SIGINT (every peer connection closed, viewers told); 2 for a config
with errors (file:line); 78 when it can never work as configured (the hub refuses its token, or
aiortc is not installed); 1 when it lost the session for good (systemd restarts it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import time
from typing import Any

from bridge.adapters.systemd import Notifier, watchdog_loop
from bridge.client import SessionClient, SignalError
from bridge.config.camera import CameraConfig, load_camera_config
from bridge.config.tree import ConfigError
from bridge.core.camera import viewers as cv
from bridge.core.camera.signals import STATUS
from bridge.core.events import ConnectionDestroyed, Disconnected, Reconnected, SessionEvent, Signal
from bridge.core.signal import FORBIDDEN, UNAUTHORIZED

log = logging.getLogger("bridge.camera")
EXIT_UNUSABLE = 78
TICK_S = 0.5
_PREFIX = "camera."


def camera_main(args: argparse.Namespace) -> int:
    try:
        config = load_camera_config(args.config)
    except ConfigError as exc:
        for issue in exc.errors:
            print(issue, file=sys.stderr)
        n = len(exc.errors)
        print(f"{args.config}: {n} error{'s' if n != 1 else ''}; not starting", file=sys.stderr)
        return 2
    try:
        import aiortc  # noqa: F401
    except ImportError:
        print("sigbridge camera: aiortc is not installed; install the camera extra: "
              "pip install 'signal-bridge[camera]'", file=sys.stderr)
        return EXIT_UNUSABLE
    return asyncio.run(CameraDaemon(config).run())


def _ms() -> float:
    return time.monotonic() * 1000


class CameraDaemon:
    def __init__(self, config: CameraConfig) -> None:
        from bridge.camera.peers import Peers

        self.config = config
        cam = config.camera
        self.viewers = cv.Viewers(config.viewers, {"width": cam.width, "height": cam.height,
                                                   "fps": cam.fps, "codec": cam.codec,
                                                   "source": cam.source,
                                                   # STUN only (never a TURN credential): a viewer
                                                   # behind NAT needs its public address too.
                                                   "ice_servers": [u for srv in config.ice_servers
                                                                   for u in srv.urls
                                                                   if u.startswith(("stun:", "stuns:"))]},
                                 secrets.token_hex(3) + "-")
        self.client: SessionClient | None = None
        self.peers = Peers(config, self._hub_time_ms, self._report)
        self._stop = asyncio.Event()
        self.notifier = Notifier.from_env()

    def _hub_time_ms(self) -> float:
        return self.client.hub_time_ms() if self.client is not None else time.time() * 1000

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop.set)
        s = self.config.session
        status = 0
        try:
            client = await self._join()
            if client is None:
                return EXIT_UNUSABLE
            self.client = client
            own = client.connection.id if client.connection else "?"
            print(f"sigbridge camera: READY camera {self.config.camera.name!r} "
                  f"({self.config.camera.source} {self.config.camera.width}x{self.config.camera.height}"
                  f"@{self.config.camera.fps} {self.config.camera.codec}) in session {s.session_id} "
                  f"as {own}", file=sys.stderr, flush=True)
            self.notifier.ready(f"camera {self.config.camera.name!r} in session {s.session_id}")
            watchdog = loop.create_task(watchdog_loop(self.notifier))
            lost = asyncio.Event()
            client.set_event_handler(lambda ev: self._on_event(ev, lost))
            # Consoles already in the session learn that a camera is (back) here.
            client.send_nowait(STATUS, self.viewers.status_json())
            ticker = loop.create_task(self._ticker())
            stop = loop.create_task(self._stop.wait())
            gone = loop.create_task(lost.wait())
            await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
            for t in (ticker, stop, gone, watchdog):
                t.cancel()
            self.notifier.stopping()
            if lost.is_set() and not self._stop.is_set():
                log.error("camera: lost the session for good; exiting (systemd restarts the camera)")
                status = 1
            self._carry_out(self.viewers.close_all("the camera is shutting down"))
            await self.peers.close()
            with contextlib.suppress(Exception):
                await client.disconnect()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            self.notifier.close()
        print("sigbridge camera: stopped", file=sys.stderr, flush=True)
        return status

    async def _join(self) -> SessionClient | None:
        s = self.config.session
        delay = 0.5
        while not self._stop.is_set():
            client = SessionClient(s.hub_urls, s.session_id, s.token, ping_interval_s=s.keepalive_ms / 1000,
                                   link_timeout_s=s.link_timeout_ms / 1000)
            try:
                await client.connect()
                return client
            except SignalError as exc:
                if exc.code in (UNAUTHORIZED, FORBIDDEN):
                    print(f"sigbridge camera: the hub refused the camera's token ({exc.code}: "
                          f"{exc.message}); mint a new one (sigbridge token) and restart", file=sys.stderr)
                    return None
                log.warning("camera: cannot join %s (%s); retrying", client.uri, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, 5.0)
        return None

    # ------------------------------------------------------------ session events

    def _on_event(self, event: SessionEvent, lost: asyncio.Event) -> None:
        if isinstance(event, Signal):
            if not event.type.startswith(_PREFIX) or event.from_id is None or self.client is None:
                return
            if self.client.connection is not None and event.from_id == self.client.connection.id:
                return
            sender = self.client.connections.get(event.from_id)
            role = sender.role if sender is not None else ""   # unknown sender: no role at all
            self._carry_out(self.viewers.on_signal(_ms(), event.from_id, role, event.type, event.data))
        elif isinstance(event, ConnectionDestroyed):
            self._carry_out(self.viewers.left(event.connection.id))
        elif isinstance(event, Reconnected) and self.client is not None:
            # Consoles that joined while the link was down have not heard of this camera yet.
            self.client.send_nowait(STATUS, self.viewers.status_json())
        elif isinstance(event, Disconnected):
            lost.set()

    def _report(self, kind: str, stream: str, detail: Any = None) -> None:
        """What the peer connections report: "offer" (sdp), "connected", "failed" (reason), "alive"."""
        if kind == "offer":
            self._carry_out(self.viewers.offer_ready(_ms(), stream, str(detail)))
        elif kind == "connected":
            log.info("camera: stream %s to %s is live", stream, self.viewers.viewer_of(stream))
            self._carry_out(self.viewers.connected(_ms(), stream))
        elif kind == "alive":
            self.viewers.alive(_ms(), stream)
        elif kind == "source_ended":
            self._carry_out(self.viewers.close_all(str(detail)))
        else:
            self._carry_out(self.viewers.failed(stream, str(detail)))

    def _carry_out(self, actions: list[cv.Action]) -> None:
        for action in actions:
            if isinstance(action, cv.Send):
                client = self.client
                try:
                    if client is None or not client.send_nowait(action.type, action.data, action.to):
                        log.debug("camera: %s to %s not sent (link down)", action.type, action.to)
                except SignalError as exc:
                    log.warning("camera: %s not sent: %s", action.type, exc)
            elif isinstance(action, cv.Open):
                log.info("camera: stream %s for viewer %s", action.stream, action.viewer)
                self.peers.open(action.stream)
            elif isinstance(action, cv.ApplyAnswer):
                self.peers.answer(action.stream, action.sdp)
            elif isinstance(action, cv.AddCandidate):
                self.peers.candidate(action.stream, action.candidate)
            else:
                log.info("camera: stream %s closed: %s", action.stream, action.reason)
                self.peers.close_stream(action.stream)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._carry_out(self.viewers.tick(_ms()))
            await self.peers.check_alive()
