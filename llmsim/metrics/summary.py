"""Run summary: derived per-request latencies, SLO attainment, goodput, cost (DESIGN §8–§9).

Two entry points:

- :func:`add_derived_columns` turns the raw timestamps of the request table into ``ttft_s``,
  ``tpot_s``, ``e2e_s``, ``queue_s`` and ``slo_met`` (vectorized; a million rows in a fraction
  of a second).
- :func:`summarize` builds the JSON-ready summary dict of §9 from the request table, the pooled
  inter-token-latency histogram and the per-pool accounting the engine keeps.

Definitions (vLLM serving-benchmark conventions):

- TTFT = first_token_s − arrival_s; E2E = finish_s − arrival_s; queue = first_scheduled_s −
  arrival_s; TPOT = (E2E − TTFT) / (num_output_tokens − 1), NaN when a request produced at most
  one output token.
- A request meets its SLO when it *finished* and every defined target holds (TTFT ≤ target,
  TPOT ≤ target unless it has ≤ 1 output token, E2E ≤ target). Rejected, unfinished and failed
  requests never meet it.
- Attainment = requests meeting the SLO / requests arrived. Goodput = requests meeting the SLO /
  duration.
- Duration (the denominator of every rate): from the first arrival to the last finish of a
  finished request; when no request finished (or that span is not positive), ``simulated_s``.
  The summary reports it as ``throughput.duration_s`` and names the choice in
  ``throughput.window``.
- Throughput counts finished requests and their tokens only (work delivered to users).
- Latency statistics are over finished requests only. When that hides most of the story (many
  arrivals rejected or left unserved, or queueing delay growing through the run), the summary
  sets ``overload: True`` and says so in ``notes``.

This module never imports the engine; it only reads DataFrames, arrays and plain dicts.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from llmsim.errors import InputError, input_problem, suggest
from llmsim.metrics.stats import empty_stats, latency_stats, weighted_stats

#: Request statuses (the terminal states of §8).
STATUSES: tuple[str, ...] = ("finished", "rejected", "unfinished", "failed")

#: SLO target keys, in seconds. ``None`` = no target.
SLO_KEYS: tuple[str, ...] = ("ttft_s", "tpot_s", "e2e_s")

#: Latency columns summarized as {mean, p50, p90, p99} over finished requests.
LATENCY_COLUMNS: tuple[str, ...] = ("ttft_s", "tpot_s", "e2e_s", "queue_s")

#: Columns :func:`add_derived_columns` reads.
RAW_COLUMNS: tuple[str, ...] = ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
                                "num_output_tokens", "status")

#: Columns :func:`summarize` reads in addition to :data:`RAW_COLUMNS`.
SUMMARY_COLUMNS: tuple[str, ...] = RAW_COLUMNS + ("num_prompt_tokens", "num_preemptions")

#: Keys every pool dict must carry (others are passed through to ``summary['pools']``).
POOL_REQUIRED_KEYS: tuple[str, ...] = ("name", "replicas", "gpus_per_replica", "billed_replica_s",
                                       "busy_replica_s", "usd_per_gpu_hour")

#: Overload rule 1: rejected + never-scheduled-unfinished requests at or above this fraction of
#: arrivals.
OVERLOAD_UNSERVED_FRACTION = 0.05
#: ... and at least this many requests (so that one rejection in a handful is not "overload").
OVERLOAD_MIN_UNSERVED = 10
#: Overload rule 2: unfinished requests (running or waiting at the end) at or above this fraction.
OVERLOAD_UNFINISHED_FRACTION = 0.25
#: Overload rule 3: the median queueing delay of the last fifth of arrivals exceeds that of the
#: second fifth by at least max(this many seconds, the second fifth's median), i.e. it at least
#: doubled and grew by a second or more: the queue was growing, not stationary.
OVERLOAD_QUEUE_GROWTH_S = 1.0
#: Rule 3 needs at least this many scheduled requests to judge a trend.
OVERLOAD_MIN_SAMPLES = 50

_SCHEMA_KEYS = ("scenario", "seed", "simulated_s", "wall_s", "events", "requests", "throughput",
                "ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s", "slo", "cost", "pools",
                "classes", "overload", "notes")


# --------------------------------------------------------------------------------------------
# SLO targets
# --------------------------------------------------------------------------------------------

def _slo_mapping(slo: Any, where: str, *, only_set: bool) -> dict:
    """A plain dict from a Mapping, a pydantic model or an object with SLO attributes."""
    if slo is None:
        return {}
    if isinstance(slo, Mapping):
        return dict(slo)
    if hasattr(slo, "model_dump"):
        return dict(slo.model_dump(exclude_unset=only_set))
    if any(hasattr(slo, k) for k in SLO_KEYS):
        return {k: getattr(slo, k) for k in SLO_KEYS if hasattr(slo, k)}
    raise InputError(input_problem(
        "SLO must be a mapping with keys " + ", ".join(SLO_KEYS) + " (seconds or null)",
        where=where, value=slo))


def _check_targets(raw: dict, where: str, key_prefix: str) -> dict:
    """Validate target values; returns only the keys present (value float or None)."""
    out: dict[str, float | None] = {}
    problems = []
    for k, v in raw.items():
        if k not in SLO_KEYS:
            problems.append(input_problem(
                f"unknown SLO target; allowed: {', '.join(SLO_KEYS)}.{suggest(str(k), SLO_KEYS)}",
                where=where, key=f"{key_prefix}{k}", value=k))
            continue
        if v is None:
            out[k] = None
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            problems.append(input_problem("SLO target must be a number of seconds > 0 or null",
                                          where=where, key=f"{key_prefix}{k}", value=v))
            continue
        fv = float(v)
        if not math.isfinite(fv) or fv <= 0:
            problems.append(input_problem("SLO target must be a finite number of seconds > 0",
                                          where=where, key=f"{key_prefix}{k}", value=v))
            continue
        out[k] = fv
    if problems:
        raise InputError(problems)
    return out


def normalize_slo(slo: Any, where: str = "slo") -> dict:
    """``{ttft_s, tpot_s, e2e_s}`` (float seconds or ``None``) from a dict/pydantic model/None.

    Raises :class:`InputError` for unknown keys or targets that are not positive numbers.
    """
    got = _check_targets(_slo_mapping(slo, where, only_set=False), where, "slo.")
    return {k: got.get(k) for k in SLO_KEYS}


def normalize_class_slo(class_slo: Any, base: dict, where: str = "class_slo") -> dict:
    """Effective targets per class: ``{tenant: {ttft_s, tpot_s, e2e_s}}``.

    A class's entry overrides the global target key by key: a key it names (even with ``None``,
    meaning "no target for this class") replaces the global one; keys it omits inherit it.
    """
    if class_slo is None:
        return {}
    if not isinstance(class_slo, Mapping):
        raise InputError(input_problem("per-class SLOs must be a mapping {class: {ttft_s, ...}}",
                                       where=where, value=class_slo))
    out = {}
    for tenant, spec in class_slo.items():
        raw = _slo_mapping(spec, where, only_set=True)
        got = _check_targets(raw, where, f"{tenant}.")
        out[tenant] = {k: (got[k] if k in got else base.get(k)) for k in SLO_KEYS}
    return out


# --------------------------------------------------------------------------------------------
# Derived columns
# --------------------------------------------------------------------------------------------

def _require_columns(df: pd.DataFrame, columns: Iterable[str], where: str = "requests") -> None:
    if not isinstance(df, pd.DataFrame):
        raise InputError(input_problem("expected a pandas DataFrame of requests", where=where,
                                       value=type(df).__name__))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError([input_problem(f"required column is missing{suggest(c, df.columns)}",
                                        where=where, key=c) for c in missing])


def _float_col(df: pd.DataFrame, col: str) -> np.ndarray:
    """Column as float64 (None/NA → NaN); InputError when it is not numeric."""
    s = df[col]
    try:
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
        row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else None
        raise InputError(input_problem(
            "column must be numeric (seconds or token counts)" + _row_text(df, row),
            where="requests", key=col, value=s.iloc[row] if row is not None else s.dtype)
        ) from None


def _row_text(df: pd.DataFrame, row: int | None) -> str:
    """' (first at row 3, request_id 17)' for messages about a DataFrame row position."""
    if row is None:
        return ""
    rid = ""
    if "request_id" in df.columns:
        value = df["request_id"].iloc[row]
        rid = f", request_id {value.item() if isinstance(value, np.generic) else value!r}"
    return f" (first at row {row}{rid})"


def _status_masks(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean mask per status; InputError naming the first row with an unknown status."""
    status = df["status"]
    masks = {st: (status == st).to_numpy(dtype=bool, na_value=False) for st in STATUSES}
    known = np.zeros(len(df), dtype=bool)
    for m in masks.values():
        known |= m
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        raise InputError(input_problem(
            f"unknown request status; allowed: {', '.join(STATUSES)}" + _row_text(df, row),
            where="requests", key="status", value=status.iloc[row]))
    return masks


def _target_array(key: str, base: dict, per_class: dict,
                  tenant: pd.Series | None) -> np.ndarray | float:
    """Target per row for ``key`` (NaN = no target); a scalar when no class overrides it."""
    g = base.get(key)
    gval = np.nan if g is None else float(g)
    if not per_class or tenant is None:
        return gval
    eff = {t: (np.nan if spec[key] is None else spec[key]) for t, spec in per_class.items()}
    if all((np.isnan(v) and np.isnan(gval)) or v == gval for v in eff.values()):
        return gval
    in_cls = tenant.isin(list(eff)).to_numpy(dtype=bool, na_value=False)
    mapped = tenant.map(eff).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(in_cls, mapped, gval)


def add_derived_columns(df: pd.DataFrame, slo: Any = None, class_slo: Any = None) -> pd.DataFrame:
    """Return a copy of the request table with ``ttft_s, tpot_s, e2e_s, queue_s, slo_met`` set.

    ``df`` needs the raw columns ``arrival_s, first_scheduled_s, first_token_s, finish_s,
    num_output_tokens, status`` (times NaN/None where the event did not happen); existing derived
    columns are overwritten, the input frame is not modified. ``slo`` is a dict (or pydantic
    model) with optional ``ttft_s, tpot_s, e2e_s`` targets in seconds (``None`` = no target);
    ``class_slo`` maps a ``tenant`` value to targets that override the global ones key by key
    (needs a ``tenant`` column). Definitions are in the module docstring.

    Raises :class:`InputError` for missing columns, non-numeric times, unknown statuses and bad
    SLO targets.
    """
    _require_columns(df, RAW_COLUMNS)
    base = normalize_slo(slo)
    per_class = normalize_class_slo(class_slo, base)
    if per_class and "tenant" not in df.columns:
        raise InputError(input_problem(
            "per-class SLOs were given but the request table has no 'tenant' column",
            where="requests", key="tenant"))
    masks = _status_masks(df)
    arrival = _float_col(df, "arrival_s")
    sched = _float_col(df, "first_scheduled_s")
    first = _float_col(df, "first_token_s")
    finish = _float_col(df, "finish_s")
    n_out = _float_col(df, "num_output_tokens")

    ttft = first - arrival
    e2e = finish - arrival
    queue = sched - arrival
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(n_out > 1, (e2e - ttft) / (n_out - 1), np.nan)

    tenant = df["tenant"] if (per_class and "tenant" in df.columns) else None
    met = masks["finished"].copy()
    for key, value in (("ttft_s", ttft), ("e2e_s", e2e), ("tpot_s", tpot)):
        tgt = _target_array(key, base, per_class, tenant)
        if np.isscalar(tgt) and np.isnan(tgt):
            continue
        with np.errstate(invalid="ignore"):
            cond = np.isnan(tgt) | (value <= tgt)
        if key == "tpot_s":
            cond |= ~(n_out > 1)      # one output token: no inter-token time to judge
        met &= cond

    out = df.copy(deep=False)
    out["ttft_s"] = ttft
    out["tpot_s"] = tpot
    out["e2e_s"] = e2e
    out["queue_s"] = queue
    out["slo_met"] = met
    return out


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

def to_jsonable(obj: Any) -> Any:
    """Recursively convert to JSON-native types: numpy scalars/arrays → Python, NaN/±inf → None,
    tuples/sets → lists, dict keys → str, paths → str; any other object → ``str(obj)``."""
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
        return [to_jsonable(v) for v in (obj.tolist() if hasattr(obj, "tolist") else obj)]
    if isinstance(obj, PurePath):
        return str(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def _rate(count: float, duration_s: float | None) -> float | None:
    if duration_s is None or not duration_s > 0:
        return None
    return float(count) / duration_s


def _duration(arrival: np.ndarray, finish: np.ndarray, finished: np.ndarray,
              simulated_s: float) -> tuple[float | None, str]:
    """(duration_s, window) used as the denominator of every rate (see module docstring)."""
    if finished.any() and np.isfinite(arrival).any():
        last_finish = np.nanmax(np.where(finished, finish, np.nan))
        span = float(last_finish - np.nanmin(arrival))
        if math.isfinite(span) and span > 0:
            return span, "first_arrival_to_last_finish"
    sim = float(simulated_s) if simulated_s is not None else float("nan")
    return (sim if math.isfinite(sim) and sim > 0 else None), "simulated_s"


def _reason_text(df: pd.DataFrame, mask: np.ndarray, top: int = 3) -> str:
    if "reason" not in df.columns or not mask.any():
        return ""
    vc = df.loc[mask, "reason"].fillna("no reason given").astype(str).value_counts()
    parts = [f"{r}: {int(c):,}" for r, c in vc.head(top).items()]
    if len(vc) > top:
        parts.append(f"{len(vc) - top} other reasons: {int(vc.iloc[top:].sum()):,}")
    return " (" + "; ".join(parts) + ")"


def _n(count: int, noun: str) -> str:
    """'1 request' / '3 requests'."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def _queue_growth(arrival: np.ndarray, queue: np.ndarray) -> tuple[float, float] | None:
    """(median queue_s of the 2nd fifth, of the last fifth) of scheduled requests by arrival."""
    ok = ~np.isnan(queue) & ~np.isnan(arrival)
    if ok.sum() < OVERLOAD_MIN_SAMPLES:
        return None
    order = np.argsort(arrival[ok], kind="stable")
    q = queue[ok][order]
    fifths = np.array_split(q, 5)
    return float(np.median(fifths[1])), float(np.median(fifths[-1]))


def _overload(df, masks, arrival, queue, sched, counts, notes: list[str]) -> bool:
    """Apply the overload rules (module constants), append explanatory notes, return the flag."""
    never_sched = int((masks["unfinished"] & np.isnan(sched)).sum())
    return overload_verdict(counts, never_sched, _queue_growth(arrival, queue), notes)


def overload_verdict(counts: Mapping, never_sched: int, growth, notes: list[str]) -> bool:
    """The overload rules on run counts, the number of unfinished requests never scheduled and
    ``growth`` = (median queueing delay of the 2nd fifth of arrivals, of the last fifth) or
    None; appends the explanatory note and returns the flag. Shared by the in-memory and the
    streaming summaries."""
    n = counts["arrived"]
    if n == 0:
        return False
    reasons = []
    unserved = counts["rejected"] + never_sched
    if unserved >= OVERLOAD_MIN_UNSERVED and unserved / n >= OVERLOAD_UNSERVED_FRACTION:
        reasons.append(f"{unserved:,} of {n:,} arrivals ({_pct(unserved / n)}) were never "
                       f"served ({counts['rejected']:,} rejected, {never_sched:,} still waiting "
                       f"at the end)")
    if (counts["unfinished"] >= OVERLOAD_MIN_UNSERVED
            and counts["unfinished"] / n >= OVERLOAD_UNFINISHED_FRACTION):
        reasons.append(f"{counts['unfinished']:,} of {n:,} arrivals "
                       f"({_pct(counts['unfinished'] / n)})"
                       " were unfinished when the simulation ended")
    if growth is not None:
        early, late = growth
        if late - early >= max(OVERLOAD_QUEUE_GROWTH_S, early):
            reasons.append(f"the queue kept growing: median queueing delay rose from "
                           f"{early:.3g} s (2nd fifth of arrivals) to {late:.3g} s (last fifth)")
    if not reasons:
        return False
    notes.append("OVERLOAD: " + "; ".join(reasons) + ". The offered load exceeds what this "
                 "deployment sustains: latency percentiles cover finished requests only and "
                 "understate what users saw.")
    return True


def _pools_summary(pools: Sequence[Mapping], out_tokens: float, notes: list[str]
                   ) -> tuple[dict, dict]:
    """(cost dict, pools dict) from the engine's per-pool accounting."""
    if pools is None:
        pools = []
    problems = []
    out: dict[str, dict] = {}
    gpu_hours_total = 0.0
    usd_total: float | None = 0.0
    for i, p in enumerate(pools):
        where = f"pools[{i}]"
        if not isinstance(p, Mapping):
            problems.append(input_problem("pool accounting must be a dict", where=where, value=p))
            continue
        missing = [k for k in POOL_REQUIRED_KEYS if k not in p]
        if missing:
            problems += [input_problem("required key is missing", where=where, key=k)
                         for k in missing]
            continue
        name = str(p["name"])
        if name in out:
            problems.append(input_problem("duplicate pool name", where=where, key="name",
                                          value=name))
            continue
        num_keys = ("replicas", "gpus_per_replica", "billed_replica_s", "busy_replica_s")
        bad = [k for k in num_keys
               if isinstance(p[k], bool) or not isinstance(p[k], (int, float, np.number))
               or not p[k] >= 0]
        price = p["usd_per_gpu_hour"]
        if price is not None and (isinstance(price, bool)
                                  or not isinstance(price, (int, float, np.number))
                                  or not price >= 0):
            bad.append("usd_per_gpu_hour")
        if bad:
            problems += [input_problem("must be a number >= 0", where=where, key=k, value=p[k])
                         for k in bad]
            continue
        billed = float(p["billed_replica_s"])
        busy = float(p["busy_replica_s"])
        gpr = float(p["gpus_per_replica"])
        gpu_hours = billed * gpr / 3600.0
        usd = None if price is None else gpu_hours * float(price)
        gpu_hours_total += gpu_hours
        if usd is None:
            usd_total = None
            notes.append(f"pool '{name}' has no price: cost.usd is unknown")
        elif usd_total is not None:
            usd_total += usd
        entry = {
            "replicas": p["replicas"],
            "gpus": p["replicas"] * p["gpus_per_replica"],
            "utilization": (busy / billed) if billed > 0 else None,
            "kv_usage_mean": p.get("kv_usage_mean"),
            "gpu_hours": gpu_hours,
            "usd": usd,
        }
        for k, v in p.items():
            if k != "name" and k not in entry:
                entry[k] = v
        out[name] = entry
    if problems:
        raise InputError(problems)
    cost = {
        "gpu_hours": gpu_hours_total,
        "usd": usd_total,
        "usd_per_million_output_tokens": (usd_total / out_tokens * 1e6
                                          if usd_total is not None and out_tokens > 0 else None),
    }
    return cost, out


def _classes_summary(df: pd.DataFrame, masks, met: np.ndarray, duration_s,
                     per_class: dict, base: dict) -> dict | None:
    """Per-tenant counts, attainment and latency statistics (None when no tenant is set)."""
    tenant = df["tenant"]
    codes, uniques = pd.factorize(tenant, use_na_sentinel=True)
    if len(uniques) == 0:
        return None
    labels = [str(u) for u in uniques]
    if (codes < 0).any():
        codes = np.where(codes < 0, len(labels), codes)
        labels.append("(none)")
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(labels) + 1))
    fin = masks["finished"]
    lat = {c: df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in ("ttft_s", "tpot_s",
                                                                          "e2e_s")}
    out = {}
    for g in sorted(range(len(labels)), key=lambda i: labels[i]):
        idx = order[bounds[g]:bounds[g + 1]]
        f_idx = idx[fin[idx]]
        count = int(idx.size)
        n_met = int(met[idx].sum())
        raw = uniques[g] if g < len(uniques) else None
        entry = {
            "count": count,
            "finished": int(f_idx.size),
            "attainment": n_met / count if count else None,
            "goodput_requests_per_s": _rate(n_met, duration_s),
            "slo_targets": per_class.get(raw, base),
        }
        for c, arr in lat.items():
            entry[c] = latency_stats(arr[f_idx]) if f_idx.size else empty_stats()
        out[labels[g]] = entry
    return out


def summarize(requests: pd.DataFrame, *, itl_gaps_s, itl_weights, pools: Sequence[Mapping],
              slo: Any, simulated_s: float, wall_s: float, events: int, scenario: str,
              seed: Any, class_slo: Any = None, notes: Iterable[str] = (),
              extra: Mapping | None = None) -> dict:
    """The §9 run summary as a JSON-ready dict (no numpy types; NaN/inf → ``None``).

    Keys: ``scenario, seed, simulated_s, wall_s, events``; ``requests`` {arrived, finished,
    rejected, unfinished, failed, preemptions}; ``throughput`` {requests_per_s,
    input_tokens_per_s, output_tokens_per_s, duration_s, window}; ``ttft_s, tpot_s, itl_s, e2e_s,
    queue_s`` each {mean, p50, p90, p99} in seconds over finished requests (ITL from the weighted
    histogram ``itl_gaps_s``/``itl_weights``); ``slo`` {targets, attainment,
    goodput_requests_per_s} (+ ``class_targets`` with per-class SLOs); ``cost`` {gpu_hours, usd,
    usd_per_million_output_tokens}; ``pools`` {name: {replicas, gpus, utilization,
    kv_usage_mean, gpu_hours, usd, ...engine keys passed through}}; ``classes`` {tenant: {count,
    finished, attainment, goodput_requests_per_s, slo_targets, ttft_s, tpot_s, e2e_s}} when the
    table has a ``tenant`` column with values; ``overload`` (bool); ``notes`` (list of str: the
    caller's ``notes`` first, then what this function detected). ``extra`` adds top-level keys
    (a key that collides with the schema is a ValueError).

    The derived latency/SLO columns are always recomputed from the raw timestamps with the
    ``slo``/``class_slo`` given here, so the summary agrees with its own ``slo.targets``.
    Definitions (duration, attainment, goodput, overload) are in the module docstring.
    """
    _require_columns(requests, SUMMARY_COLUMNS)
    base = normalize_slo(slo)
    per_class = normalize_class_slo(class_slo, base)
    df = add_derived_columns(requests, base, class_slo)
    masks = _status_masks(df)
    fin = masks["finished"]
    n = len(df)
    counts = {"arrived": n}
    for st in STATUSES:
        counts[st] = int(masks[st].sum())
    preempt = _float_col(df, "num_preemptions")
    counts["preemptions"] = int(np.nansum(preempt))

    arrival = _float_col(df, "arrival_s")
    finish = _float_col(df, "finish_s")
    sched = _float_col(df, "first_scheduled_s")
    queue = df["queue_s"].to_numpy(dtype=np.float64)
    duration_s, window = _duration(arrival, finish, fin, simulated_s)

    in_tokens = float(np.nansum(_float_col(df, "num_prompt_tokens")[fin]))
    out_tokens = float(np.nansum(_float_col(df, "num_output_tokens")[fin]))
    throughput = {
        "requests_per_s": _rate(counts["finished"], duration_s),
        "input_tokens_per_s": _rate(in_tokens, duration_s),
        "output_tokens_per_s": _rate(out_tokens, duration_s),
        "duration_s": duration_s,
        "window": window,
    }

    lat = {c: latency_stats(df[c].to_numpy(dtype=np.float64)[fin]) for c in LATENCY_COLUMNS}
    if itl_gaps_s is None or itl_weights is None:
        itl = empty_stats()
    else:
        itl = weighted_stats(itl_gaps_s, itl_weights)

    met = df["slo_met"].to_numpy(dtype=bool)
    n_met = int(met.sum())
    slo_out = {
        "targets": base,
        "attainment": n_met / n if n else None,
        "goodput_requests_per_s": _rate(n_met, duration_s),
    }
    if per_class:
        slo_out["class_targets"] = per_class

    all_notes = [str(s) for s in notes]
    cost, pools_out = _pools_summary(pools, out_tokens, all_notes)

    if counts["unfinished"]:
        never = int((masks["unfinished"] & np.isnan(sched)).sum())
        all_notes.append(
            f"{_n(counts['unfinished'], 'request')} still running or waiting when the simulation "
            f"ended at {float(simulated_s):.6g} s are counted as unfinished ({never:,} of them "
            f"were never scheduled)")
    if counts["rejected"]:
        all_notes.append(f"{_n(counts['rejected'], 'request')} rejected"
                         + _reason_text(df, masks["rejected"]))
    if counts["failed"]:
        all_notes.append(f"{_n(counts['failed'], 'request')} failed"
                         + _reason_text(df, masks["failed"]))
    if n and not counts["finished"]:
        all_notes.append("no request finished: latency statistics and throughput are empty")
    overload = _overload(df, masks, arrival, queue, sched, counts, all_notes)

    summary: dict[str, Any] = {
        "scenario": scenario,
        "seed": seed,
        "simulated_s": simulated_s,
        "wall_s": wall_s,
        "events": events,
        "requests": counts,
        "throughput": throughput,
        "ttft_s": lat["ttft_s"],
        "tpot_s": lat["tpot_s"],
        "itl_s": itl,
        "e2e_s": lat["e2e_s"],
        "queue_s": lat["queue_s"],
        "slo": slo_out,
        "cost": cost,
        "pools": pools_out,
    }
    if "tenant" in df.columns:
        classes = _classes_summary(df, masks, met, duration_s, per_class, base)
        if classes is not None:
            summary["classes"] = classes
    summary["overload"] = overload
    summary["notes"] = all_notes
    if extra:
        clash = [k for k in extra if k in _SCHEMA_KEYS]
        if clash:
            raise ValueError(f"extra keys collide with the summary schema: {clash}")
        summary.update(extra)
    return to_jsonable(summary)


def _flatten(prefix: str, obj: Any, rows: list) -> None:
    if isinstance(obj, Mapping):
        if not obj:
            rows.append((prefix, None))
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(obj, (list, tuple)):
        if not obj:
            rows.append((prefix, None))
        for i, v in enumerate(obj):
            _flatten(f"{prefix}.{i}", v, rows)
    else:
        rows.append((prefix, obj))


def summary_frame(summary: Mapping) -> pd.DataFrame:
    """The summary flattened to rows ``metric`` (dotted key path, e.g. ``ttft_s.p99``,
    ``pools.h100.utilization``, ``notes.0``) and ``value`` (object column)."""
    rows: list = []
    _flatten("", summary, rows)
    return pd.DataFrame({"metric": [r[0] for r in rows],
                         "value": pd.Series([r[1] for r in rows], dtype=object)})
