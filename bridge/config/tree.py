"""YAML with line numbers for the config loader.

The text is composed into PyYAML's node tree (every node keeps its start mark) and read with typed
accessors that *record* each problem as a `ConfigIssue` (file, line, key path, message) and carry on,
so that one run reports every error in the file, not only the first. Accessors return None when the
value is unusable; the caller then skips whatever depended on it.

String values go through ``${NAME}`` / ``${NAME:-default}`` interpolation from the environment given to
the `Reader` (``$${`` writes a literal ``${``). Numbers and booleans may come from a variable too:
``port: ${MQTT_PORT:-1883}`` is read as the integer 1883.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import yaml

from bridge.core.controls import CONTROL_CHARS

MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_STR_TAG = "tag:yaml.org,2002:str"
_TAG_NAMES = {_NULL_TAG: "nothing (null)", _BOOL_TAG: "a boolean", _INT_TAG: "an integer",
              _FLOAT_TAG: "a number", _STR_TAG: "a string"}
_TRUE = frozenset({"true", "yes", "on"})
_FALSE = frozenset({"false", "no", "off"})
#: ``$$`` (escape), ``${...}`` (a reference), or a lone ``${`` that is never closed.
_ENV_REF = re.compile(r"\$(?:\$|\{([^{}]*)\}|\{)")
_CONTROL = CONTROL_CHARS     # one definition (bridge.core.controls), C1 escapes included
_ENV_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
#: Upper bound on nodes in one free-form value (an MQTT payload mapping): aliases can make a tiny file
#: describe an enormous (or, in PyYAML, self-referencing) structure.
MAX_FREEFORM_NODES = 2000
MAX_FREEFORM_DEPTH = 32
MAX_YAML_DEPTH = 100
# Stateless constructors for scalars: int (0x.., 1_000), float (.inf, 1.5e3) and bool as YAML reads them.
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file. ``line`` is 1-based (None when the file could not be read);
    ``path`` is the key path (``rules[2].send.device``, list indexes 0-based)."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used. ``errors`` holds every problem found, in file order;
    ``str()`` gives one line per problem."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def join(path: str, key: str | int) -> str:
    """``join("rules", 2) == "rules[2]"``, ``join("rules[2]", "send") == "rules[2].send"``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def suggest(word: str, choices: Collection[str]) -> str:
    """`` (did you mean 'params'?)`` when a choice is close to ``word``, else empty."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    name = _TAG_NAMES.get(node.tag, "a value")
    return name if node.tag == _NULL_TAG else f"{name} {node.value!r}"


class Reader:
    """Typed access to a composed YAML tree; every problem is appended to ``issues``."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.issues: list[ConfigIssue] = []

    # ------------------------------------------------------------ recording

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        # A message quotes the user's text; control characters in it would garble a terminal.
        message = _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)
        path = _CONTROL.sub(lambda m: repr(m.group())[1:-1], path)
        self.issues.append(ConfigIssue(self.file, None if node is None else line_of(node), path, message))

    def compose(self, text: str, *, empty_ok: bool = False) -> yaml.Node | None:
        """The document's root node, or None (with an issue) on a syntax error or an empty file
        (``empty_ok``: None without an issue; every key of the file is optional)."""
        try:
            root = yaml.compose(text, Loader=_DepthLimitedLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = None if mark is None else mark.line + 1
            problem = exc.problem or exc.context or "invalid YAML"
            if exc.problem and exc.context and exc.context_mark is not None and exc.context_mark is not mark:
                problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
            self.issues.append(ConfigIssue(self.file, line, "", f"YAML syntax error: {problem}"))
            return None
        except yaml.YAMLError as exc:
            self.issues.append(ConfigIssue(self.file, None, "", f"YAML error: {' '.join(str(exc).split())}"))
            return None
        if root is None and not empty_ok:
            self.issues.append(ConfigIssue(self.file, 1, "", "the file is empty (expected a mapping "
                                                            "with session:, devices:, rules: ...)"))
        return root

    # ------------------------------------------------------------ structure

    def mapping(self, node: yaml.Node, path: str, keys: Collection[str] | None,
                required: Collection[str] = ()) -> dict[str, yaml.Node] | None:
        """The mapping's values by key name. ``keys`` lists the allowed keys (None: any name);
        unknown, duplicate and missing required keys are recorded."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping, got {describe(node)}")
            return None
        out: dict[str, yaml.Node] = {}
        seen: dict[str, int] = {}
        for key, value in node.value:
            if key.tag == MERGE_TAG:
                self.error(key, path, "merge keys (<<) are not supported; write the keys out")
                continue
            if not isinstance(key, yaml.ScalarNode) or key.tag == _NULL_TAG:
                self.error(key, path, f"keys must be names, got {describe(key)}")
                continue
            name = str(key.value)     # the text as written: `on:` is the key "on", not True
            where = join(path, name)
            if name in seen:
                self.error(key, where, f"duplicate key (first at line {seen[name]})")
                continue
            seen[name] = line_of(key)
            if keys is not None and name not in keys:
                self.error(key, where, f"unknown key{suggest(name, keys)}; expected one of: "
                                       f"{', '.join(keys)}")
                continue
            out[name] = value
        for name in required:
            if name not in seen:
                self.error(node, path, f"missing required key {name!r}")
        return out

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, f"expected a list, got {describe(node)}")
            return None
        return list(node.value)

    def one_or_many(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        """A mapping alone or a list of them, each with its key path."""
        if isinstance(node, yaml.MappingNode):
            return [(node, path)]
        items = self.sequence(node, path)
        return [] if items is None else [(n, join(path, i)) for i, n in enumerate(items)]

    # ------------------------------------------------------------ scalars

    def string(self, node: yaml.Node, path: str, *, allow_empty: bool = False) -> str | None:
        """A string. A plain scalar keeps its text as written (``payload: on`` is "on", ``id: 42`` is
        "42"): the field wants a string, so YAML's guess at another type does not matter."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == _NULL_TAG:
            self.error(node, path, f"expected a string, got {describe(node)}")
            return None
        text = self.interpolate(node, path, str(node.value))
        if text is not None and not text and not allow_empty:
            self.error(node, path, "must not be empty")
            return None
        return text

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG:
            return bool(_CONSTRUCTOR.construct_yaml_bool(node))
        if not _is_string(node):
            self.error(node, path, f"expected true or false, got {describe(node)}")
            return None
        text = self.interpolate(node, path, str(node.value))
        if text is None:
            return None
        if text.lower() in _TRUE or text.lower() in _FALSE:
            return text.lower() in _TRUE
        self.error(node, path, f"expected true or false, got {text!r}")
        return None

    def number(self, node: yaml.Node, path: str, *, positive: bool = False,
               minimum: float | None = None) -> int | float | None:
        """An int or a float, finite; ``positive``: > 0; ``minimum``: >= it."""
        value: int | float | None = None
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
            value = int(_CONSTRUCTOR.construct_yaml_int(node))
        elif isinstance(node, yaml.ScalarNode) and node.tag == _FLOAT_TAG:
            value = float(_CONSTRUCTOR.construct_yaml_float(node))
        elif not _is_string(node):
            self.error(node, path, f"expected a number, got {describe(node)}")
            return None
        else:
            text = self.interpolate(node, path, str(node.value))
            if text is None:
                return None
            value = _parse_number(text)
            if value is None:
                self.error(node, path, f"expected a number, got {text!r}")
                return None
        if isinstance(value, float) and not math.isfinite(value):
            self.error(node, path, f"must be a finite number, got {value}")
            return None
        if positive and value <= 0:
            self.error(node, path, f"must be greater than 0, got {value}")
            return None
        if minimum is not None and value < minimum:
            self.error(node, path, f"must be at least {minimum:g}, got {value}")
            return None
        return value

    def integer(self, node: yaml.Node, path: str, *, positive: bool = False,
                minimum: int | None = None, maximum: int | None = None) -> int | None:
        value = self.number(node, path, positive=positive, minimum=minimum)
        if value is None:
            return None
        if isinstance(value, float):
            self.error(node, path, f"expected an integer, got {value}")
            return None
        if maximum is not None and value > maximum:
            self.error(node, path, f"must be at most {maximum}, got {value}")
            return None
        return value

    def freeform(self, node: yaml.Node, path: str,
                 on_string: Callable[[yaml.Node, str, str], object]) -> object:
        """A JSON-like value (mappings with string keys, lists, scalars with YAML's types); each string
        is interpolated and passed to ``on_string(node, path, text)`` for checking. A value larger than
        MAX_FREEFORM_NODES or deeper than MAX_FREEFORM_DEPTH is refused at its root."""
        walk = _Walk(on_string)
        value = self._freeform(node, path, walk, 0)
        if walk.budget < 0:
            self.error(node, path, f"too large or too deeply nested (at most {MAX_FREEFORM_NODES} "
                                   f"values, {MAX_FREEFORM_DEPTH} levels)")
            return None
        return value

    def _freeform(self, node: yaml.Node, path: str, walk: _Walk, depth: int) -> object:
        walk.budget -= 1
        if walk.budget < 0 or depth > MAX_FREEFORM_DEPTH:
            walk.budget = -1        # stop walking; reported once by freeform()
            return None
        if isinstance(node, yaml.MappingNode):
            items = self.mapping(node, path, None) or {}
            return {k: self._freeform(v, join(path, k), walk, depth + 1) for k, v in items.items()}
        if isinstance(node, yaml.SequenceNode):
            return [self._freeform(v, join(path, i), walk, depth + 1) for i, v in enumerate(node.value)]
        if node.tag == _NULL_TAG:
            return None
        if node.tag == _BOOL_TAG:
            return self.boolean(node, path)
        if node.tag in (_INT_TAG, _FLOAT_TAG):
            return self.number(node, path)
        text = self.interpolate(node, path, str(node.value))
        if text is not None:
            walk.on_string(node, path, text)
        return text

    # ------------------------------------------------------------ environment

    def interpolate(self, node: yaml.Node, path: str, text: str) -> str | None:
        """``text`` with ``${NAME}`` / ``${NAME:-default}`` replaced; None (recorded) on an unknown
        variable or a malformed reference."""
        if "$" not in text:
            return text
        problems: list[str] = []

        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            inner = m.group(1)
            ref = _ENV_NAME.fullmatch(inner) if inner is not None else None
            if ref is None:
                problems.append(f"malformed variable reference {m.group(0)!r} "
                                f"(write ${{NAME}} or ${{NAME:-default}}; $$ for a literal $)")
                return ""
            name, default = ref.group(1), ref.group(2)
            value = self.environ.get(name)
            if value is None:
                if default is None:
                    problems.append(f"environment variable {name!r} is not set "
                                    f"(set it, or give a default: ${{{name}:-...}})")
                    return ""
                return default
            return value

        result = _ENV_REF.sub(replace, text)
        for problem in problems:
            self.error(node, path, problem)
        return None if problems else result



class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML composes recursively: ``[[[[...`` thousands deep would end in a RecursionError."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels",
                                                  self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Walk:
    """State of one freeform() walk: the string callback and the number of values still allowed."""

    def __init__(self, on_string: Callable[[yaml.Node, str, str], object]) -> None:
        self.on_string = on_string
        self.budget = MAX_FREEFORM_NODES


def _is_string(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG


def _parse_number(text: str) -> int | float | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None
