"""Binary frames for serial devices with ``framing: binary``: a fixed layout of constant bytes, param
fields, an optional length field and a checksum, compiled once at load (like the text templates) into
an encoder (rule actions) or a decoder (telemetry), and a stream parser that finds frames in a byte
stream. Pure: bytes and dicts in and out.

Contract:
- ``FrameSpec`` is what the config holds (``bridge.config.frames`` reads it from YAML with file:line
  errors). ``FrameEncoder(spec, params)`` / ``FrameDecoder(spec)`` compile it or raise ``FrameError``.
- ``FrameEncoder.encode(values)`` returns the frame's bytes, or raises ``FillError`` when a value does
  not fit its field: an int outside the field's range, a non-integer for an integer field, a float that
  float32 cannot hold. Nothing is ever truncated, wrapped or clamped here.
- ``FrameStream(decoders).feed(data)`` returns ``(decoder index, {name: value})`` for every whole frame
  with a good checksum, in order. It resynchronises after garbage by sliding one byte at a time; its
  buffer never holds more than the longest frame. Counters: ``frames``, ``skipped`` (bytes that started
  no frame), ``bad_checksum`` (frames whose constant bytes matched but whose checksum did not; a frame
  without constant bytes cannot be told from noise, so its failures count only as skipped bytes) and
  ``bad_values`` (a float32 field holding NaN or infinity: the frame is dropped).

Layout: fields in order, each ``u8 s8 u16 s16 u32 s32 f32`` in the frame's byte order (a ``le``/``be``
suffix overrides it per field). The length field holds the number of bytes after it up to the checksum,
plus ``adjust``. The checksum covers ``prefix`` (bytes that are not on the wire, e.g. the request a reply
answers) followed by the frame from byte ``skip`` up to the checksum.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping

from bridge.core.engine.templates import FillError
from bridge.core.model import Checksum, FrameField, FrameSpec

__all__ = ["CHECKSUMS", "FIELD_TYPES", "Checksum", "FrameDecoder", "FrameEncoder", "FrameError", "FrameField",
           "FrameSpec", "FrameStream", "checksum", "crc8", "crc16_xmodem"]

#: type -> (struct code, low, high); f32's bounds are float32's largest finite magnitude.
FIELD_TYPES: dict[str, tuple[str, float, float]] = {
    "u8": ("B", 0, 0xFF), "s8": ("b", -0x80, 0x7F),
    "u16": ("H", 0, 0xFFFF), "s16": ("h", -0x8000, 0x7FFF),
    "u32": ("I", 0, 0xFFFFFFFF), "s32": ("i", -0x80000000, 0x7FFFFFFF),
    "f32": ("f", -3.4028234663852886e38, 3.4028234663852886e38),
}


def _size(f: FrameField) -> int:
    return struct.calcsize(FIELD_TYPES[f.type][0])


class FrameError(ValueError):
    """A frame spec that cannot be compiled (a config error)."""


# ---------------------------------------------------------------- checksums


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


def _crc8_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & 0x80 else crc << 1
        table.append(crc & 0xFF)
    return tuple(table)


_CRC16 = _crc16_table()
_CRC8 = _crc8_table(0x07)
_CRC8_DVB_S2 = _crc8_table(0xD5)


def crc16_xmodem(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0, not reflected): RoboClaw's "CRC16"."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
    return crc


def crc8(data: bytes | bytearray | memoryview, table: tuple[int, ...] = _CRC8) -> int:
    """CRC-8 (poly 0x07, init 0, not reflected; CRC-8/SMBUS)."""
    crc = 0
    for b in data:
        crc = table[crc ^ b]
    return crc


def _crc8_dvb_s2(data: bytes | bytearray | memoryview) -> int:
    return crc8(data, _CRC8_DVB_S2)


#: kind -> (size in bytes, function). ``sum7`` is the sum masked to 7 bits (RoboClaw's older checksum).
CHECKSUMS: dict[str, tuple[int, Callable[[bytes | bytearray | memoryview], int]]] = {
    "none": (0, lambda _d: 0),
    "crc16-xmodem": (2, crc16_xmodem),
    "crc8": (1, crc8),
    "crc8-dvb-s2": (1, _crc8_dvb_s2),
    "sum8": (1, lambda d: sum(d) & 0xFF),
    "sum7": (1, lambda d: sum(d) & 0x7F),
    "xor8": (1, lambda d: _xor(d)),
}


def _xor(data: bytes | bytearray | memoryview) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def checksum(kind: str, data: bytes | bytearray | memoryview) -> int:
    return CHECKSUMS[kind][1](data)


# ---------------------------------------------------------------- compiling


def _code(f: FrameField) -> str:
    return (">" if f.byte_order == "big" else "<") + FIELD_TYPES[f.type][0]


def _check_value(f: FrameField, value: float, what: str) -> None:
    low, high = FIELD_TYPES[f.type][1:]
    if f.type != "f32" and (not float(value).is_integer()):
        raise FrameError(f"{what} {value!r} is not an integer (field type {f.type})")
    if not low <= value <= high:
        raise FrameError(f"{what} {value!r} does not fit {f.type} [{_num(low)}, {_num(high)}]")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e20 else f"{x:g}"


class _Layout:
    """Sizes, the fixed bytes (constants and the length field) and the checksum of one spec."""

    def __init__(self, spec: FrameSpec) -> None:
        if not spec.fields:
            raise FrameError("a frame needs at least one field")
        for f in spec.fields:
            if f.type not in FIELD_TYPES:
                raise FrameError(f"unknown field type {f.type!r} (types: {', '.join(FIELD_TYPES)})")
            roles = (f.const is not None) + (f.param is not None) + (f.name is not None) + f.length
            if roles != 1:
                raise FrameError("each field is exactly one of a constant, a param, a name or the length")
        cs = spec.checksum
        if cs.kind not in CHECKSUMS:
            raise FrameError(f"unknown checksum {cs.kind!r} (checksums: {', '.join(CHECKSUMS)})")
        lengths = [f for f in spec.fields if f.length]
        if len(lengths) > 1:
            raise FrameError("a frame has at most one length field")
        self.spec = spec
        self.body_size = sum(_size(f) for f in spec.fields)
        self.cs_size, self.cs_fn = CHECKSUMS[cs.kind]
        self.size = self.body_size + self.cs_size
        if not 0 <= cs.skip < self.body_size:
            raise FrameError(f"checksum skip {cs.skip} must be less than the {self.body_size} bytes it "
                             f"would cover")
        if cs.kind == "none" and (cs.skip or cs.prefix):
            raise FrameError("skip and prefix need a checksum")
        self.cs_code = ">H" if cs.byte_order == "big" else "<H"
        self.fixed: list[tuple[int, bytes]] = []    # (offset, bytes) known at compile time
        offset = 0
        for f in spec.fields:
            if f.length:
                if f.type == "f32":
                    raise FrameError("the length field must be an integer type")
                value = self.body_size - offset - _size(f) + f.adjust
                _check_value(f, value, "the length")
                self.fixed.append((offset, struct.pack(_code(f), value)))
            elif f.const is not None:
                _check_value(f, f.const, "constant")
                const = f.const if f.type == "f32" else int(f.const)
                self.fixed.append((offset, struct.pack(_code(f), const)))
            offset += _size(f)

    def seal(self, body: bytes) -> bytes:
        """Append the checksum to ``body``."""
        if not self.cs_size:
            return body
        cs = self.spec.checksum
        value = self.cs_fn(cs.prefix + body[cs.skip:])
        return body + (struct.pack(self.cs_code, value) if self.cs_size == 2 else bytes((value,)))


class FrameEncoder:
    """A compiled action frame. ``params``: the declared params by name -> (type, min, max), used to
    refuse at load a param that cannot fit its field (a float for an integer field, a declared range
    wider than the field)."""

    __slots__ = ("_layout", "_parts", "fields")

    def __init__(self, spec: FrameSpec,
                 params: Mapping[str, tuple[str, float | None, float | None]] | None = None) -> None:
        self._layout = _Layout(spec)
        params = params or {}
        parts: list[tuple[bytes | None, str, FrameField]] = []
        fixed = dict(self._layout.fixed)
        offset = 0
        for f in spec.fields:
            offset += _size(f)
            if f.name is not None or f.scale is not None:
                raise FrameError("an action frame has no named (telemetry) fields; fill it from params")
            if f.param is None:
                parts.append((fixed[offset - _size(f)], "", f))
                continue
            if f.param not in params:
                raise FrameError(f"{f.param!r} is not a declared param (declared: "
                                 f"{', '.join(params) or 'none'})")
            ptype, low, high = params[f.param]
            if ptype == "string":
                raise FrameError(f"param {f.param!r} is a string; a frame field holds numbers")
            if ptype == "float" and f.type != "f32":
                raise FrameError(f"param {f.param!r} is a float but its field is {f.type}: declare it int "
                                 f"(a value is never truncated to fit)")
            for bound in (low, high):
                if bound is not None:
                    _check_value(f, bound, f"the declared range of {f.param!r}: bound")
            parts.append((None, f.param, f))
        self._parts = tuple(parts)
        self.fields = frozenset(f.param for f in spec.fields if f.param is not None)

    @property
    def size(self) -> int:
        return self._layout.size

    def encode(self, values: Mapping[str, object]) -> bytes:
        out = bytearray()
        for fixed, name, f in self._parts:
            if fixed is not None:
                out += fixed
                continue
            try:
                value = values[name]
            except KeyError:
                raise FillError(f"param {name!r} has no value and no default") from None
            out += _pack(f, name, value)
        return self._layout.seal(bytes(out))


def _pack(f: FrameField, name: str, value: object) -> bytes:
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float):
        raise FillError(f"{name}={value!r} is not a number")
    low, high = FIELD_TYPES[f.type][1:]
    if f.type == "f32":
        if not math.isfinite(value) or not low <= value <= high:
            raise FillError(f"{name}={value!r} does not fit f32")
    elif not isinstance(value, int):
        raise FillError(f"{name}={value!r} is not an integer (field {f.type})")
    elif not low <= value <= high:
        raise FillError(f"{name}={value} does not fit {f.type} [{_num(low)}, {_num(high)}]")
    return struct.pack(_code(f), value)


NEED_MORE = object()
NO_MATCH = object()
BAD_CHECKSUM = object()


class FrameDecoder:
    """A compiled telemetry frame: ``match(buf, start)`` -> values dict, or one of the sentinels
    NEED_MORE (the bytes so far fit; wait), NO_MATCH (a fixed byte differs), BAD_CHECKSUM."""

    __slots__ = ("_layout", "_named", "has_constants", "size")

    def __init__(self, spec: FrameSpec) -> None:
        self._layout = _Layout(spec)
        named: list[tuple[int, struct.Struct, str, float | None]] = []
        offset = 0
        for f in spec.fields:
            if f.param is not None:
                raise FrameError("a telemetry frame has no param fields; name each value (name: volts)")
            if f.name is not None:
                named.append((offset, struct.Struct(_code(f)), f.name, f.scale))
            offset += _size(f)
        if len({n for _, _, n, _ in named}) != len(named):
            raise FrameError("two fields of a telemetry frame have the same name")
        self._named = tuple(named)
        self.size = self._layout.size
        self.has_constants = bool(self._layout.fixed)

    def match(self, buf: bytearray, start: int) -> object:
        avail = len(buf) - start
        for offset, fixed in self._layout.fixed:
            n = min(len(fixed), avail - offset)
            if n <= 0:
                break
            if buf[start + offset:start + offset + n] != fixed[:n]:
                return NO_MATCH
        if avail < self.size:
            return NEED_MORE
        layout = self._layout
        frame = bytes(buf[start:start + self.size])
        if layout.cs_size and layout.seal(frame[:layout.body_size]) != frame:
            return BAD_CHECKSUM
        values: dict[str, int | float] = {}
        for offset, st, name, scale in self._named:
            (value,) = st.unpack_from(frame, offset)
            if scale is not None:     # 12 significant digits: 117 * 0.1 is 11.7, not 11.700000000000001
                value = float(f"{value * scale:.12g}")
            values[name] = value
        return values


class FrameStream:
    """Finds the frames of several decoders in one byte stream (one device's telemetry)."""

    __slots__ = ("_buf", "_decoders", "bad_checksum", "bad_values", "frames", "skipped")

    def __init__(self, decoders: list[FrameDecoder]) -> None:
        self._decoders = decoders
        self._buf = bytearray()
        self.frames = 0
        self.skipped = 0
        self.bad_checksum = 0
        self.bad_values = 0

    def add(self, decoder: FrameDecoder) -> None:
        self._decoders.append(decoder)

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[tuple[int, dict[str, int | float]]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, dict[str, int | float]]] = []
        i = 0
        while i < len(buf):
            waiting = bad = False
            found: tuple[int, dict[str, int | float]] | None = None
            for index, decoder in enumerate(self._decoders):
                result = decoder.match(buf, i)
                if result is NEED_MORE:
                    waiting = True
                elif result is BAD_CHECKSUM:
                    bad = bad or decoder.has_constants
                elif isinstance(result, dict):
                    found = (index, result)
                    break
            if found is not None:
                i += self._decoders[found[0]].size
                if all(math.isfinite(v) for v in found[1].values()):
                    self.frames += 1
                    out.append(found)
                else:
                    self.bad_values += 1
                continue
            if waiting:
                break
            self.bad_checksum += bad
            self.skipped += 1
            i += 1
        del buf[:i]
        return out
