"""Evaluate candidate scenarios for the planner: load, run every seed, decide pass/fail.

Contract: an :class:`Evaluator` holds the base scenario (``source`` + ``overrides``), the plan
section, the seeds (:func:`~llmsim.planning.grid.run_seeds` of the base seed), the executor and
the arrival-rate key. :meth:`Evaluator.load` applies a point (``{dotted key: value}``) on top of
the base and returns the validated Scenario or raises :class:`~llmsim.errors.InputError`.
:meth:`Evaluator.evaluate` runs each scenario with every seed (all runs of a batch go to the
executor at once) and returns one :class:`Evaluation` per scenario: the mean metrics over the
seeds, the attainment's confidence interval and ``passed`` = no run failed and the mean SLO
attainment is at least ``plan.attainment_target`` (DistServe's goodput criterion). Every
evaluation is also kept in :attr:`Evaluator.history` (for reports). A seed's run is exactly
``simulate(load_scenario(source, overrides + point overrides + ["seed=S"]))``.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from llmsim.errors import InputError, input_problem
from llmsim.planning.bounds import WorkloadShape, workload_shape
from llmsim.planning.executors import RunTask
from llmsim.planning.grid import check_key_paths, point_label, point_overrides, run_seeds
from llmsim.planning.metrics import METRIC_COLUMNS, flatten_summary, mean_ci

__all__ = ["Evaluator", "Evaluation", "RATE_KEYS", "find_rate_key"]

#: Where the arrival rate (requests/s) usually lives, in the order they are tried.
RATE_KEYS = ("workload.arrival.rate_per_s", "workload.arrival.mean_rate_per_s",
             "workload.trace.rate_per_s", "workload.trace.arrival.rate_per_s")


def _lookup(data: Any, key: str):
    cur = data
    for seg in key.split("."):
        if isinstance(cur, Mapping) and seg in cur:
            cur = cur[seg]
        elif isinstance(cur, list) and seg.isdigit() and int(seg) < len(cur):
            cur = cur[int(seg)]
        else:
            return None
    return cur


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def find_rate_key(data: Mapping, rate_key: str | None) -> tuple[str, float | None]:
    """(rate key, the scenario's rate there or None). ``rate_key`` None: the first of
    :data:`RATE_KEYS` that holds a number; raises :class:`InputError` when there is none, or
    when the given key names no setting."""
    if rate_key is not None:
        check_key_paths(data, [rate_key], where="plan.rate_key")
        v = _lookup(data, rate_key)
        if v is not None and not _is_number(v):
            raise InputError(input_problem("the rate key must name a number (requests/s)",
                                           where="plan.rate_key", key=rate_key, value=v))
        return rate_key, (float(v) if v is not None else None)
    for key in RATE_KEYS:
        v = _lookup(data, key)
        if _is_number(v):
            return key, float(v)
    raise InputError(input_problem(
        "cannot tell which setting is the arrival rate of this workload; give plan.rate_key "
        "(the dotted key of a rate in requests/s, e.g. workload.sources.0.rate_per_s)",
        where="plan.rate_key"))


@dataclass
class Evaluation:
    """One candidate scenario evaluated over the plan's seeds."""

    point: dict
    label: str
    scenario: object = field(repr=False, default=None)
    rows: list = field(default_factory=list, repr=False)
    errors: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict, repr=False)
    attainment: float = float("nan")
    attainment_ci: tuple = (float("nan"), float("nan"))
    passed: bool = False

    @property
    def error(self) -> str | None:
        return self.errors[0] if self.errors else None

    def record(self) -> dict:
        """A flat dict for tables: the point, pass/fail, attainment interval, mean metrics."""
        d = {k: (v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v))
             for k, v in self.point.items()}
        d.update(label=self.label, passed=self.passed, error=self.error,
                 attainment_ci_low=self.attainment_ci[0],
                 attainment_ci_high=self.attainment_ci[1])
        d.update({f"{k}_mean": v for k, v in self.metrics.items()})
        return d


class Evaluator:
    """See the module docstring. ``executor`` is any object with ``run(tasks, on_done)`` and
    ``jobs`` (see :mod:`llmsim.planning.executors`)."""

    def __init__(self, source, overrides: Sequence[str], executor, *,
                 progress: bool | None = False):
        from llmsim.scenario import Scenario, load_scenario
        if isinstance(source, Scenario):
            source = source.to_dict()
        self.source = source
        self.overrides = list(overrides)
        self.base = load_scenario(source, self.overrides)
        if self.base.plan is None:
            raise InputError(input_problem(
                "the scenario has no plan: section (say what to plan: max_rate, min_cost "
                "and/or pareto; see docs/planning.md)", where=_where(self.base), key="plan"))
        self.plan = self.base.plan
        self.base_data = self.base.to_dict()
        self.seeds = run_seeds(self.base.seed, self.plan.seeds)
        self.executor = executor
        self.history: list[Evaluation] = []
        self._shapes: dict[str, WorkloadShape] = {}
        self._bar = None
        self._progress = sys.stderr.isatty() if progress is None else bool(progress)
        self._rate = None

    # ------------------------------------------------------------------------------------
    @property
    def jobs(self) -> int:
        return max(1, int(getattr(self.executor, "jobs", 1) or 1))

    @property
    def batch_size(self) -> int:
        """Candidates worth evaluating at once: enough runs to fill the workers."""
        return max(1, self.jobs // len(self.seeds))

    def rate(self) -> tuple[str, float | None]:
        """(rate key, base rate) — see :func:`find_rate_key`."""
        if self._rate is None:
            self._rate = find_rate_key(self.base_data, self.plan.rate_key)
        return self._rate

    def load(self, point: Mapping[str, Any]):
        """The base scenario with ``point`` applied (raises InputError)."""
        from llmsim.scenario import load_scenario
        if not point:
            return self.base
        return load_scenario(self.source, self.overrides + point_overrides(point))

    def shape(self, scenario) -> WorkloadShape:
        """Request lengths of ``scenario``'s workload (cached per workload section)."""
        key = json.dumps(scenario.to_dict().get("workload"), sort_keys=True, default=str)
        key += f"|{scenario.seed}"
        if key not in self._shapes:
            self._shapes[key] = workload_shape(scenario)
        return self._shapes[key]

    # ------------------------------------------------------------------------------------
    def evaluate(self, items: Sequence[tuple[Mapping, object]]) -> list[Evaluation]:
        """Run each ``(point, scenario)`` with every seed; see the module docstring."""
        tasks, owner = [], []
        evals = [Evaluation(dict(p), point_label(p), scn) for p, scn in items]
        for i, ev in enumerate(evals):
            data = dict(ev.scenario.to_dict())
            bd = str(ev.scenario.base_dir)
            for s in self.seeds:
                tasks.append(RunTask(len(tasks), data, bd, s))
                owner.append(i)
        if self._progress and self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(unit="run", desc=f"plan {self.base.name}", file=sys.stderr,
                             leave=False)
        on_done = (lambda _o: self._bar.update(1)) if self._bar is not None else None
        outcomes = self.executor.run(tasks, on_done=on_done)
        for o, i in zip(outcomes, owner):
            ev = evals[i]
            if o.error:
                ev.errors.append(f"seed {o.seed}: {o.error}")
            else:
                ev.rows.append(dict(flatten_summary(o.summary), seed=o.seed))
        target = self.plan.attainment_target
        for ev in evals:
            for m in METRIC_COLUMNS:
                ev.metrics[m] = mean_ci([r[m] for r in ev.rows])[0] if ev.rows else math.nan
            mean, lo, hi = mean_ci([r["attainment"] for r in ev.rows], lo=0.0, hi=1.0)
            ev.attainment, ev.attainment_ci = mean, (lo, hi)
            ev.passed = (not ev.errors and bool(ev.rows) and math.isfinite(mean)
                         and mean >= target)
        self.history.extend(evals)
        return evals

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _where(scn) -> str:
    return str(scn.source_path) if scn.source_path is not None else "scenario"
