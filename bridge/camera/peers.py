"""The aiortc side of the camera: one RTCPeerConnection per stream, all fed by one `Fanout`.

Everything the peer connections do is reported through ``report(kind, stream, detail)``: "offer"
(the local SDP, every candidate inside), "connected", "failed" (a reason), "alive" (a new RTCP report
from the viewer), "source_ended". The daemon hands those to `bridge.core.camera.viewers`, which decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import h264, vpx
from aiortc.sdp import candidate_from_sdp

from bridge.camera import vp8
from bridge.camera.source import Fanout, ViewerTrack, open_source
from bridge.config.camera import CameraConfig
from bridge.core.camera.signals import Candidate

log = logging.getLogger("bridge.camera")
Report = Callable[[str, str, Any], None]


def _apply_bitrate(bitrate_bps: int) -> None:
    """aiortc has no API for a sender's bitrate: its encoders start at the module's DEFAULT_BITRATE
    and follow the viewer's bandwidth estimate (REMB) within MIN..MAX_BITRATE. Setting the three
    bounds the stream at the configured rate (aiortc pinned in pyproject.toml for this reason)."""
    for module in (vpx, h264):
        setattr(module, "DEFAULT_BITRATE", bitrate_bps)  # noqa: B010
        setattr(module, "MAX_BITRATE", bitrate_bps)  # noqa: B010
        setattr(module, "MIN_BITRATE", min(getattr(module, "MIN_BITRATE"), bitrate_bps))  # noqa: B009, B010


class _Peer:
    def __init__(self, pc: RTCPeerConnection, track: ViewerTrack) -> None:
        self.pc = pc
        self.track = track
        self.sender: RTCRtpSender | None = None
        self.last_report: object = None
        self.tasks: set[asyncio.Task[None]] = set()


class Peers:
    def __init__(self, config: CameraConfig, hub_time_ms: Callable[[], float], report: Report) -> None:
        self.config = config
        self._report = report
        self._peers: dict[str, _Peer] = {}
        self._closing: set[asyncio.Task[None]] = set()
        cam = config.camera
        self.fanout = Fanout(lambda: open_source(cam, hub_time_ms),
                             lambda reason: report("source_ended", "", reason))
        self._ice = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                     for s in config.ice_servers]
        _apply_bitrate(cam.bitrate_kbps * 1000)
        vp8.install()

    def _task(self, stream: str, coro: Coroutine[Any, Any, None]) -> None:
        peer = self._peers.get(stream)
        if peer is None:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)

    def open(self, stream: str) -> None:
        try:
            track = self.fanout.subscribe()
        except Exception as exc:  # the device is missing, busy, or not a camera
            self._report("failed", stream, f"cannot open the camera: {exc}")
            return
        # iceServers=[] (not None): aiortc's default would ask a public STUN server on every offer.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice))
        self._peers[stream] = _Peer(pc, track)

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                self._report("connected", stream, None)
            elif pc.connectionState == "failed" and stream in self._peers:
                self._report("failed", stream, "the peer connection failed (ICE or DTLS)")

        self._task(stream, self._offer(stream))

    async def _offer(self, stream: str) -> None:
        peer = self._peers[stream]
        try:
            transceiver = peer.pc.addTransceiver(peer.track, direction="sendonly")
            mime = f"video/{self.config.camera.codec}"
            codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs
                      if c.mimeType.lower() in (mime, "video/rtx")]
            transceiver.setCodecPreferences(codecs)
            peer.sender = transceiver.sender
            await peer.pc.setLocalDescription(await peer.pc.createOffer())
        except Exception as exc:
            self._report("failed", stream, f"cannot make an offer: {exc}")
            return
        self._report("offer", stream, peer.pc.localDescription.sdp)

    def answer(self, stream: str, sdp: str) -> None:
        self._task(stream, self._answer(stream, sdp))

    async def _answer(self, stream: str, sdp: str) -> None:
        peer = self._peers[stream]
        try:
            await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            self._report("failed", stream, f"bad answer: {type(exc).__name__}: {exc}")

    def candidate(self, stream: str, cand: Candidate) -> None:
        self._task(stream, self._candidate(stream, cand))

    async def _candidate(self, stream: str, cand: Candidate) -> None:
        peer = self._peers[stream]
        try:
            if cand.candidate is None:
                await peer.pc.addIceCandidate(None)
                return
            ice = candidate_from_sdp(cand.candidate.split(":", 1)[1])
            ice.sdpMid = cand.sdp_mid
            ice.sdpMLineIndex = cand.sdp_mline_index
            await peer.pc.addIceCandidate(ice)
        except Exception as exc:   # one bad candidate is not fatal: others may work
            log.info("camera: stream %s: candidate ignored: %s", stream, exc)

    def close_stream(self, stream: str) -> None:
        peer = self._peers.pop(stream, None)
        if peer is None:
            return
        for task in peer.tasks:
            task.cancel()
        peer.track.stop()
        # Kept until done: the loop holds tasks only weakly, and a closing RTCPeerConnection owns sockets.
        task = asyncio.get_running_loop().create_task(peer.pc.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def check_alive(self) -> None:
        """Report "alive" for each stream whose viewer sent an RTCP receiver report since last time."""
        for stream, peer in list(self._peers.items()):
            if peer.sender is None:
                continue
            with contextlib.suppress(Exception):
                stats = await peer.sender.getStats()
                stamp = max((s.timestamp for s in stats.values() if s.type == "remote-inbound-rtp"),
                            default=None)
                if stamp is not None and stamp != peer.last_report:
                    peer.last_report = stamp
                    self._report("alive", stream, None)

    async def close(self) -> None:
        peers = list(self._peers.values())
        self._peers.clear()
        for peer in peers:
            for task in peer.tasks:
                task.cancel()
            peer.track.stop()
        await asyncio.gather(*(p.pc.close() for p in peers), *self._closing, return_exceptions=True)
        await self.fanout.close()
