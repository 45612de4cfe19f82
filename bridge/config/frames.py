"""The ``frame:`` key of the bridge config: a binary frame for a serial device with ``framing: binary``,
in a rule's action, a safe action, a heartbeat or a telemetry stream (docs/config.md, "Binary frames").

::

    frame:
      byte_order: big                       # the default; a field's type may say u16le / s32be
      fields: [0x80, 32, {param: duty, type: s16}]
      checksum: crc16-xmodem                # or {type: crc16-xmodem, byte_order, skip, prefix: [..]}

A field is an integer 0-255 (a constant byte) or a mapping with ``type`` and exactly one of ``const``,
``param`` (actions), ``name`` (telemetry, with an optional ``scale``) or ``length: TYPE`` (the byte
count after it up to the checksum, plus ``adjust``). Each field's problems are reported at its own line;
what only the whole frame can tell (a param that cannot fit its field, a length that does not fit) at
the ``frame:`` line, through `bridge.core.engine.frames` compiling it exactly as the engine will.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from bridge.config import keys
from bridge.config.schema import mapping
from bridge.config.tree import Reader, join, suggest
from bridge.core.engine.frames import CHECKSUMS, FIELD_TYPES, FrameDecoder, FrameEncoder, FrameError
from bridge.core.model import Checksum, FrameField, FrameSpec, ParamSpec

Use = Literal["action", "telemetry", "constant"]
_TYPE = re.compile(r"(u8|s8|u16|s16|u32|s32|f32)(le|be)?")
_ROLE_KEYS = ("const", "param", "name", "length")
_ORDERS = {"big": "big", "little": "little"}


def read_frame(r: Reader, node: yaml.Node, path: str, use: Use,
               params: Mapping[str, ParamSpec | None] | None = None) -> FrameSpec | None:
    """Read and compile one ``frame:``; None (with every problem recorded) when it is unusable.
    ``use``: "action" (param fields from ``params``), "telemetry" (named fields) or "constant" (a
    heartbeat or a safe action: constants only)."""
    m = mapping(r, node, path, keys.FRAME)
    if m is None:
        return None
    before = len(r.issues)
    order = _order(r, m["byte_order"], join(path, "byte_order")) if "byte_order" in m else "big"
    items = r.sequence(m["fields"], join(path, "fields")) if "fields" in m else None
    fields = [_field(r, n, join(join(path, "fields"), i), order or "big", use, params)
              for i, n in enumerate(items or [])]
    if items == [] and isinstance(m.get("fields"), yaml.SequenceNode):
        r.error(m["fields"], join(path, "fields"), "list at least one field")
    cs = _checksum(r, m["checksum"], join(path, "checksum")) if "checksum" in m else Checksum()
    if len(r.issues) > before or order is None or cs is None or None in fields:
        return None
    spec = FrameSpec(fields=tuple(f for f in fields if f is not None), checksum=cs)
    try:
        if use == "telemetry":
            FrameDecoder(spec)
        else:
            declared = {name: (p.type, p.min, p.max) for name, p in (params or {}).items() if p is not None}
            FrameEncoder(spec, declared)
    except FrameError as exc:
        r.error(node, path, str(exc))
        return None
    return spec


def _order(r: Reader, node: yaml.Node, path: str) -> Literal["big", "little"] | None:
    text = r.string(node, path)
    if text is None:
        return None
    if text not in _ORDERS:
        r.error(node, path, f"expected big or little, got {text!r}")
        return None
    return "big" if text == "big" else "little"


def _type(r: Reader, node: yaml.Node, path: str, order: str) -> tuple[str, str] | None:
    text = r.string(node, path)
    if text is None:
        return None
    m = _TYPE.fullmatch(text)
    if m is None:
        r.error(node, path, f"unknown field type {text!r}{suggest(text, FIELD_TYPES)} (types: "
                            f"{', '.join(FIELD_TYPES)}, optionally with le or be: u16le)")
        return None
    return m[1], {"le": "little", "be": "big"}.get(m[2] or "", order)


def _field(r: Reader, node: yaml.Node, path: str, order: str, use: Use,
           params: Mapping[str, ParamSpec | None] | None) -> FrameField | None:
    if isinstance(node, yaml.ScalarNode):          # a bare number: one constant byte
        value = r.integer(node, path, minimum=0, maximum=255)
        return None if value is None else FrameField(type="u8", const=value)
    m = mapping(r, node, path, keys.FRAME_FIELD)
    if m is None:
        return None
    roles = [k for k in _ROLE_KEYS if k in m]
    if len(roles) != 1:
        r.error(node, path, "a field is a byte (0-255) or a mapping with exactly one of const, param, "
                            "name or length")
        return None
    role = roles[0]
    allowed = {"action": ("const", "param", "length"), "telemetry": ("const", "name", "length"),
               "constant": ("const", "length")}[use]
    if role not in allowed:
        why = {"param": "only a rule's action has params", "name": "only telemetry frames name fields"}
        r.error(m[role], join(path, role), f"{role!r} does not apply here ({why.get(role, '')})")
        return None
    kw: dict[str, Any] = {}
    if role == "length":
        typed = _type(r, m["length"], join(path, "length"), order)
        if "type" in m:
            r.error(m["type"], join(path, "type"), "a length field gives its type as length: TYPE")
        if "adjust" in m:
            kw["adjust"] = r.integer(m["adjust"], join(path, "adjust"))
        kw["length"] = True
    else:
        if "type" not in m:
            r.error(node, path, "missing required key 'type'")
            return None
        typed = _type(r, m["type"], join(path, "type"), order)
        if "adjust" in m:
            r.error(m["adjust"], join(path, "adjust"), "adjust applies to the length field only")
    if "scale" in m:
        if role != "name":
            r.error(m["scale"], join(path, "scale"), "scale applies to named telemetry fields only")
        kw["scale"] = r.number(m["scale"], join(path, "scale"))
    if role == "const":
        kw["const"] = r.number(m["const"], join(path, "const"))
    elif role in ("param", "name"):
        text = r.string(m[role], join(path, role))
        if role == "param" and text is not None and params is not None and text not in params:
            r.error(m[role], join(path, role), f"{text!r} is not a declared param{suggest(text, params)} "
                                              f"(declared: {', '.join(params) or 'none'})")
            text = None
        kw[role] = text
    if typed is None or None in kw.values():
        return None
    field = FrameField(type=typed[0], byte_order="big" if typed[1] == "big" else "little", **kw)
    if field.const is not None:
        try:
            FrameEncoder(FrameSpec((field,)), {})
        except FrameError as exc:
            r.error(m["const"], join(path, "const"), str(exc))
            return None
    return field


def _checksum(r: Reader, node: yaml.Node, path: str) -> Checksum | None:
    if isinstance(node, yaml.ScalarNode):
        kind = r.string(node, path)
        if kind is None or not _known(r, node, path, kind):
            return None
        return Checksum(kind=kind)
    m = mapping(r, node, path, keys.CHECKSUM)
    if m is None or "type" not in m:
        return None
    kind = r.string(m["type"], join(path, "type"))
    if kind is None or not _known(r, m["type"], join(path, "type"), kind):
        return None
    kw: dict[str, Any] = {"kind": kind}
    if "byte_order" in m:
        kw["byte_order"] = _order(r, m["byte_order"], join(path, "byte_order"))
    if "skip" in m:
        kw["skip"] = r.integer(m["skip"], join(path, "skip"), minimum=0)
    if "prefix" in m:
        items = r.sequence(m["prefix"], join(path, "prefix")) or []
        values = [r.integer(n, join(join(path, "prefix"), i), minimum=0, maximum=255)
                  for i, n in enumerate(items)]
        kw["prefix"] = None if None in values else bytes(v for v in values if v is not None)
    if None in kw.values():
        return None
    return Checksum(**kw)


def _known(r: Reader, node: yaml.Node, path: str, kind: str) -> bool:
    if kind in CHECKSUMS:
        return True
    r.error(node, path, f"unknown checksum {kind!r}{suggest(kind, CHECKSUMS)} (checksums: "
                        f"{', '.join(CHECKSUMS)})")
    return False
