"""Safe YAML reading that remembers where every key is.

Contract: :func:`read_yaml` parses text with ``yaml.SafeLoader`` semantics (no object
construction, no code execution; exponent floats such as ``1e3`` are numbers, as in YAML 1.2)
and returns a :class:`YamlDoc`: the plain data plus a map from key paths to 1-based line
numbers. A *path* is a tuple of mapping keys (str) and sequence indices
(int), e.g. ``("cluster", "pools", 0, "replicas")``; the line of a mapping entry is the line of
its key, the line of a sequence item the line where the item starts. :func:`line_of` finds the
line of a path or of its nearest ancestor that exists in the file.

Invalid YAML raises :class:`~llmsim.errors.InputError` with the parser's line. Duplicate keys in
one mapping (which YAML would silently resolve by keeping the last) are reported in
``YamlDoc.problems`` rather than accepted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from llmsim.errors import InputError, Problem, input_problem

_MERGE_TAG = "tag:yaml.org,2002:merge"


class ScenarioLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """``yaml.SafeLoader`` (libyaml's C parser when installed: same semantics, ~10x faster)
    that also reads YAML 1.2 exponent floats (``1e3``, ``2.5e-3``) as numbers; plain PyYAML
    (YAML 1.1) would read them as strings."""


ScenarioLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))
_MAX_DEPTH = 100


@dataclass
class YamlDoc:
    """Parsed YAML: ``data`` (plain Python), ``lines`` (path → 1-based line), ``problems``
    (duplicate keys found while mapping lines)."""

    data: object
    lines: dict[tuple, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def read_yaml(text: str, where: str | None = None) -> YamlDoc:
    """Parse ``text`` safely; ``where`` (a file name) is used in error messages."""
    try:
        data = yaml.load(text, Loader=ScenarioLoader)  # noqa: S506 (a SafeLoader subclass)
        node = yaml.compose(text, Loader=ScenarioLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(s for s in (exc.context, exc.problem) if s)
        raise InputError(input_problem(f"invalid YAML: {what}", where=where, line=line)) from None
    except yaml.YAMLError as exc:  # unmarked errors (e.g. bad encoding)
        raise InputError(input_problem(f"invalid YAML: {exc}", where=where)) from None
    except RecursionError:
        raise InputError(input_problem("invalid YAML: nested too deeply", where=where)) from None
    doc = YamlDoc(data)
    if node is not None:
        try:
            _walk(node, (), doc, where, SafeConstructor(), 0, set())
        except RecursionError:
            raise InputError(input_problem("invalid YAML: nested too deeply",
                                           where=where)) from None
    return doc


def line_of(lines: dict[tuple, int], path: tuple) -> int | None:
    """Line of ``path``, else of its nearest ancestor present in ``lines``; None if none is."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _key_value(ctor: SafeConstructor, node) -> object:
    if isinstance(node, ScalarNode):
        try:
            return ctor.construct_object(node, deep=True)
        except yaml.YAMLError:
            return node.value
    return None  # complex keys: not addressable by a path


def _walk(node, path: tuple, doc: YamlDoc, where, ctor: SafeConstructor, depth: int,
          seen: set) -> None:
    if depth > _MAX_DEPTH:  # recursive aliases
        return
    if isinstance(node, (MappingNode, SequenceNode)):
        # an aliased node is walked once: lines of its other paths fall back to the alias's
        # ancestor (line_of), and alias bombs (billions of paths) cost nothing
        if id(node) in seen:
            return
        seen.add(id(node))
    if not path:
        doc.lines[()] = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        explicit: dict[object, int] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = _key_value(ctor, key_node)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                continue
            if key in explicit:  # YAML keeps the last value: its line is the one to show
                doc.problems.append(input_problem(
                    f"duplicate key '{key}' (first written at line {explicit[key]}); "
                    "write each key once",
                    where=where, line=line, key=dotted(path + (key,))))
            explicit[key] = line
            doc.lines[path + (key,)] = line
            _walk(value_node, path + (key,), doc, where, ctor, depth + 1, seen)
        # merge keys ('<<: *anchor'): merged entries point at the line of the '<<' item
        for merged in merges:
            sources = merged.value if isinstance(merged, SequenceNode) else [merged]
            for src in sources:
                if not isinstance(src, MappingNode):
                    continue
                for key_node, value_node in src.value:
                    key = _key_value(ctor, key_node)
                    if key is None or key in explicit:
                        continue
                    try:
                        hash(key)
                    except TypeError:
                        continue
                    sub = path + (key,)
                    if sub not in doc.lines:
                        doc.lines[sub] = key_node.start_mark.line + 1
                        _walk(value_node, sub, doc, where, ctor, depth + 1, seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            doc.lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), doc, where, ctor, depth + 1, seen)


def dotted(path: tuple) -> str:
    """``("cluster", "pools", 0, "replicas")`` → ``"cluster.pools.0.replicas"``."""
    return ".".join(str(p) for p in path)
