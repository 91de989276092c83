"""Key metrics of a run as one flat row, and per-point means with confidence intervals.

:func:`flatten_summary` turns a §9 summary into ``{column: number}`` with the columns of
:data:`METRIC_COLUMNS` (a missing value is NaN, never a made-up number):

- ``requests_arrived``, ``requests_finished``, ``requests_rejected``, ``requests_unfinished``,
  ``requests_failed``, ``preemptions``;
- ``requests_per_s``, ``input_tokens_per_s``, ``output_tokens_per_s`` (throughput);
- ``{ttft,tpot,itl,e2e,queue}_s_{mean,p50,p90,p99}`` (seconds);
- ``attainment`` (fraction of arrived requests that met every SLO), ``goodput_requests_per_s``;
- ``gpu_hours``, ``usd``, ``usd_per_million_output_tokens``;
- ``gpus`` (GPUs of all pools), ``usd_per_hour`` (what the cluster costs per hour: Σ replicas ·
  GPUs per replica · USD per GPU-hour), ``utilization`` and ``kv_usage_mean`` (GPU-weighted means
  over pools);
- ``output_tokens_per_s_per_gpu``; ``tokens_per_s_per_user`` = 1 / median TPOT (the decode
  speed a typical user sees);
- ``overload`` (1.0/0.0), ``simulated_s``, ``events``.

:func:`aggregate` groups a tidy frame by point and gives, per metric ``m``, ``m_mean``,
``m_ci_low`` and ``m_ci_high``: the mean over the point's successful runs and a two-sided
Student-t confidence interval of that mean (``confidence``, default 95%; NaN with fewer than two
runs).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["METRIC_COLUMNS", "LATENCY_KEYS", "flatten_summary", "aggregate", "mean_ci",
           "storable"]

LATENCY_KEYS = ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s")
_STATS = ("mean", "p50", "p90", "p99")

METRIC_COLUMNS: tuple[str, ...] = (
    "requests_arrived", "requests_finished", "requests_rejected", "requests_unfinished",
    "requests_failed", "preemptions",
    "requests_per_s", "input_tokens_per_s", "output_tokens_per_s",
    *(f"{k}_{s}" for k in LATENCY_KEYS for s in _STATS),
    "attainment", "goodput_requests_per_s",
    "gpu_hours", "usd", "usd_per_million_output_tokens",
    "gpus", "usd_per_hour", "utilization", "kv_usage_mean",
    "output_tokens_per_s_per_gpu", "tokens_per_s_per_user",
    "overload", "simulated_s", "events",
)

NAN = float("nan")


def _num(x) -> float:
    if x is None or isinstance(x, str):
        return NAN
    if isinstance(x, bool):
        return 1.0 if x else 0.0
    try:
        return float(x)
    except (TypeError, ValueError):
        return NAN


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def flatten_summary(summary: Mapping) -> dict[str, float]:
    """The :data:`METRIC_COLUMNS` of one run (see module docstring)."""
    row: dict[str, float] = {}
    for k in ("arrived", "finished", "rejected", "unfinished", "failed"):
        row[f"requests_{k}"] = _num(_get(summary, "requests", k))
    row["preemptions"] = _num(_get(summary, "requests", "preemptions"))
    for k in ("requests_per_s", "input_tokens_per_s", "output_tokens_per_s"):
        row[k] = _num(_get(summary, "throughput", k))
    for k in LATENCY_KEYS:
        for s in _STATS:
            row[f"{k}_{s}"] = _num(_get(summary, k, s))
    row["attainment"] = _num(_get(summary, "slo", "attainment"))
    row["goodput_requests_per_s"] = _num(_get(summary, "slo", "goodput_requests_per_s"))
    for k in ("gpu_hours", "usd", "usd_per_million_output_tokens"):
        row[k] = _num(_get(summary, "cost", k))
    pools = summary.get("pools") or {}
    gpus = usd_h = 0.0
    util_w = kv_w = 0.0
    util_ok = kv_ok = True
    for p in pools.values():
        g = _num(p.get("gpus"))
        if math.isnan(g):
            g = _num(p.get("replicas")) * _num(p.get("gpus_per_replica"))
        gpus += g
        usd_h += g * _num(p.get("usd_per_gpu_hour"))
        u, kv = _num(p.get("utilization")), _num(p.get("kv_usage_mean"))
        util_ok &= not math.isnan(u)
        kv_ok &= not math.isnan(kv)
        util_w += g * (0.0 if math.isnan(u) else u)
        kv_w += g * (0.0 if math.isnan(kv) else kv)
    row["gpus"] = gpus if pools else NAN
    row["usd_per_hour"] = usd_h if pools else NAN
    row["utilization"] = util_w / gpus if pools and gpus > 0 and util_ok else NAN
    row["kv_usage_mean"] = kv_w / gpus if pools and gpus > 0 and kv_ok else NAN
    row["output_tokens_per_s_per_gpu"] = (row["output_tokens_per_s"] / gpus
                                          if pools and gpus > 0 else NAN)
    tpot = row["tpot_s_p50"]
    row["tokens_per_s_per_user"] = 1.0 / tpot if tpot > 0 else NAN
    row["overload"] = _num(summary.get("overload"))
    row["simulated_s"] = _num(summary.get("simulated_s"))
    row["events"] = _num(summary.get("events"))
    return row


#: metrics that are fractions: their interval is clipped to [0, 1] (the others, all
#: non-negative, to >= 0)
FRACTION_METRICS = frozenset({"attainment", "utilization", "kv_usage_mean"})


def mean_ci(values: Sequence[float], confidence: float = 0.95, *, lo: float = -math.inf,
            hi: float = math.inf) -> tuple[float, float, float]:
    """(mean, low, high) of the finite ``values``: Student-t interval of the mean, clipped to
    the metric's range [``lo``, ``hi``] (a fraction's interval never leaves [0, 1]); the bounds
    are NaN with fewer than two values, all three NaN with none."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if x.size == 0:
        return NAN, NAN, NAN
    m = float(x.mean())
    if x.size < 2:
        return m, NAN, NAN
    from scipy import stats
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1)
                 / math.sqrt(x.size))
    return m, max(lo, m - half), min(hi, m + half)


def aggregate(frame: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] | None = None,
              confidence: float = 0.95) -> pd.DataFrame:
    """One row per distinct ``by`` values (in first-seen order): ``runs``, ``failed``,
    ``error`` (the first error text, or None), then ``m_mean``, ``m_ci_low``, ``m_ci_high`` for
    each metric (default :data:`METRIC_COLUMNS` present in ``frame``) over the successful runs
    (``error`` null)."""
    metrics = [m for m in (metrics or METRIC_COLUMNS) if m in frame.columns]
    by = list(by)
    rows = []
    ok_mask = frame["error"].isna() if "error" in frame.columns else pd.Series(True, frame.index)
    for key, g in frame.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[ok_mask.loc[g.index]]
        errors = g.loc[~ok_mask.loc[g.index], "error"] if "error" in g else []
        row = dict(zip(by, key))
        row.update(runs=len(g), failed=int(len(g) - len(ok)),
                   error=(str(errors.iloc[0]) if len(errors) else None))
        for m in metrics:
            top = 1.0 if m in FRACTION_METRICS else math.inf
            mean, lo, hi = mean_ci(ok[m].tolist(), confidence, lo=0.0, hi=top)
            row[f"{m}_mean"], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = mean, lo, hi
        rows.append(row)
    return pd.DataFrame(rows)


def storable(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose object columns that mix types (or hold lists/dicts) are JSON
    text, so Parquet can hold them."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype != object:
            continue
        vals = [v for v in df[c] if v is not None and not (isinstance(v, float) and np.isnan(v))]
        kinds = {type(v) for v in vals}
        if len(kinds) > 1 or kinds & {list, dict, tuple}:
            df[c] = [v if v is None or isinstance(v, str) else
                     (None if isinstance(v, float) and np.isnan(v) else json.dumps(v))
                     for v in df[c]]
    return df
