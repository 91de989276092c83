"""``plan.max_rate``: the highest arrival rate the cluster sustains while meeting the SLOs.

Contract: :func:`find_max_rate` searches the rate (the plan's rate key) for the largest value
whose evaluation passes (mean SLO attainment over the plan's seeds ≥ the target; see
:mod:`llmsim.planning.evaluate`). It brackets first — starting at ``low_per_s`` (default: the
scenario's rate, else half the roofline capacity), doubling while the rate passes or halving
while it fails (``high_per_s`` gives a failing end to try) — then narrows the bracket
``[passing, failing]`` until ``failing − passing ≤ rel_tol · passing``. Each round evaluates up
to ``jobs // seeds`` rates at once (evenly spaced inside the bracket), so a pool of workers
shrinks the bracket faster than bisection. The answer always satisfies: the evaluation at
``rate_per_s`` passed and the one at ``fail_rate_per_s`` failed (either may be None when the
search ran out of ``max_evaluations`` before finding one). Seeds are the same at every rate, so
the rate is the only thing that changes between evaluations.

Next to the simulated rate the answer gives the roofline request capacity of the cluster and
the attainment bound from the latency floors (:mod:`llmsim.planning.bounds`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from llmsim.errors import InputError, input_problem
from llmsim.planning.bounds import cluster_bound

__all__ = ["MaxRateAnswer", "find_max_rate"]

#: Lowest rate tried, as a fraction of the starting rate, before giving up.
MIN_RATE_FRACTION = 1e-4


@dataclass
class MaxRateAnswer:
    """Result of :func:`find_max_rate`. ``rate_per_s``: highest passing rate found (None: no
    rate passed); ``fail_rate_per_s``: lowest failing rate above it (None: none failed);
    ``attainment`` / ``fail_attainment``: mean attainment there (with ``*_ci`` intervals);
    ``goodput_requests_per_s``: simulated goodput at ``rate_per_s``; ``bound_rate_per_s``:
    roofline request capacity; ``attainment_bound``: upper bound on attainment from latency
    floors; ``evaluations``: one row per rate tried."""

    rate_key: str
    target: float
    seeds: list
    rate_per_s: float | None
    fail_rate_per_s: float | None
    attainment: float | None
    attainment_ci: tuple
    fail_attainment: float | None
    fail_attainment_ci: tuple
    goodput_requests_per_s: float | None
    bound_rate_per_s: float
    attainment_bound: float
    converged: bool
    evaluations: pd.DataFrame = field(repr=False, default=None)
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "evaluations"}
        d["evaluations"] = self.evaluations.to_dict("records") if self.evaluations is not None \
            else []
        return d


def _interior(lo: float, hi: float, m: int) -> list[float]:
    return [lo + (hi - lo) * (i + 1) / (m + 1) for i in range(m)]


def find_max_rate(ev) -> MaxRateAnswer:
    """Run the search with evaluator ``ev`` (:class:`~llmsim.planning.evaluate.Evaluator`)."""
    cfg = ev.plan.max_rate
    target = ev.plan.attainment_target
    key, base_rate = ev.rate()
    base = ev.base
    shape = ev.shape(base)
    bound = cluster_bound(base, shape)
    start = cfg.low_per_s or base_rate or (0.5 * bound.rate_per_s
                                           if math.isfinite(bound.rate_per_s) else None)
    if not start or start <= 0:
        raise InputError(input_problem("cannot pick a starting rate: give "
                                       "plan.max_rate.low_per_s", where="plan.max_rate"))
    results: dict[float, object] = {}
    budget = cfg.max_evaluations
    m = ev.batch_size
    notes: list[str] = []

    def run(rates):
        nonlocal budget
        rates = [r for r in dict.fromkeys(rates) if r not in results][:max(budget, 0)]
        if not rates:
            return
        items = []
        for r in rates:
            try:
                items.append(({key: r}, ev.load({key: r})))
            except InputError as exc:
                raise InputError([input_problem(
                    f"the scenario is invalid at {key} = {r:g}: {p.message}",
                    where=p.where, line=p.line, key=p.key) for p in exc.problems]) from None
        for r, e in zip(rates, ev.evaluate(items)):
            results[r] = e
        budget -= len(rates)

    def passing():
        return [r for r, e in results.items() if e.passed]

    def failing():
        return [r for r, e in results.items() if not e.passed]

    # --- bracket ------------------------------------------------------------------------
    first = [start] + ([cfg.high_per_s] if cfg.high_per_s else [])
    run(first)
    while budget > 0:
        lo, hi = _bracket(passing(), failing())
        if lo is not None and hi is not None:
            break
        if hi is None:                      # everything passed so far: go up
            top = max(results)
            run([top * 2 ** (i + 1) for i in range(m)])
        else:                               # everything failed: go down
            bottom = min(results)
            if bottom < start * MIN_RATE_FRACTION:
                break
            run([bottom / 2 ** (i + 1) for i in range(m)])
    # --- narrow -------------------------------------------------------------------------
    while budget > 0:
        lo, hi = _bracket(passing(), failing())
        if lo is None or hi is None or hi - lo <= cfg.rel_tol * lo:
            break
        run(_interior(lo, hi, m))
    lo, hi = _bracket(passing(), failing())
    converged = lo is not None and hi is not None and hi - lo <= cfg.rel_tol * lo
    if not converged:
        notes.append(f"stopped after {cfg.max_evaluations} rates (plan.max_rate."
                     "max_evaluations) before the bracket was narrower than rel_tol")
    if lo is None:
        notes.append("no rate tried meets the SLO target"
                     + (f" (down to {min(results):.4g} req/s)" if results else ""))
    errs = [e.error for e in results.values() if e.error]
    if errs:
        notes.append(f"{len(errs)} rate(s) had failing runs, counted as not meeting the SLO; "
                     f"first: {errs[0]}")
    if lo is not None and math.isfinite(bound.rate_per_s) and lo > bound.rate_per_s:
        notes.append(f"the simulated rate is above the roofline capacity "
                     f"({bound.rate_per_s:.4g} req/s): the runs may be too short to reach a "
                     "steady state (raise workload.num_requests or duration_s)")
    e_lo = results.get(lo) if lo is not None else None
    e_hi = results.get(hi) if hi is not None else None
    rows = []
    for r in sorted(results):
        e = results[r]
        rows.append(dict(e.record(), rate_per_s=r))
    frame = pd.DataFrame(rows)
    nan2 = (math.nan, math.nan)
    return MaxRateAnswer(
        rate_key=key, target=target, seeds=list(ev.seeds), rate_per_s=lo,
        fail_rate_per_s=hi,
        attainment=e_lo.attainment if e_lo else None,
        attainment_ci=e_lo.attainment_ci if e_lo else nan2,
        fail_attainment=e_hi.attainment if e_hi else None,
        fail_attainment_ci=e_hi.attainment_ci if e_hi else nan2,
        goodput_requests_per_s=(e_lo.metrics.get("goodput_requests_per_s") if e_lo else None),
        bound_rate_per_s=bound.rate_per_s, attainment_bound=bound.attainment_bound,
        converged=converged, evaluations=frame, notes=notes)


def _bracket(passing: list[float], failing: list[float]) -> tuple[float | None, float | None]:
    """(highest passing rate below the lowest failing rate, that failing rate). When a
    passing rate lies above a failing one (noise), the bracket is taken below the lowest
    failing rate."""
    hi = min(failing) if failing else None
    below = [r for r in passing if hi is None or r < hi]
    lo = max(below) if below else None
    return lo, hi
