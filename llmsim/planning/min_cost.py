"""``plan.min_cost``: the cheapest deployment that meets the SLOs at a target rate.

Contract: :func:`find_min_cost` builds one candidate per combination of
``plan.min_cost.candidates`` (dotted scenario keys → values: hardware, ``parallel.tp``/``pp``,
``replicas``, ``scheduler.policy``, ``price``, pool roles …), each with the plan's rate key set to
the target rate, and then:

1. drops candidates that are not valid scenarios (weights that do not fit, tp that does not
   divide the heads, …) with the loader's message (status ``invalid``);
2. prunes, without simulating, candidates the roofline shows cannot work (status ``pruned``):
   the latency floors make the attainment bound fall below the target, or the roofline request
   capacity times ``1 + prune_margin`` is below the target rate (the capacity is an estimate,
   hence the margin);
3. simulates the rest cheapest first (USD per hour = Σ GPUs × USD per GPU-hour of each pool;
   ties: fewer GPUs, then grid order), ``jobs // seeds`` candidates at a time, and stops at the
   first batch that holds a candidate that passes; the cheapest passing one is the answer.
   Candidates never simulated because a cheaper one passed get status ``skipped``.

Every candidate simulated is judged like the max-rate search judges a rate (mean attainment
over the seeds ≥ target, no failed run). Next to the answer: its roofline capacity, and the
roofline's own answer — the price of the cheapest candidate that the roofline alone (no margin)
does not rule out.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from llmsim.errors import InputError, input_problem
from llmsim.planning.bounds import cluster_bound
from llmsim.planning.grid import check_key_paths, normalize_grid, point_label

__all__ = ["MinCostAnswer", "Candidate", "find_min_cost"]


@dataclass
class Candidate:
    """One deployment considered. ``status``: invalid | pruned | passed | failed | skipped."""

    index: int
    point: dict
    label: str
    scenario: object = field(repr=False, default=None)
    usd_per_hour: float = math.nan
    gpus: int = 0
    bound_rate_per_s: float = math.nan
    attainment_bound: float = math.nan
    status: str = "skipped"
    reason: str = ""
    evaluation: object = field(repr=False, default=None)

    def record(self) -> dict:
        d = {k: (v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v))
             for k, v in self.point.items()}
        d.update(candidate=self.index, label=self.label, usd_per_hour=self.usd_per_hour,
                 gpus=self.gpus, bound_rate_per_s=self.bound_rate_per_s,
                 attainment_bound=self.attainment_bound, status=self.status,
                 reason=self.reason)
        e = self.evaluation
        for m in ("attainment", "requests_per_s", "goodput_requests_per_s", "ttft_s_p99",
                  "tpot_s_p99", "e2e_s_p99", "usd_per_million_output_tokens", "utilization"):
            d[m] = e.metrics.get(m, math.nan) if e is not None else math.nan
        d["attainment_ci_low"] = e.attainment_ci[0] if e is not None else math.nan
        d["attainment_ci_high"] = e.attainment_ci[1] if e is not None else math.nan
        return d


@dataclass
class MinCostAnswer:
    """Result of :func:`find_min_cost`. ``best``: the cheapest passing :class:`Candidate`
    (None when none passed); ``roofline_usd_per_hour`` / ``roofline_label``: the cheapest
    candidate the roofline alone does not rule out; ``candidates``: one row per candidate."""

    target_rate_per_s: float
    rate_key: str
    target: float
    seeds: list
    best: Candidate | None
    roofline_usd_per_hour: float | None
    roofline_label: str | None
    simulated: int
    candidates: pd.DataFrame = field(repr=False, default=None)
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        b = self.best
        best = None if b is None else dict(b.record(), point=b.point)
        return {"target_rate_per_s": self.target_rate_per_s, "rate_key": self.rate_key,
                "attainment_target": self.target, "seeds": self.seeds, "best": best,
                "roofline_usd_per_hour": self.roofline_usd_per_hour,
                "roofline_label": self.roofline_label, "simulated": self.simulated,
                "candidates": self.candidates.to_dict("records"), "notes": self.notes}


def _floor_reason(bound, target: float) -> str:
    worst = max(bound.floor_miss.items(), key=lambda kv: kv[1]) if bound.floor_miss else None
    what = f" (worst: {worst[0]}, {100 * worst[1]:.1f}% of requests)" if worst else ""
    return (f"latency floors: at most {100 * bound.attainment_bound:.1f}% of requests can meet "
            f"the SLO even on an idle replica{what}, below the {100 * target:.0f}% target")


def find_min_cost(ev) -> MinCostAnswer:
    """Run the search with evaluator ``ev`` (:class:`~llmsim.planning.evaluate.Evaluator`)."""
    cfg = ev.plan.min_cost
    target = ev.plan.attainment_target
    key, base_rate = ev.rate()
    rate = cfg.target_rate_per_s or base_rate
    if rate is None:
        raise InputError(input_problem("give plan.min_cost.target_rate_per_s (the scenario "
                                       "has no rate at " + key + ")",
                                       where="plan.min_cost.target_rate_per_s"))
    check_key_paths(ev.base_data, list(cfg.candidates), where="plan.min_cost.candidates")
    points = normalize_grid(dict(cfg.candidates), where="plan.min_cost.candidates")
    cands: list[Candidate] = []
    for i, pt in enumerate(points):
        c = Candidate(i, dict(pt), point_label(pt))
        cands.append(c)
        try:
            c.scenario = ev.load(dict(pt, **{key: rate}))
        except InputError as exc:
            c.status, c.reason = "invalid", "; ".join(p.message for p in exc.problems)
            continue
        b = cluster_bound(c.scenario, ev.shape(c.scenario))
        c.usd_per_hour, c.gpus = b.usd_per_hour, b.gpus
        c.bound_rate_per_s, c.attainment_bound = b.rate_per_s, b.attainment_bound
        if b.attainment_bound < target:
            c.status, c.reason = "pruned", _floor_reason(b, target)
        elif b.rate_per_s * (1 + cfg.prune_margin) < rate:
            c.status, c.reason = "pruned", (
                f"roofline capacity {b.rate_per_s:.4g} req/s (+{100 * cfg.prune_margin:.0f}% "
                f"margin) is below the target {rate:.4g} req/s")
    if all(c.status == "invalid" for c in cands):
        raise InputError(input_problem(
            "no candidate is a valid scenario; first: " + cands[0].reason,
            where="plan.min_cost.candidates"))
    order = sorted((c for c in cands if c.status != "invalid"),
                   key=lambda c: (c.usd_per_hour, c.gpus, c.index))
    roof = next((c for c in order if c.attainment_bound >= target
                 and c.bound_rate_per_s >= rate), None)
    todo = [c for c in order if c.status != "pruned"]
    best, simulated = None, 0
    notes: list[str] = []
    m = ev.batch_size
    while todo and best is None:
        if simulated >= cfg.max_simulations:
            notes.append(f"stopped after {simulated} simulated candidates "
                         "(plan.min_cost.max_simulations)")
            break
        batch, todo = todo[:min(m, cfg.max_simulations - simulated)], \
            todo[min(m, cfg.max_simulations - simulated):]
        evals = ev.evaluate([(dict(c.point, **{key: rate}), c.scenario) for c in batch])
        simulated += len(batch)
        for c, e in zip(batch, evals):
            c.evaluation = e
            c.status = "passed" if e.passed else "failed"
            if e.error:
                c.reason = e.error
            elif not e.passed:
                c.reason = f"attainment {100 * e.attainment:.1f}% < {100 * target:.0f}%"
        best = next((c for c in batch if c.status == "passed"), None)
    for c in todo:
        c.status = "skipped"
        c.reason = ("a cheaper candidate meets the SLO" if best is not None
                    else "not simulated (max_simulations)")
    if best is None and not notes:
        notes.append("no candidate meets the SLO at the target rate")
    if best is not None and roof is not None and roof.usd_per_hour < best.usd_per_hour:
        notes.append(f"the roofline allows {roof.label} at ${roof.usd_per_hour:.4g}/h; the "
                     "simulation needs more (queueing, batching interference)")
    frame = pd.DataFrame([c.record() for c in cands])
    return MinCostAnswer(rate, key, target, list(ev.seeds), best,
                         roof.usd_per_hour if roof else None, roof.label if roof else None,
                         simulated, frame, notes)
