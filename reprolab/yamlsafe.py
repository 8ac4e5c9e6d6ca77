"""YAML read the strict way, for every file a user hands reprolab (claim files, merge configs).

``yaml.safe_load`` already refuses to build arbitrary objects, but it silently keeps the last of two equal keys
(a setting given twice is then half ignored), lets a few lines of aliases expand to billions of values (an
alias bomb: a hang, then out of memory), and a deeply nested file ends in a ``RecursionError``. Here each of
those is one :class:`YamlProblem` with the line it was found on; the caller puts the file's name in front.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# libyaml's parser (when PyYAML was built with it) is ~10x faster and keeps the same marks (line, column, index).
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_EXPANDED_NODES = 100_000  # far above any real claim file or merge config, far below what an alias bomb expands to


class YamlProblem(ValueError):
    """Why a YAML text was refused: ``line`` (1-based, None when unknown), ``key`` (the mapping key concerned,
    or None) and a one-line ``message``."""

    def __init__(self, line: int | None, key: str | None, message: str) -> None:
        self.line, self.key, self.message = line, key, message
        super().__init__(message)


def _codepoint(character: str | int) -> int:
    return character if isinstance(character, int) else ord(character)  # libyaml gives an int, PyYAML a str


def problem_from(exc: BaseException, text: str) -> YamlProblem:
    """The :class:`YamlProblem` for an error PyYAML (or the recursion limit) raised while reading ``text``."""
    if isinstance(exc, YamlProblem):
        return exc
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return YamlProblem(line, None, f"YAML cannot contain control character {_codepoint(exc.character):#04x}")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return YamlProblem(mark.line + 1 if mark is not None else None, None, f"YAML syntax: {exc.problem or exc.context}")
    if isinstance(exc, RecursionError):
        return YamlProblem(None, None, "YAML nested too deeply")
    return YamlProblem(None, None, f"YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def prepare_tree(root: yaml.Node, text: str) -> None:
    """Ready a node tree to be built, the one step claim files and merge configs share: refuse aliases that expand
    past MAX_EXPANDED_NODES or refer to themselves and duplicate mapping keys, then read plain exponent numbers as
    YAML 1.2 does (:func:`yaml12_exponent_floats`: `abs: 1e-3`, `density: 1e-3` are numbers)."""
    if "&" in text:  # no anchor, no alias: nothing to bound
        _bound_aliases(root)
    _reject_duplicate_keys(root, set())
    yaml12_exponent_floats(root)


_YAML12_EXPONENT_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")
"""A YAML 1.2 float with an exponent; PyYAML (YAML 1.1) reads ``1e-3`` (no dot) as a string."""


def yaml12_exponent_floats(root: yaml.Node) -> None:
    """Retag each plain (unquoted) scalar written like ``1e-3`` or ``5E4`` as a float, as YAML 1.2 reads it, so
    a schema that refuses strings where numbers go still takes it; a quoted ``'1e-3'`` stays a string."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            plain = not node.style  # None (PyYAML) or "" (libyaml)
            if plain and node.tag == "tag:yaml.org,2002:str" and _YAML12_EXPONENT_FLOAT.fullmatch(node.value):
                node.tag = "tag:yaml.org,2002:float"
        elif isinstance(node, yaml.MappingNode):
            stack.extend(value for _, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def load_all(text: str) -> list[Any]:
    """The documents of ``text`` (empty ones left out), each readied by :func:`prepare_tree` before it is built."""
    loader = Loader(text)
    try:
        docs = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            prepare_tree(node, text)
            data = loader.construct_document(node)
            if data is not None:
                docs.append(data)
        return docs
    except (yaml.YAMLError, RecursionError) as exc:
        raise problem_from(exc, text) from None
    finally:
        loader.dispose()


def _bound_aliases(root: yaml.Node) -> None:
    """Each distinct node's expanded size is computed once (memoised), so this costs the size of the file,
    not of its expansion."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            size[key] = 1
            continue
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            if size[key] > MAX_EXPANDED_NODES:
                raise YamlProblem(
                    node.start_mark.line + 1,
                    None,
                    f"YAML aliases expand to more than {MAX_EXPANDED_NODES:,} values (an alias bomb?)",
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise YamlProblem(node.start_mark.line + 1, None, "YAML alias refers to itself")
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise YamlProblem(child.start_mark.line + 1, None, "YAML alias refers to itself")
            if id(child) not in size:
                stack.append((child, False))


def _reject_duplicate_keys(node: yaml.Node, checked: set[int]) -> None:
    if id(node) in checked:  # an alias of a node already walked: once is enough
        return
    checked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise YamlProblem(key_node.start_mark.line + 1, str(key), f"duplicate key (first on line {seen[key]})")
            seen[key] = key_node.start_mark.line + 1
            _reject_duplicate_keys(value_node, checked)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _reject_duplicate_keys(child, checked)
