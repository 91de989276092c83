"""Capacity planning: ``plan(scenario) -> PlanResult`` answers the scenario's ``plan:`` section.

- ``max_rate``: the highest arrival rate the cluster sustains while meeting the SLOs
  (:mod:`llmsim.planning.max_rate`);
- ``min_cost``: the cheapest candidate deployment that meets the SLOs at a target rate, with
  roofline pruning before simulating (:mod:`llmsim.planning.min_cost`);
- ``pareto``: the front of output tokens/s per GPU against tokens/s per user
  (:mod:`llmsim.planning.pareto`).

"Meets the SLOs" is DistServe's goodput criterion: the mean SLO attainment over
``plan.seeds`` runs is at least ``plan.attainment_target``. Every answer carries the roofline
bound (:mod:`llmsim.planning.bounds`) next to the simulated value. docs/planning.md explains the
section and the methods.
"""
from __future__ import annotations

import sys
import types
from collections.abc import Sequence

from llmsim.errors import InputError, input_problem
from llmsim.planning.evaluate import Evaluator
from llmsim.planning.executors import make_executor
from llmsim.planning.result import PlanResult

__all__ = ["plan", "PlanResult"]


def plan(scenario, overrides: Sequence[str] = (), *, backend: str = "local",
         address: str | None = None, jobs: int | None = None,
         progress: bool | None = False) -> PlanResult:
    """Answer the ``plan:`` section of ``scenario`` (path, mapping or Scenario; ``overrides``
    are ``--set`` texts). ``backend``/``address``/``jobs`` choose the executor as for
    :func:`llmsim.sweep.sweep`; ``progress`` shows a tqdm bar on stderr (None: on a terminal).

    Raises :class:`InputError` when the scenario has no ``plan:`` section, when ``max_rate`` or
    ``min_cost`` is asked without SLO targets, or for bad candidates/rate keys."""
    from llmsim.planning.max_rate import find_max_rate
    from llmsim.planning.min_cost import find_min_cost
    from llmsim.planning.pareto import find_pareto

    with make_executor(backend, jobs=jobs, address=address) as ex:
        ev = Evaluator(scenario, overrides, ex, progress=progress)
        try:
            cfg = ev.plan
            targets = ev.base.slo.targets if ev.base.slo is not None else {}
            if (cfg.max_rate is not None or cfg.min_cost is not None) and not targets:
                raise InputError(input_problem(
                    "max_rate and min_cost need SLO targets: set slo.ttft_s, slo.tpot_s "
                    "and/or slo.e2e_s", key="slo",
                    where=str(ev.base.source_path or "scenario")))
            res = PlanResult(ev.base.name, targets, cfg.attainment_target, list(ev.seeds),
                             base_scenario=ev.base, shape=ev.shape(ev.base))
            if cfg.max_rate is not None:
                res.max_rate = find_max_rate(ev)
            if cfg.min_cost is not None:
                res.min_cost = find_min_cost(ev)
            if cfg.pareto is not None:
                res.pareto = find_pareto(ev)
        finally:
            ev.close()
    return res


class _CallableModule(types.ModuleType):
    """``import llmsim.plan`` binds the name ``plan`` on the package to this module; calling
    the module calls :func:`plan`, so ``llmsim.plan(...)`` works either way."""

    def __call__(self, *args, **kwargs):
        return plan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
