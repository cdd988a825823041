"""Bounded YAML: the one reader for space files, architecture files and `--set` values.

`yaml.safe_load` builds no objects, but it does not bound what it builds: 437 bytes of nested
aliases (a "billion laughs") load as a few shared lists, and the first thing that walks them (a
check, an error message, a copy) needs gigabytes. These files are a few KB of plain values, so
this reader refuses, with one line naming the limit, anything far beyond that: a file over
MAX_BYTES, more than MAX_NODES values, nesting deeper than MAX_DEPTH (deeper would also overflow
the parser's stack), and aliases that expand the document past MAX_EXPANDED characters. Aliases
within that bound stay allowed: sharing one channel list between layers is what they are for.
A key written twice in one mapping is refused, here and in JSON files (`loads_json`): both formats
would otherwise keep the last value silently, and the first one is often the value the user reads.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from nas.errors import NasError, label, shown

MAX_BYTES = 64 * 1024  # the bundled space is 2 KB, an architecture file 0.5 KB
MAX_NODES = 10_000  # values (scalars, lists, mappings) written in the file; the default space has ~150
MAX_DEPTH = 32  # nesting levels; a space needs 4
MERGE = "tag:yaml.org,2002:merge"  # the `<<` key
MAX_EXPANDED = 4 * MAX_BYTES  # characters plus values, aliases expanded (without aliases: under 2 * MAX_BYTES)


class _TooLarge(Exception):
    """A limit of this reader; its message says which, and where."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts the nodes it composes and their depth, and weighs the document with its
    aliases expanded before constructing anything from it."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self.nodes = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.check_event(yaml.AliasEvent):
            self.nodes += 1
            line = self.peek_event().start_mark.line + 1
            if self.nodes > MAX_NODES:
                raise _TooLarge(f"more than {MAX_NODES:,} values (at line {line}): check that this is the right "
                                f"file (a space file holds a few hundred)")
            if self.depth >= MAX_DEPTH:
                raise _TooLarge(f"nested more than {MAX_DEPTH} levels deep at line {line}: a space or architecture "
                                f"file needs at most 4")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == MERGE:
                continue  # `<<: *base` then a key of its own is an override, not a duplicate
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # refused by the base class, with its message
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown(key)}: each key may appear "
                                                        f"once in a mapping; delete one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

    def compose_document(self) -> Any:
        node = super().compose_document()
        if _expanded_size(node, {}) > MAX_EXPANDED:
            raise _TooLarge(f"its aliases (*name) expand it to more than {MAX_EXPANDED:,} characters (an alias "
                            f"bomb?): write the values out, or refer to fewer or smaller anchors (&name)")
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Characters of every scalar plus one per node, counting an aliased node at each use; each distinct
    node is weighed once (`sizes`), so this takes time in the file's size, not the expansion's."""
    if id(node) not in sizes:
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1 + len(node.value)
        else:
            children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
            sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def load_yaml(text: str | bytes, where: str) -> Any:
    """Parse YAML (JSON is YAML) within this module's limits; any problem is a NasError starting with `where`."""
    if len(text) > MAX_BYTES:
        raise NasError(f"{where}: larger than {MAX_BYTES // 1024} KiB: check that this is the right file "
                       f"(space and architecture files are a few KB)")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
    except _TooLarge as e:
        raise NasError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise NasError(f"{where}: not valid YAML{at}: {label(str(getattr(e, 'problem', None) or e), 200)}") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of 5,000 digits, a timestamp on 31 February
        raise NasError(f"{where}: a value cannot be read ({label(str(e), 200)}): "
                       f"write it as a plain number or text") from None


def read_yaml(path: str | Path, what: str, example: str) -> Any:
    """The parsed contents of a YAML/JSON file, reading no more than the limit allows (so /dev/zero or a
    multi-GB file costs nothing); `what` and `example` name the file kind in the error."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise NasError(f"cannot read {what} {str(path)!r} ({e.strerror}): "
                       f"pass an existing file, e.g. {example}") from None
    return load_yaml(raw, str(path))


def loads_json(text: str | bytes) -> Any:
    """json.loads that refuses a key written twice in one object (ValueError naming it) instead of keeping the
    last value; the caller's error handling for malformed JSON (a ValueError) covers it."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {shown(key)}: each key may appear once in an object; delete one")
        seen[key] = value
    return seen
