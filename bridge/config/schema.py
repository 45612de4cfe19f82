"""The declarative config schema: every key of every config file, declared once.

A `Block` is one YAML mapping (``devices.NAME.serial``, ``session``, hub.yaml's top level ...): its
keys in order, each a `Key` with a value type (`Str`, `Int`, `Num`, `Bool`, `Choice`, or `Custom` for a
value read by hand-written code), a one-line meaning and, for a block tied to a frozen dataclass of
`bridge.core.model` (or of the hub / camera config), the default taken from that dataclass's field of
the same name, so a default is written once. From the blocks:

- the loaders take the allowed and required keys (`Block.names`, `Block.required`) and read every
  plain value (`read_fields`: type, range, choices; each problem recorded with its line, all at once);
- `bridge.config.docs` renders the key tables of docs/config.md and the JSON Schemas for editors
  (`json_schema`), and a test fails when the committed ones are stale.

What only code can tell (a template against its params, a device that must exist, a rule shadowed by
an earlier one) stays in the loaders; its key is declared here all the same (`Custom`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from bridge.config.tree import Reader, join

#: A ``${NAME}`` reference: where a number or a boolean is expected, the JSON Schema also takes one.
_ENV_STRING: dict[str, Any] = {"type": "string", "pattern": r"\$\{"}
_NO_DEFAULT = object()


@dataclass(frozen=True, slots=True)
class Str:
    """A string; a plain YAML scalar is taken as written (``id: 42`` is ``"42"``)."""

    allow_empty: bool = False
    text: str = "string"

    def read(self, r: Reader, node: yaml.Node, path: str) -> object:
        return r.string(node, path, allow_empty=self.allow_empty)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": ["string", "number", "boolean"]}
        if not self.allow_empty:
            out["minLength"] = 1
        return out


@dataclass(frozen=True, slots=True)
class Int:
    minimum: int | None = None
    maximum: int | None = None
    positive: bool = False

    @property
    def text(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"int {self.minimum}-{self.maximum}"
        low = "int > 0" if self.positive else f"int >= {self.minimum}" if self.minimum is not None else "int"
        return low if self.maximum is None else f"{low}, <= {self.maximum}"

    def read(self, r: Reader, node: yaml.Node, path: str) -> object:
        return r.integer(node, path, positive=self.positive, minimum=self.minimum, maximum=self.maximum)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.positive:
            out["exclusiveMinimum"] = 0
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return {"anyOf": [out, _ENV_STRING]}


@dataclass(frozen=True, slots=True)
class Num:
    positive: bool = False
    minimum: float | None = None

    @property
    def text(self) -> str:
        return "number > 0" if self.positive else f"number >= {self.minimum:g}" if self.minimum is not None \
            else "number"

    def read(self, r: Reader, node: yaml.Node, path: str) -> object:
        return r.number(node, path, positive=self.positive, minimum=self.minimum)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.positive:
            out["exclusiveMinimum"] = 0
        if self.minimum is not None:
            out["minimum"] = self.minimum
        return {"anyOf": [out, _ENV_STRING]}


@dataclass(frozen=True, slots=True)
class Bool:
    text: str = "bool"

    def read(self, r: Reader, node: yaml.Node, path: str) -> object:
        return r.boolean(node, path)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "boolean"}, {"enum": ["yes", "no", "on", "off"]}, _ENV_STRING]}


@dataclass(frozen=True, slots=True)
class Choice:
    options: tuple[str, ...]
    #: How the message words it: "expected text or binary" (``or``) or "expected one of vp8, h264".
    one_of: bool = False

    @property
    def text(self) -> str:
        return " or ".join(f"`{o}`" for o in self.options)

    def read(self, r: Reader, node: yaml.Node, path: str) -> object:
        value = r.string(node, path)
        if value is not None and value not in self.options:
            wanted = f"one of {', '.join(self.options)}" if self.one_of else " or ".join(self.options)
            r.error(node, path, f"expected {wanted}, got {value!r}")
            return None
        return value

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"enum": list(self.options)}, _ENV_STRING]}


@dataclass(frozen=True, slots=True)
class Custom:
    """A value read by the loader's own code; ``json`` is its JSON Schema, ``text`` its docs type."""

    text: str
    json: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def read(self, r: Reader, node: yaml.Node, path: str) -> object:
        raise TypeError("a Custom key is read by the loader's code")

    def schema(self) -> dict[str, Any]:
        return dict(self.json)


@dataclass(frozen=True, slots=True)
class Nested:
    """A mapping read by its own block alone (plain keys only) into the block's model dataclass: a
    section such a loader reads with no code of its own, so adding one is one declaration."""

    block: Block
    text: str = "mapping"

    def read(self, r: Reader, node: yaml.Node, path: str) -> object:
        m = mapping(r, node, path, self.block)
        if m is None:
            return None
        kw = read_fields(r, m, path, self.block)
        if len(kw) < len(m) or not set(self.block.required) <= kw.keys() or self.block.model is None:
            return None
        return self.block.model(**kw)

    def schema(self) -> dict[str, Any]:
        return json_schema(self.block, {})


Value = Str | Int | Num | Bool | Choice | Custom | Nested


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a block. ``default`` is the docs' text for it (e.g. "none", "system CAs"); left empty
    it is "required" for a required key, else the model field's default, else empty."""

    name: str
    value: Value
    doc: str = ""
    required: bool = False
    default: str = ""
    #: The docs' type column when the value type's own text would say less (e.g. "topic").
    type_text: str = ""
    #: The device kinds the key applies to ("serial", "mqtt", "binary"); empty: every kind.
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Block:
    """One YAML mapping: ``path`` as the docs name it (``devices.NAME.serial``; "" the top level), its
    keys in the order messages list them, and the dataclass holding its defaults (fields of the same
    name; for `Nested`, the dataclass it is read into)."""

    path: str
    keys: tuple[Key, ...]
    model: type | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)

    @property
    def required(self) -> tuple[str, ...]:
        """The keys required whatever the device kind."""
        return self.required_for("")

    def required_for(self, kind: str) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys if k.required and (not k.kinds or kind in k.kinds))

    def names_for(self, kind: str) -> tuple[str, ...]:
        """The keys that apply to a device of ``kind``, in order."""
        return tuple(k.name for k in self.keys if not k.kinds or kind in k.kinds)

    def key(self, name: str) -> Key:
        return next(k for k in self.keys if k.name == name)

    def default(self, key: Key) -> object:
        """The model field's default for ``key`` (``_NO_DEFAULT`` when it has none)."""
        if self.model is None:
            return _NO_DEFAULT
        for f in dataclasses.fields(self.model):
            if f.name == key.name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
        return _NO_DEFAULT

    def default_text(self, key: Key) -> str:
        if key.default:
            return key.default
        if key.required:
            return "required"
        value = self.default(key)
        if value is _NO_DEFAULT or value is None:
            return ""
        return f"`{_yaml_text(value)}`"


def _yaml_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.isprintable() and value else repr(value).replace("'", '"')
    if isinstance(value, frozenset | tuple | list):
        return f"[{', '.join(sorted(str(v) for v in value))}]"
    return str(value)


def read_fields(r: Reader, m: Mapping[str, yaml.Node], path: str, block: Block,
                custom: Mapping[str, Callable[[yaml.Node, str], object]] | None = None) -> dict[str, Any]:
    """Read each present key of ``m`` by its declared type (``custom`` readers for the others and to
    override one); keys whose value was bad are left out, so ``len(result) < len(m)`` means an error."""
    out: dict[str, Any] = {}
    for key in block.keys:
        if key.name not in m:
            continue
        where = join(path, key.name)
        reader = (custom or {}).get(key.name)
        if reader is None and isinstance(key.value, Custom):
            continue
        value = reader(m[key.name], where) if reader is not None else key.value.read(r, m[key.name], where)
        if value is not None:
            out[key.name] = value
    return out


def json_schema(block: Block, blocks: Mapping[str, Block]) -> dict[str, Any]:
    """The JSON Schema of one block; a `Custom` value's ``{"$block": PATH}`` is the schema of that block,
    ``{"$ref": ...}`` is kept as written (a definition of the whole document)."""
    props = {}
    for key in block.keys:
        fragment = _resolve(key.value.schema(), blocks)
        if key.doc:
            fragment["description"] = key.doc
        props[key.name] = fragment
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if block.required:
        out["required"] = list(block.required)
    return out


def _resolve(fragment: Any, blocks: Mapping[str, Block]) -> Any:
    if isinstance(fragment, dict):
        if set(fragment) == {"$block"}:
            return json_schema(blocks[fragment["$block"]], blocks)
        return {k: _resolve(v, blocks) for k, v in fragment.items()}
    if isinstance(fragment, list):
        return [_resolve(v, blocks) for v in fragment]
    return fragment


def markdown_table(block: Block, kind: str = "") -> str:
    """The docs table of one block (only the keys for ``kind`` when given): key | type | default |
    meaning."""
    rows = ["| key | type | default | meaning |", "|-----|------|---------|---------|"]
    for key in block.keys:
        if kind and key.kinds and kind not in key.kinds:
            continue
        type_text = key.type_text or key.value.text
        cells = (f"`{key.name}`", type_text, block.default_text(key), key.doc)
        rows.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return "\n".join(rows)


def mapping(r: Reader, node: yaml.Node, path: str, block: Block,
            kind: str = "") -> dict[str, yaml.Node] | None:
    """The block's mapping at ``node`` (its keys for ``kind`` when given): unknown, duplicate and missing
    required keys recorded."""
    names = block.names_for(kind) if kind else block.names
    return r.mapping(node, path, names, required=block.required_for(kind))
