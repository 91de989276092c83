"""Load a scenario: read YAML safely, apply ``--set`` overrides, validate, check semantics.

Contract: :func:`load_scenario` returns a validated, frozen :class:`Scenario` or raises ONE
:class:`~llmsim.errors.InputError` listing every problem found: YAML syntax (with the parser's
line), duplicate keys, bad ``--set`` overrides, schema errors (unknown keys with a close-match
suggestion, wrong types, out-of-range values, unknown literals with the allowed values), and the
semantic checks of :mod:`llmsim.scenario_checks` (unknown model/hardware, tp vs heads, roles,
memory fit, missing trace files, endless workloads, ...). Each problem names the file, the line
of the offending key, the dotted key path, the value and what is allowed; a key written by
``--set`` is blamed on that override instead.

The schema (pydantic models) lives in :mod:`llmsim.scenario_schema` and is re-exported here;
docs/scenario.md documents every key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from pydantic import ValidationError

from llmsim.errors import InputError, Problem, input_problem
from llmsim.scenario_checks import Reporter, check_raw, check_scenario
from llmsim.scenario_errors import schema_problems
from llmsim.scenario_overrides import apply_overrides
from llmsim.scenario_schema import (  # noqa: F401  (re-exported)
    DTYPES, KV_CACHE_DTYPES, POLICIES, ROLES, ROUTERS, WEIGHT_DTYPES, ClusterConfig,
    CustomPrice, FaultsConfig, LinkConfig, MemoryConfig, NetworkConfig, ParallelSection,
    PoolConfig, Scenario, ScenarioDict, SchedulerConfig, SimulationConfig, SLOConfig,
    SpeculativeConfig, SpotConfig, WorkloadConfig, resolve_path_ref)
from llmsim.yaml_lines import read_yaml

__all__ = ["load_scenario", "Scenario", "PoolConfig", "ScenarioDict"]

DICT_SOURCE = "<scenario dict>"


def load_scenario(source: str | os.PathLike | Mapping, overrides: Sequence[str] = (), *,
                  base_dir: str | os.PathLike | None = None) -> Scenario:
    """Read, override, validate and check a scenario (see module docstring).

    ``source``: a YAML file path, or a mapping of scenario data (e.g. ``Scenario.to_dict()``).
    ``overrides``: ``KEY=VALUE`` strings as given to ``--set`` (dotted paths, list indices as
    numbers, VALUE parsed as YAML). ``base_dir``: directory for relative paths in a mapping
    source (default: the ScenarioDict's own, else the current directory; for files it is the
    file's directory).
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    try:
        return _load(source, overrides, base_dir)
    except RecursionError:
        where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else DICT_SOURCE
        raise InputError(Problem("the scenario is nested too deeply (no scenario key nests "
                                 "more than a few levels)", where)) from None


def _load(source, overrides, base_dir) -> Scenario:
    data, lines, where, source_path, base, problems = _read_source(source, base_dir)
    data, override_where, override_problems = apply_overrides(data, overrides)
    problems += override_problems
    if source_path is not None:
        data.setdefault("name", source_path.stem)
    rep = Reporter(where=where, lines=lines, override_where=override_where, base_dir=base)
    origin = source_path if source_path is not None else getattr(source, "source_path", None)
    context = validation_context(data, base, origin)
    try:
        scenario = Scenario.model_validate(data, context=context)
    except ValidationError as exc:
        problems += schema_problems(exc, data, Scenario, where=where, lines=lines,
                                    override_where=override_where)
        check_raw(data, rep)
        raise InputError(_ordered(problems + rep.problems, where)) from None
    check_scenario(scenario, rep)
    problems += rep.problems
    if problems:
        raise InputError(_ordered(problems, where))
    return scenario


def validation_context(data: dict, base_dir: Path, source_path: Path | None) -> dict:
    """Context handed to every validator: ``base_dir`` and ``source_path`` (kept on the
    Scenario) and ``simulation_duration_s`` (the simulated-time limit, an end condition the
    workload section may rely on; None when absent or not a positive number)."""
    sim = data.get("simulation")
    dur = sim.get("duration_s") if isinstance(sim, dict) else None
    ok = isinstance(dur, (int, float)) and not isinstance(dur, bool) and 0 < dur < float("inf")
    return {"base_dir": base_dir, "source_path": source_path,
            "simulation_duration_s": float(dur) if ok else None}


def _read_source(source, base_dir):
    """(data, lines, where, source_path, base_dir, problems) of a file or mapping source."""
    if isinstance(source, Mapping):
        base = base_dir if base_dir is not None else getattr(source, "base_dir", None)
        base = Path(base) if base is not None else Path.cwd()
        return dict(source), {}, DICT_SOURCE, None, base, []
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(input_problem(
            "a scenario is a YAML file path or a mapping of scenario data",
            value=type(source).__name__))
    path = Path(source).expanduser()
    where = str(source)
    if not path.exists():
        raise InputError(input_problem("scenario file not found", where=where))
    if not path.is_file():
        raise InputError(input_problem("scenario path is not a file", where=where))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(input_problem(f"scenario file is not UTF-8 text ({exc.reason})",
                                       where=where)) from None
    except OSError as exc:
        raise InputError(input_problem(f"cannot read scenario file: {exc.strerror}",
                                       where=where)) from None
    doc = read_yaml(text, where)
    if not isinstance(doc.data, dict):
        got = "is empty" if doc.data is None else f"holds a {_yaml_kind(doc.data)}"
        raise InputError(input_problem(
            f"a scenario must be a YAML mapping (keys such as model:, cluster:, workload:), "
            f"but the file {got}", where=where, line=doc.lines.get(())))
    problems = list(doc.problems)
    base = Path(base_dir) if base_dir is not None else path.resolve().parent
    return doc.data, doc.lines, where, path, base, problems


def _yaml_kind(v) -> str:
    if isinstance(v, list):
        return "list"
    if isinstance(v, str):
        return "string"
    return type(v).__name__


def _ordered(problems: list[Problem], where: str) -> list[Problem]:
    """File problems by line first (stable), then the rest (overrides, trace files)."""
    return sorted(problems, key=lambda p: (0 if p.where == where else 1,
                                           p.line if p.where == where and p.line else 0))
