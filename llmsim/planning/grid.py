"""Sweep grids: parsing, points, key checks and the seeds of a point's runs.

A grid maps dotted scenario keys (as ``--set`` takes them: ``cluster.pools.0.replicas``) to the
values to try; its points are the cartesian product, in the order the keys and values were given
(the last key varies fastest). A point is applied to the scenario as ``--set KEY=VALUE``
overrides whose VALUE is the JSON text of the value (JSON is read back by the scenario's YAML
loader to the same value), so a point reports errors exactly like ``--set`` does.

Seeds: run ``k`` of a point whose scenario seed is ``s`` uses seed ``s`` for ``k = 0`` (so a
one-seed sweep reproduces ``llmsim run`` of that point) and, for ``k >= 1``, the first 32-bit word
of ``numpy.random.SeedSequence(s, spawn_key=(k,))``. Every point therefore uses the same seeds
(common random numbers), which makes differences between points less noisy.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from llmsim.errors import InputError, Problem, input_problem, suggest
from llmsim.yaml_lines import ScenarioLoader

__all__ = ["parse_grid_arg", "parse_grid_args", "normalize_grid",
           "point_overrides", "point_label", "check_key_paths", "run_seeds", "split_top_level"]


def split_top_level(text: str) -> list[str]:
    """Split ``text`` at commas that are not inside brackets, braces or quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_grid_arg(spec: str, where: str = "--grid") -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` → ``(KEY, [V1, V2, ...])``; each value is read as one YAML value (as
    ``--set`` reads VALUE). Commas inside ``[...]``, ``{...}`` or quotes do not split."""
    if not isinstance(spec, str) or "=" not in spec:
        raise InputError(input_problem(
            "expected KEY=V1,V2,... with a dotted KEY, e.g. cluster.pools.0.replicas=1,2,4",
            where=where, value=spec))
    key, _, text = spec.partition("=")
    key = key.strip()
    if not key or any(not p.strip() for p in key.split(".")):
        raise InputError(input_problem("empty segment in the key path; write a dotted path "
                                       "such as cluster.pools.0.replicas",
                                       where=f"{where} {spec}", key=key))
    values = []
    for raw in split_top_level(text):
        if not raw.strip():
            raise InputError(input_problem(
                "empty value in the list (two commas in a row, or a trailing comma)",
                where=f"{where} {spec}", key=key, value=text))
        try:
            values.append(yaml.load(raw, Loader=ScenarioLoader))  # noqa: S506 (SafeLoader)
        except yaml.YAMLError as exc:
            raise InputError(input_problem(
                f"not a valid YAML value ({getattr(exc, 'problem', None) or exc})",
                where=f"{where} {spec}", key=key, value=raw.strip())) from None
    return key, values


def parse_grid_args(specs: Sequence[str], where: str = "--grid") -> dict[str, list[Any]]:
    """Several ``KEY=V1,V2`` specs → one grid mapping (a repeated KEY is an error)."""
    grid: dict[str, list[Any]] = {}
    problems: list[Problem] = []
    for spec in specs:
        try:
            key, values = parse_grid_arg(spec, where)
        except InputError as exc:
            problems += exc.problems
            continue
        if key in grid:
            problems.append(input_problem("key given twice; list all its values in one "
                                          f"{where} KEY=V1,V2,...", where=f"{where} {spec}",
                                          key=key))
            continue
        grid[key] = values
    if problems:
        raise InputError(problems)
    return grid


def normalize_grid(grid, where: str = "grid") -> list[dict[str, Any]]:
    """The points of ``grid`` as a list of ``{key: value}`` dicts.

    ``grid`` is None (one point: the scenario itself), a mapping ``{key: [values]}`` (a scalar
    value counts as a one-value list; the cartesian product is taken), a sequence of
    ``"KEY=V1,V2"`` strings (as ``--grid``), or a sequence of mappings (explicit points)."""
    if grid is None:
        return [{}]
    if isinstance(grid, Mapping):
        keys = list(grid)
        problems = [input_problem("grid keys must be non-empty dotted text", where=where,
                                  value=k) for k in keys if not isinstance(k, str) or not k]
        lists = []
        for k in keys:
            v = grid[k]
            vals = list(v) if isinstance(v, (list, tuple)) else [v]
            if not vals:
                problems.append(input_problem("no values to try", where=where, key=str(k)))
            lists.append(vals)
        if problems:
            raise InputError(problems)
        return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]
    if isinstance(grid, (str, bytes)):
        grid = [grid]
    try:
        items = list(grid)
    except TypeError:
        raise InputError(input_problem("a grid is a mapping {key: [values]}, a list of "
                                       "'KEY=V1,V2' texts or a list of points",
                                       where=where, value=type(grid).__name__)) from None
    if not items:
        return [{}]
    if all(isinstance(i, str) for i in items):
        return normalize_grid(parse_grid_args(items), where)
    if all(isinstance(i, Mapping) for i in items):
        return [dict(i) for i in items]
    raise InputError(input_problem("a grid list holds either 'KEY=V1,V2' texts or point "
                                   "mappings, not a mix", where=where))


def point_overrides(point: Mapping[str, Any]) -> list[str]:
    """``--set`` texts that apply ``point`` (VALUE = the JSON text of the value); ValueError
    for a value no scenario can hold (NaN, an infinity)."""
    try:
        return [f"{k}={json.dumps(v, allow_nan=False)}" for k, v in point.items()]
    except ValueError:          # json's 'Out of range float values are not JSON compliant'
        raise ValueError("not a finite number") from None


def _short(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _short_names(keys: Sequence[str]) -> list[str]:
    """The shortest trailing part of each dotted key that no other key ends with."""
    segs = [k.split(".") for k in keys]
    out = []
    for i, s in enumerate(segs):
        for n in range(1, len(s) + 1):
            tail = s[-n:]
            if all(o[-n:] != tail for j, o in enumerate(segs) if j != i):
                break
        out.append(".".join(tail))
    return out


def point_label(point: Mapping[str, Any]) -> str:
    """Short label of a point: ``replicas=2, rate_per_s=10`` (the last key segment, or as many
    trailing segments as needed to tell keys apart: ``0.replicas=1, 1.replicas=2``)."""
    if not point:
        return "base"
    names = _short_names(list(point))
    return ", ".join(f"{n}={_short(v)}" for n, v in zip(names, point.values()))


def check_key_paths(data: Mapping, keys: Sequence[str], where: str = "--grid") -> None:
    """Raise :class:`InputError` for keys that name no setting of the scenario.

    ``data`` is the full dump of a loaded scenario (``Scenario.to_dict()``, which holds every
    setting including defaults), so a valid path resolves in it; a path that reaches a ``null``
    optional section (``cluster.faults.spot.rate_per_hour`` with no spot section) is accepted
    and left to the scenario's own validation."""
    problems = []
    for key in keys:
        cur: Any = data
        segs = key.split(".")
        for i, seg in enumerate(segs):
            here = ".".join(segs[:i]) or "the scenario"
            if cur is None:
                break
            if isinstance(cur, Mapping):
                if seg not in cur:
                    problems.append(input_problem(
                        f"no setting '{seg}' under {here}." + suggest(seg, map(str, cur)),
                        where=where, key=key))
                    break
                cur = cur[seg]
            elif isinstance(cur, list):
                if not seg.isdigit() or int(seg) >= len(cur):
                    problems.append(input_problem(
                        f"'{here}' is a list of {len(cur)} item(s): use an index "
                        f"0..{len(cur) - 1}", where=where, key=key))
                    break
                cur = cur[int(seg)]
            else:
                problems.append(input_problem(
                    f"'{here}' holds a value ({cur!r}), not a mapping", where=where, key=key))
                break
    if problems:
        raise InputError(problems)


def run_seeds(base_seed: int, n: int) -> list[int]:
    """Seeds of the ``n`` runs of a point whose scenario seed is ``base_seed`` (see the module
    docstring)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(input_problem("the number of seeds must be an integer >= 1",
                                       where="seeds", value=n))
    out = [int(base_seed)]
    for k in range(1, n):
        ss = np.random.SeedSequence(int(base_seed), spawn_key=(k,))
        out.append(int(ss.generate_state(1, np.uint32)[0]))
    return out
