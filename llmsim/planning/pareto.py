"""``plan.pareto``: throughput per GPU against per-user token rate.

Contract: :func:`find_pareto` simulates every combination of ``plan.pareto.candidates``
(default: the scenario itself) at every rate of ``rates_per_s`` (default: the scenario's rate),
all in one batch, and measures for each (means over the plan's seeds):

- ``tokens_per_s_per_user`` = 1 / median TPOT (x; higher is more interactive),
- ``output_tokens_per_s_per_gpu`` (y; higher is cheaper per token),
- ``meets_slo`` (mean attainment ≥ the plan's target).

The front is the set of points no other point beats on both axes (ties kept), sorted by x.
Next to every point: ``bound_tokens_per_s_per_gpu``, the roofline's most tokens/s per GPU at
that per-user rate (:func:`llmsim.planning.bounds.tokens_per_s_per_gpu_bound`). ``curves``
holds the roofline interactivity curve of the first decoding pool of each candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmsim.errors import InputError, input_problem
from llmsim.planning.bounds import interactivity_curve, tokens_per_s_per_gpu_bound
from llmsim.planning.grid import check_key_paths, normalize_grid, point_label

__all__ = ["ParetoAnswer", "find_pareto", "pareto_mask"]


@dataclass
class ParetoAnswer:
    """``points``: one row per (candidate, rate) simulated with ``on_front``; ``front``: the
    front rows sorted by ``tokens_per_s_per_user``; ``curves``: ``{label: [(batch, x, y)]}``."""

    rate_key: str
    seeds: list
    points: pd.DataFrame = field(repr=False, default=None)
    front: pd.DataFrame = field(repr=False, default=None)
    curves: dict = field(repr=False, default_factory=dict)
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"rate_key": self.rate_key, "seeds": self.seeds,
                "front": self.front.to_dict("records"),
                "points": self.points.to_dict("records"),
                "curves": {k: [list(t) for t in v] for k, v in self.curves.items()},
                "notes": self.notes}


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point has x' ≥ x and y' ≥ y with one strictly greater (NaN points
    are never on the front)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    out = np.zeros(x.size, dtype=bool)
    for i in np.flatnonzero(ok):
        dom = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        out[i] = not dom.any()
    return out


def find_pareto(ev) -> ParetoAnswer:
    """Run the sweep with evaluator ``ev`` (:class:`~llmsim.planning.evaluate.Evaluator`)."""
    cfg = ev.plan.pareto
    key, base_rate = ev.rate()
    rates = list(cfg.rates_per_s) if cfg.rates_per_s else ([base_rate] if base_rate else [])
    if not rates:
        raise InputError(input_problem("give plan.pareto.rates_per_s (the scenario has no "
                                       f"rate at {key})", where="plan.pareto.rates_per_s"))
    cand = dict(cfg.candidates) if cfg.candidates else None
    if cand:
        check_key_paths(ev.base_data, list(cand), where="plan.pareto.candidates")
    points = normalize_grid(cand, where="plan.pareto.candidates")
    items, meta, notes = [], [], []
    curves: dict = {}
    for pt in points:
        label = point_label(pt)
        for r in rates:
            p = dict(pt, **{key: r})
            try:
                scn = ev.load(p)
            except InputError as exc:
                notes.append(f"{label} at {r:g} req/s is not a valid scenario: "
                             + "; ".join(q.message for q in exc.problems))
                continue
            items.append((p, scn))
            meta.append((label, r))
            if label not in curves:
                pool = next((q for q in scn.cluster.pools if q.role != "prefill"), None)
                if pool is not None:
                    curves[label] = interactivity_curve(scn, pool, ev.shape(scn))
    if not items:
        raise InputError(input_problem("no Pareto candidate is a valid scenario",
                                       where="plan.pareto.candidates"))
    evals = ev.evaluate(items)
    rows = []
    for (label, r), e, (p, scn) in zip(meta, evals, items):
        x = e.metrics.get("tokens_per_s_per_user", math.nan)
        y = e.metrics.get("output_tokens_per_s_per_gpu", math.nan)
        row = dict(e.record(), candidate=label, rate_per_s=r,
                   tokens_per_s_per_user=x, output_tokens_per_s_per_gpu=y,
                   meets_slo=e.passed,
                   bound_tokens_per_s_per_gpu=(tokens_per_s_per_gpu_bound(scn, ev.shape(scn), x)
                                               if math.isfinite(x) else math.nan))
        rows.append(row)
        if e.error:
            notes.append(f"{label} at {r:g} req/s: {e.error}")
    df = pd.DataFrame(rows)
    df["on_front"] = pareto_mask(df["tokens_per_s_per_user"], df["output_tokens_per_s_per_gpu"])
    front = df[df["on_front"]].sort_values("tokens_per_s_per_user").reset_index(drop=True)
    return ParetoAnswer(key, list(ev.seeds), df, front, curves, notes)
