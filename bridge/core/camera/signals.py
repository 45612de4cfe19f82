"""The camera's signal types (docs/protocol.md, "Camera"): parsing what viewers send, building what the
camera sends, and splitting a session description that does not fit in one signal.

Every camera signal is a JSON object in the signal's data, sent targeted with ``retry: false`` (a
WebRTC offer is worthless after a reconnection: the viewer asks again). Viewer -> camera:

- ``camera.watch`` ``{"camera"?: NAME}``: start a stream to the sender (replaces its previous one);
- ``camera.answer`` ``{"stream", "sdp", "part", "parts"}``: the viewer's SDP answer, in parts;
- ``camera.candidate`` ``{"stream", "candidate": str|null, "sdpMid"?, "sdpMLineIndex"?}``;
- ``camera.stop`` ``{"stream"}``; ``camera.describe`` ``{}`` (asks for ``camera.status``).

Camera -> viewer: ``camera.offer`` (the camera's SDP offer with every candidate inside, in parts;
part 0 carries ``info``), ``camera.ended`` ``{"stream", "reason"}``, ``camera.refused``
``{"code", "message", "stream"?}`` and ``camera.status``.

Contract: :func:`parse` never raises on anything a peer can send; it returns a typed message or a
:class:`Bad` that says what was wrong, worded for the person writing a client.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bridge.core.signal import BAD_REQUEST, MAX_DATA_BYTES

WATCH = "camera.watch"
OFFER = "camera.offer"
ANSWER = "camera.answer"
CANDIDATE = "camera.candidate"
STOP = "camera.stop"
DESCRIBE = "camera.describe"
ENDED = "camera.ended"
REFUSED = "camera.refused"
STATUS = "camera.status"
#: The types a camera listens to; any other ``camera.*`` type is answered with a 400 refusal.
VIEWER_TYPES = frozenset({WATCH, ANSWER, CANDIDATE, STOP, DESCRIBE})

#: SDP characters per part. SDP is ASCII; JSON escapes CR and LF as two characters each, so a part's
#: data is at most about twice this plus the envelope, well under the 8 KB limit.
PART_CHARS = 3500
#: At most this many parts per description (28 KB of SDP: ten times what a browser writes).
MAX_PARTS = 8
MAX_SDP_CHARS = PART_CHARS * MAX_PARTS
#: A candidate line is ~100-250 characters; anything much longer is not one.
MAX_CANDIDATE_CHARS = 1024
_STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Watch:
    camera: str | None


@dataclass(frozen=True, slots=True)
class AnswerPart:
    stream: str
    sdp: str
    part: int
    parts: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A trickled ICE candidate of the viewer; ``candidate`` None: the viewer has gathered all."""

    stream: str
    candidate: str | None
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True, slots=True)
class Stop:
    stream: str


@dataclass(frozen=True, slots=True)
class Describe:
    pass


@dataclass(frozen=True, slots=True)
class Bad:
    """A camera signal the camera cannot use; ``message`` goes back in ``camera.refused``."""

    message: str
    code: int = BAD_REQUEST


ViewerMessage = Watch | AnswerPart | Candidate | Stop | Describe


def parse(type_: str, data: str) -> ViewerMessage | Bad:
    """The message a viewer sent with a signal of type ``type_`` (one of VIEWER_TYPES)."""
    if type_ not in VIEWER_TYPES:
        return Bad(f"unknown camera signal type {type_!r}; a camera understands "
                   f"{', '.join(sorted(VIEWER_TYPES))}")
    try:
        obj = json.loads(data) if data.strip() else {}
    except (ValueError, RecursionError):
        return Bad(f"{type_}: data must be a JSON object")
    if not isinstance(obj, dict):
        return Bad(f"{type_}: data must be a JSON object")
    if type_ == DESCRIBE:
        return Describe()
    if type_ == WATCH:
        camera = obj.get("camera")
        if camera is not None and (not isinstance(camera, str) or not _NAME.fullmatch(camera)):
            return Bad(f"{WATCH}: camera must be a camera name (1-64 of A-Z a-z 0-9 _ . -)")
        return Watch(camera)
    stream = obj.get("stream")
    if not isinstance(stream, str) or not _STREAM_ID.fullmatch(stream):
        return Bad(f"{type_}: stream must be the stream id of the camera's offer")
    if type_ == STOP:
        return Stop(stream)
    if type_ == ANSWER:
        return _answer(obj, stream)
    return _candidate(obj, stream)


def _answer(obj: dict[str, Any], stream: str) -> AnswerPart | Bad:
    sdp, part, parts = obj.get("sdp"), obj.get("part", 0), obj.get("parts", 1)
    if not isinstance(sdp, str) or not sdp or len(sdp) > PART_CHARS:
        return Bad(f"{ANSWER}: sdp must be a non-empty string of at most {PART_CHARS} characters "
                   f"(split a longer description into parts)")
    if not _small_int(parts) or not 1 <= parts <= MAX_PARTS:
        return Bad(f"{ANSWER}: parts must be an integer from 1 to {MAX_PARTS}")
    if not _small_int(part) or not 0 <= part < parts:
        return Bad(f"{ANSWER}: part must be an integer from 0 to parts - 1")
    return AnswerPart(stream, sdp, part, parts)


def _candidate(obj: dict[str, Any], stream: str) -> Candidate | Bad:
    cand, mid, index = obj.get("candidate"), obj.get("sdpMid"), obj.get("sdpMLineIndex")
    if cand is not None and (not isinstance(cand, str) or len(cand) > MAX_CANDIDATE_CHARS
                             or not cand.startswith("candidate:")):
        return Bad(f"{CANDIDATE}: candidate must be null or an SDP 'candidate:...' line of at most "
                   f"{MAX_CANDIDATE_CHARS} characters")
    if cand == "candidate:":
        cand = None
    if mid is not None and (not isinstance(mid, str) or len(mid) > 32):
        return Bad(f"{CANDIDATE}: sdpMid must be null or a short string")
    if index is not None and (not _small_int(index) or not 0 <= index < 64):
        return Bad(f"{CANDIDATE}: sdpMLineIndex must be null or an integer from 0 to 63")
    return Candidate(stream, cand, mid, index)


def _small_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---------------------------------------------------------------- what the camera sends


def offer_parts(stream: str, sdp: str, info: dict[str, Any]) -> list[str]:
    """The data of each ``camera.offer`` signal for ``sdp``, in order; part 0 carries ``info``.
    Raises ValueError when the description would need more than MAX_PARTS parts."""
    chunks = [sdp[i:i + PART_CHARS] for i in range(0, len(sdp), PART_CHARS)] or [""]
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"session description of {len(sdp)} characters needs more than {MAX_PARTS} parts")
    out = []
    for i, chunk in enumerate(chunks):
        obj: dict[str, Any] = {"stream": stream, "sdp": chunk, "part": i, "parts": len(chunks)}
        if i == 0:
            obj["info"] = info
        data = json.dumps(obj, separators=(",", ":"))
        assert len(data.encode()) <= MAX_DATA_BYTES, "PART_CHARS leaves room for JSON escapes"
        out.append(data)
    return out


def ended(stream: str, reason: str) -> str:
    return json.dumps({"stream": stream, "reason": reason}, separators=(",", ":"))


def refused(code: int, message: str, stream: str | None = None) -> str:
    obj: dict[str, Any] = {"code": code, "message": message}
    if stream is not None:
        obj["stream"] = stream
    return json.dumps(obj, separators=(",", ":"))


class Reassembly:
    """The parts of one description as they arrive (in any order, each at most once).

    ``add`` returns the whole text once every part is there, None before; raises ValueError for a
    part that contradicts the earlier ones (another ``parts`` count, or a part given twice)."""

    def __init__(self) -> None:
        self._parts: dict[int, str] = {}
        self._count: int | None = None

    def add(self, part: AnswerPart) -> str | None:
        if self._count is not None and part.parts != self._count:
            raise ValueError(f"part {part.part} says {part.parts} parts, an earlier one said {self._count}")
        if part.part in self._parts:
            raise ValueError(f"part {part.part} was sent twice")
        self._count = part.parts
        self._parts[part.part] = part.sdp
        if len(self._parts) < part.parts:
            return None
        return "".join(self._parts[i] for i in range(part.parts))
