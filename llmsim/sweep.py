"""Sweeps: run a scenario over a grid of settings and seeds, collect one tidy table.

``sweep(scenario, grid, seeds=...)`` runs every point of ``grid`` (dotted scenario keys → values,
cartesian product; see :mod:`llmsim.planning.grid`) with several seeds and returns a
:class:`SweepResult`:

- ``frame``: one row per run — ``point`` (index), ``label``, the grid keys as columns (named by
  their dotted key), ``seed``, ``run`` (0, 1, … within the point), ``error`` (None for a run that succeeded, else the error text),
  ``wall_s`` and the key metrics of :data:`llmsim.planning.metrics.METRIC_COLUMNS` (NaN for a
  failed run);
- ``points``: one row per point with ``runs``, ``failed``, ``error`` and, per metric ``m``,
  ``m_mean``/``m_ci_low``/``m_ci_high`` (Student-t interval, ``confidence``);
- ``results``: ``{(point, seed): Result}`` for the runs kept for reports (``keep_results``).

Every point is loaded (validated) here before anything runs: a point whose scenario is invalid
gets rows with its error and is not simulated; so does a run that fails while simulating. A
failing point never stops the others. Only a sweep where *no* point is valid, or whose grid names
keys that do not exist, raises :class:`~llmsim.errors.InputError`.

Seeds: ``seeds=N`` runs each point with the N seeds of :func:`llmsim.planning.grid.run_seeds`
(the point's own seed first); a list of ints uses exactly those. Executors: ``backend="local"``
(a process pool of ``jobs`` workers; ``jobs=1`` runs in this process) or ``"ray"`` (Ray remote
tasks; ``address`` joins an existing cluster). Results do not depend on the backend.
"""
from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmsim.errors import InputError, input_problem
from llmsim.outputs import output_dir, write_table
from llmsim.planning.executors import RunOutcome, RunTask, make_executor
from llmsim.planning.grid import (check_key_paths, normalize_grid, point_label,
                                  point_overrides, run_seeds)
from llmsim.planning.metrics import METRIC_COLUMNS, aggregate, flatten_summary, storable

__all__ = ["sweep", "SweepResult", "run_frame", "prepare_points", "PreparedPoint"]


@dataclass
class PreparedPoint:
    """A grid point after loading: ``scenario`` (validated) or ``error`` (text)."""

    index: int
    values: dict
    label: str
    scenario: object = None
    error: str | None = None


@dataclass
class SweepResult:
    """What :func:`sweep` returns (see the module docstring)."""

    scenario_name: str
    grid_keys: list[str]
    seeds: list
    frame: pd.DataFrame
    points: pd.DataFrame
    results: dict = field(default_factory=dict, repr=False)
    confidence: float = 0.95
    base_scenario: object = field(default=None, repr=False)

    @property
    def failed(self) -> pd.DataFrame:
        """Rows of the runs that failed (point, label, grid keys, seed, error)."""
        cols = ["point", "label", *self.grid_keys, "seed", "error"]
        return self.frame.loc[self.frame["error"].notna(), cols]

    @property
    def ok(self) -> bool:
        """True when every run succeeded."""
        return bool(self.frame["error"].isna().all())

    def save(self, out_dir, *, fmt: str = "parquet", report: bool = True) -> dict:
        """Write ``runs.<fmt>`` (one row per run), ``points.<fmt>`` (means and intervals),
        ``sweep.json`` (scenario, grid keys, seeds, failures) and ``report.html`` into
        ``out_dir``; returns the paths by name."""
        out = output_dir(out_dir, fmt)
        paths = {}
        for name, df in (("runs", self.frame), ("points", self.points)):
            paths[name] = write_table(storable(df), out / f"{name}.{fmt}", fmt)
        meta = {"scenario": self.scenario_name, "grid_keys": self.grid_keys,
                "seeds": self.seeds, "confidence": self.confidence,
                "runs": int(len(self.frame)),
                "failed": [{"point": int(r.point), "label": r.label, "seed": int(r.seed),
                            "error": r.error} for r in self.failed.itertuples()]}
        p = out / "sweep.json"
        p.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        paths["sweep"] = p
        if report:
            from llmsim.report.sweep import write_sweep_html
            paths["report"] = write_sweep_html(self, out / "report.html")
        return paths


def _scenario_source(scenario):
    """(source for load_scenario, base Scenario) of a path, dict or Scenario."""
    from llmsim.scenario import Scenario
    if isinstance(scenario, Scenario):
        return scenario.to_dict(), scenario
    if isinstance(scenario, (str, os.PathLike, Mapping)):
        return scenario, None
    raise InputError(input_problem("a scenario is a YAML file path, a mapping of scenario "
                                   "data or a loaded Scenario", where="sweep",
                                   value=type(scenario).__name__))


def prepare_points(scenario, points: Sequence[Mapping], overrides: Sequence[str] = (),
                   *, where: str = "--grid", check_keys=None) -> tuple[object, list[PreparedPoint]]:
    """Load the base scenario (``scenario`` + ``overrides``; bad input raises) and every point
    on top of it; a point that does not load keeps its error text. Grid keys are checked against
    the base scenario first (unknown keys raise :class:`InputError`), then by ``check_keys(keys)``
    when given (a caller's own refusals), before any point is loaded."""
    from llmsim.scenario import load_scenario
    source, _ = _scenario_source(scenario)
    base = load_scenario(source, list(overrides))
    keys = list(dict.fromkeys(k for p in points for k in p))
    check_key_paths(base.to_dict(), keys, where=where)
    if check_keys is not None:
        check_keys(keys)
    prepared = []
    for i, pt in enumerate(points):
        pp = PreparedPoint(i, dict(pt), point_label(pt))
        try:
            ov = point_overrides(pt)
        except (TypeError, ValueError) as exc:
            pp.error = f"{where}: cannot use the value of {pp.label} ({exc})"
            prepared.append(pp)
            continue
        try:
            pp.scenario = base if not pt else load_scenario(source, list(overrides) + ov)
        except InputError as exc:
            pp.error = "; ".join(p.format() for p in exc.problems)
        prepared.append(pp)
    return base, prepared


def _refuse_seed_key(keys: Sequence[str]) -> None:
    """The runs table has a ``seed`` column of its own (one row per seed run): the seed is not
    a grid key."""
    if "seed" in keys:
        raise InputError(input_problem(
            "the seed cannot be a grid key: each point runs `seeds` seeds derived from the "
            "scenario's seed (--seeds N); change that with --set seed=S", where="--grid",
            key="seed"))


def _column_value(v):
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)


def run_frame(prepared: Sequence[PreparedPoint], outcomes: Sequence[RunOutcome],
              task_point: Sequence[int], grid_keys: Sequence[str],
              skipped: Sequence[tuple[int, int]] = ()) -> pd.DataFrame:
    """The tidy frame: one row per outcome (``task_point[i]`` is outcome i's point) plus one
    row per ``(point, seed)`` in ``skipped`` (points that did not load); rows in point order,
    then in the order of the point's seeds (column ``run``: 0, 1, …)."""
    rows = []
    by_index = {p.index: p for p in prepared}

    runs_of: dict[int, int] = {}

    def base_row(p: PreparedPoint, seed) -> dict:
        r = {"point": p.index, "label": p.label}
        for k in grid_keys:
            r[k] = _column_value(p.values.get(k))
        r["seed"] = seed
        r["run"] = runs_of.get(p.index, 0)
        runs_of[p.index] = r["run"] + 1
        return r

    for o, pi in zip(outcomes, task_point):
        r = base_row(by_index[pi], o.seed)
        r["error"] = o.error
        r["wall_s"] = o.wall_s
        r.update(flatten_summary(o.summary) if o.summary is not None
                 else dict.fromkeys(METRIC_COLUMNS, float("nan")))
        rows.append(r)
    for pi, seed in skipped:
        p = by_index[pi]
        r = base_row(p, seed)
        r["error"] = p.error
        r["wall_s"] = 0.0
        r.update(dict.fromkeys(METRIC_COLUMNS, float("nan")))
        rows.append(r)
    cols = ["point", "label", *grid_keys, "seed", "run", "error", "wall_s", *METRIC_COLUMNS]
    df = pd.DataFrame(rows, columns=cols)
    df = df.sort_values(["point", "run"], kind="stable").reset_index(drop=True)
    df["seed"] = df["seed"].astype("int64")
    df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    return df


def _progress_bar(total: int, progress: bool | None, desc: str):
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if not show or total <= 0:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="run", desc=desc, file=sys.stderr, leave=False)


def sweep(scenario, grid=None, *, seeds: int | Sequence[int] = 1, overrides: Sequence[str] = (),
          backend: str = "local", address: str | None = None, jobs: int | None = None,
          progress: bool | None = False, keep_results: bool | int = False,
          confidence: float = 0.95) -> SweepResult:
    """Run ``scenario`` (path, mapping or Scenario) at every point of ``grid`` with ``seeds``.

    ``grid``: ``{key: [values]}``, ``["KEY=V1,V2", ...]`` or a list of point mappings (see
    :func:`llmsim.planning.grid.normalize_grid`). ``overrides``: ``--set`` texts applied to the
    scenario before the grid. ``progress``: tqdm bar on stderr (None: when stderr is a
    terminal). ``keep_results``: keep the full Result of the first seed of each point (True) or
    of the first N points (an int) in ``SweepResult.results`` (for reports). See the module
    docstring for the rest."""
    if not 0 < confidence < 1:
        raise InputError(input_problem("must be in (0, 1)", where="confidence",
                                       value=confidence))
    points = normalize_grid(grid)
    grid_keys = list(dict.fromkeys(k for p in points for k in p))
    base, prepared = prepare_points(scenario, points, overrides, check_keys=_refuse_seed_key)
    if all(p.error for p in prepared):
        raise InputError(input_problem(
            "no grid point is a valid scenario; first error: " + prepared[0].error,
            where="--grid"))
    explicit = None
    if not isinstance(seeds, int) or isinstance(seeds, bool):
        try:
            explicit = list(seeds)
        except TypeError:
            explicit = []
        if (not explicit or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool)
                                or s < 0 for s in explicit)):
            raise InputError(input_problem("seeds must be a number of runs (integer >= 1) or a "
                                           "non-empty list of integers >= 0", where="seeds",
                                           value=seeds))
        explicit = [int(s) for s in explicit]
    n_seeds = len(explicit) if explicit else seeds
    keep_n = (len(prepared) if keep_results is True else int(keep_results or 0))

    tasks, task_point, skipped = [], [], []
    for p in prepared:
        base_seed = p.scenario.seed if p.scenario is not None else base.seed
        point_seeds = explicit or run_seeds(base_seed, n_seeds)
        if p.error:
            skipped += [(p.index, s) for s in point_seeds]
            continue
        data = dict(p.scenario.to_dict())
        bd = str(p.scenario.base_dir)
        for k, s in enumerate(point_seeds):
            keep = k == 0 and p.index < keep_n
            tasks.append(RunTask(len(tasks), data, bd, s, keep_result=keep,
                                 label=f"{p.label} (seed {s})" if n_seeds > 1 else p.label))
            task_point.append(p.index)

    bar = _progress_bar(len(tasks), progress, f"sweep {base.name}")
    try:
        with make_executor(backend, jobs=jobs, address=address) as ex:
            outcomes = ex.run(tasks, on_done=(lambda _o: bar.update(1)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    frame = run_frame(prepared, outcomes, task_point, grid_keys, skipped)
    pts = aggregate(frame, ["point", "label", *grid_keys], confidence=confidence)
    by_index = {p.index: p for p in prepared}
    results = {}
    for o, pi in zip(outcomes, task_point):
        if o.result is not None:
            o.result.scenario = by_index[pi].scenario
            results[(pi, o.seed)] = o.result
    return SweepResult(base.name, grid_keys, explicit or run_seeds(base.seed, n_seeds), frame,
                       pts, results, confidence, base)


class _CallableModule(types.ModuleType):
    """``import llmsim.sweep`` binds the name ``sweep`` on the package to this module; calling
    the module calls :func:`sweep`, so ``llmsim.sweep(...)`` works either way."""

    def __call__(self, *args, **kwargs):
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
