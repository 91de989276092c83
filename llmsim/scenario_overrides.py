"""``--set KEY=VALUE`` overrides applied to raw scenario data before validation.

Contract: :func:`apply_overrides` deep-copies ``data`` and applies each override in order.
``KEY`` is a dotted path; a segment that meets a list must be a non-negative index of an existing
item (``cluster.pools.0.replicas``); a segment that meets a mapping is a key (a missing key is
created, and the schema then accepts or rejects it); a segment that meets a scalar is an error.
``VALUE`` is parsed as one YAML value (``8`` → int, ``0.5`` → float, ``true``, ``null``,
``[1, 2]``, ``{tp: 2}``; anything else is a string). A key whose value is ``null`` counts as an
empty mapping when the path goes through it (``slo.ttft_s=1`` works when ``slo:`` is empty).

Returns the new data, a map from each overridden path to its ``--set`` text (so later errors can
blame the override instead of a file line), and the problems found (bad syntax, bad paths).
"""
from __future__ import annotations

import copy
from typing import Sequence

import yaml

from llmsim.errors import Problem, input_problem
from llmsim.yaml_lines import ScenarioLoader


def parse_path(key: str) -> tuple[str, ...] | None:
    """Split a dotted key; None when a segment is empty."""
    parts = tuple(p.strip() for p in key.split("."))
    if not parts or any(p == "" for p in parts):
        return None
    return parts


def apply_overrides(data: dict, overrides: Sequence[str]
                    ) -> tuple[dict, dict[tuple, str], list[Problem]]:
    """Apply ``overrides`` to a deep copy of ``data`` (see module docstring)."""
    data = copy.deepcopy(data)
    where_of: dict[tuple, str] = {}
    problems: list[Problem] = []
    for spec in overrides:
        where = f"--set {spec}"
        if not isinstance(spec, str) or "=" not in spec:
            problems.append(input_problem(
                "expected KEY=VALUE with a dotted KEY, e.g. cluster.pools.0.replicas=8",
                where=where, value=spec))
            continue
        key, _, text = spec.partition("=")
        key = key.strip()
        segs = parse_path(key)
        if segs is None:
            problems.append(input_problem(
                "empty segment in the key path; write a dotted path such as "
                "cluster.pools.0.replicas", where=where, key=key))
            continue
        try:
            value = yaml.load(text, Loader=ScenarioLoader) if text.strip() else None  # noqa: S506
        except yaml.YAMLError as exc:
            problems.append(input_problem(
                f"VALUE is not a valid YAML value ({getattr(exc, 'problem', None) or exc})",
                where=where, key=key, value=text))
            continue
        created: list[tuple] = []
        path, err = _assign(data, segs, value, created)
        if err:
            problems.append(input_problem(err, where=where, key=key))
            continue
        for p in created:          # a mapping the override made (e.g. a misspelt section)
            where_of.setdefault(p, where)
        where_of[path] = where
    return data, where_of, problems


def _assign(data: dict, segs: tuple[str, ...], value, created: list
            ) -> tuple[tuple, str | None]:
    """Set ``value`` at ``segs`` inside ``data``; returns (typed path, error message or None).
    Paths of the mappings it had to create are appended to ``created``."""
    cur = data
    path: list = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        here = ".".join(str(p) for p in path) or "the scenario"
        if isinstance(cur, dict):
            if last:
                cur[seg] = value
                path.append(seg)
                return tuple(path), None
            nxt = cur.get(seg)
            path.append(seg)
            if nxt is None:  # missing or null: becomes a new mapping
                nxt = cur[seg] = {}
                created.append(tuple(path))
            cur = nxt
        elif isinstance(cur, list):
            if not seg.isdigit():
                return (), (f"'{here}' is a list: '{seg}' must be an item index "
                            f"0..{len(cur) - 1}" if cur else f"'{here}' is an empty list")
            idx = int(seg)
            if idx >= len(cur):
                return (), (f"index {idx} is out of range: '{here}' has {len(cur)} "
                            f"item(s) (indices 0..{len(cur) - 1})" if cur else
                            f"index {idx} is out of range: '{here}' is an empty list")
            path.append(idx)
            if last:
                cur[idx] = value
                return tuple(path), None
            if cur[idx] is None:
                cur[idx] = {}
            cur = cur[idx]
        else:
            return (), (f"cannot go into '{here}': it holds a {type(cur).__name__} "
                        f"({cur!r}), not a mapping or list")
    return tuple(path), None  # pragma: no cover (loop always returns)
