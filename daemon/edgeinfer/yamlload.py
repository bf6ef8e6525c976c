"""YAML loading that turns every malformed input into Problems with a key path.

PyYAML's safe_load lets the last of two equal keys win silently, raises bare ValueErrors for bad explicit
tags (`!!int abc`) and recurses once per nesting level (500 levels: RecursionError). Here the event stream
is checked for depth first (the parser itself does not recurse), the node graph is composed, and plain
mappings and sequences are built by a walker that knows the key path; every other node (scalars, sets,
timestamps, binary) is handed to SafeLoader's own constructors, one node at a time.
"""

from __future__ import annotations

from typing import Any

import yaml

# Real configs nest 5 levels; this is far above that and far below what Python's recursion limit allows.
MAX_DEPTH = 32
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlProblem(Exception):
    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class _Loader(yaml.SafeLoader):
    """Our own subclass, so nothing we might register leaks into yaml.SafeLoader."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"


def _join(path: str, part: Any) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else str(part)


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, naming the key path where it goes too deep."""
    stack: list[list[Any]] = []  # per open collection: [kind, key or index, expecting a key]

    def path() -> str:
        out = ""
        for kind, part, _ in stack:
            if kind == "seq":
                out = _join(out, part)
            elif part is not None:
                out = _join(out, part)
        return out

    def advance() -> None:
        if stack:
            top = stack[-1]
            if top[0] == "seq":
                top[1] += 1
            else:
                top[2] = not top[2]

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise YamlProblem(path(), f"nested more than {MAX_DEPTH} levels deep ({_where(event.start_mark)})")
            stack.append(["map", None, True] if isinstance(event, yaml.MappingStartEvent) else ["seq", 0, False])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            stack.pop()
            advance()
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            if stack and stack[-1][0] == "map" and stack[-1][2]:
                stack[-1][1] = getattr(event, "value", "*alias")
            advance()


class _Builder:
    def __init__(self) -> None:
        self.loader = _Loader("")
        self.done: dict[int, Any] = {}  # node id -> value: an alias is built once (no billion laughs)
        self.busy: set[int] = set()

    def build(self, node: yaml.Node, path: str) -> Any:
        key = id(node)
        if key in self.done:
            return self.done[key]
        if key in self.busy:
            raise YamlProblem(path, f"an alias refers to the collection that contains it ({_where(node.start_mark)})")
        self.busy.add(key)
        try:
            if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
                value: Any = self._mapping(node, path)
            elif isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
                value = [self.build(item, _join(path, i)) for i, item in enumerate(node.value)]
            else:
                value = self._other(node, path)
        finally:
            self.busy.discard(key)
        self.done[key] = value
        return value

    def _other(self, node: yaml.Node, path: str) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise YamlProblem(path, f"{problem} ({_where(node.start_mark)})") from None
        except Exception as exc:  # PyYAML's constructors raise what they meet (ValueError, AttributeError, ...)
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlProblem(path, f"not a valid {tag} value: {getattr(node, 'value', '')!r} "
                                    f"({exc}; {_where(node.start_mark)})") from None

    def _key(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise YamlProblem(path, f"a key must be a plain value, not a {type(node).__name__[:-4].lower()} "
                                    f"({_where(node.start_mark)})")
        return self._other(node, path)

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[Any, Any]:
        seen: dict[Any, str] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, path)
            if key in seen:
                raise YamlProblem(_join(path, key), f"duplicate key ({seen[key]} and {_where(key_node.start_mark)}); "
                                                    "each key may appear once")
            seen[key] = _where(key_node.start_mark)
        try:
            self.loader.flatten_mapping(node)  # `<<: *base` merges; explicit keys override merged ones
        except yaml.YAMLError as exc:
            raise YamlProblem(path, f"{getattr(exc, 'problem', exc)} ({_where(node.start_mark)})") from None
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            out[key] = self.build(value_node, _join(path, key))
        return out


def load_yaml(text: str) -> Any:
    """The document as plain Python values; raises YamlProblem (key path, message) or yaml.YAMLError."""
    _check_depth(text)
    node = yaml.compose(text, Loader=_Loader)
    if node is None:
        return None
    try:
        return _Builder().build(node, "")
    except RecursionError:  # aliases can chain deeper than the text nests
        raise YamlProblem("", f"aliases nest deeper than {MAX_DEPTH} levels") from None
