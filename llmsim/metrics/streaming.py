"""Streaming run summary: the §9 summary from request rows seen chunk by chunk, in memory that
does not grow with the number of rows.

Contract:

- :class:`LogHistogram` counts (optionally weighted) values in fixed log-spaced bins from
  ``lo_s`` = 1 µs to ``hi_s`` = 10⁶ s, each bin ``rel_width`` = 0.1% wide relative to its lower
  edge (27,645 bins, 221 kB), plus an underflow bin (values < 1 µs, zero included) and an
  overflow bin (≥ 10⁶ s). Quantiles follow numpy's ``linear`` rule (position ``q·(N − 1)``
  between order statistics, as :mod:`llmsim.metrics.stats` does); an order statistic is read as
  the geometric middle of its bin (relative error ≤ 0.05%), the mean of the under-/overflow
  values for those bins, the exact minimum/maximum for the first/last rank, and is clamped to
  the exact [min, max]. Means are exact (Σ v·w / Σ w).
- :class:`StreamingSummary` takes chunks of the request table *with* the derived columns
  (``add_derived_columns`` with the same SLO targets) through :meth:`StreamingSummary.add` and
  returns from :meth:`StreamingSummary.summary` a dict with exactly the keys of
  :func:`llmsim.metrics.summary.summarize` plus ``approximations`` (list of str saying what is
  approximate). Exact: request counts, preemptions, throughput and its duration window, means,
  SLO attainment and goodput, cost, pools, classes' counts and attainment, notes. Approximate:
  percentiles (histograms above) and overload rule 3 (queue growth), whose "fifths of arrivals"
  are cut from at most 256 arrival-time slices with 1%-wide queue-delay bins (a slice that
  straddles a fifth's edge contributes in proportion).
- Memory is fixed: 4 latency histograms, 3 per request class, ≤ 256 coarse slice histograms
  (22 kB each), and the distinct rejection/failure reasons (at most
  :data:`MAX_DISTINCT_REASONS` per status; further distinct reasons are counted together).

This module never imports the engine.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from llmsim.metrics.stats import PERCENTILES, empty_stats, weighted_quantiles
from llmsim.metrics.summary import (LATENCY_COLUMNS, OVERLOAD_MIN_SAMPLES, STATUSES,
                                    SUMMARY_COLUMNS, _SCHEMA_KEYS, _float_col, _n,
                                    _pools_summary, _rate, _require_columns, _status_masks,
                                    normalize_class_slo, normalize_slo, overload_verdict,
                                    to_jsonable)

#: Columns :meth:`StreamingSummary.add` needs (raw + derived).
STREAM_COLUMNS: tuple[str, ...] = SUMMARY_COLUMNS + ("ttft_s", "tpot_s", "e2e_s", "queue_s",
                                                     "slo_met")
#: Distinct rejection / failure reasons remembered per status; beyond that they are lumped.
MAX_DISTINCT_REASONS = 10_000
#: Arrival-time slices kept for overload rule 3 (queue growth).
MAX_TREND_SLICES = 256

_OTHER_REASONS = "(further distinct reasons not tracked)"


# --------------------------------------------------------------------------------------------
# Histogram
# --------------------------------------------------------------------------------------------

class LogHistogram:
    """Fixed log-spaced histogram of non-negative values in seconds (see module docstring).

    ``add(values, weights=None)`` ignores NaN values and zero weights; weights must be
    non-negative integers (token counts). Memory: ``counts`` (int64, ``nbins + 2`` entries)."""

    __slots__ = ("lo_s", "hi_s", "rel_width", "nbins", "counts", "total", "sum", "min", "max",
                 "under_sum", "over_sum", "_log_lo", "_inv_log_r", "_log_r")

    def __init__(self, lo_s: float = 1e-6, hi_s: float = 1e6, rel_width: float = 1e-3):
        if not (0 < lo_s < hi_s) or not (0 < rel_width < 1):
            raise ValueError("need 0 < lo_s < hi_s and 0 < rel_width < 1")
        self.lo_s = float(lo_s)
        self.hi_s = float(hi_s)
        self.rel_width = float(rel_width)
        self._log_r = math.log1p(rel_width)
        self._inv_log_r = 1.0 / self._log_r
        self._log_lo = math.log(lo_s)
        self.nbins = int(math.ceil(math.log(hi_s / lo_s) * self._inv_log_r))
        self.counts = np.zeros(self.nbins + 2, dtype=np.int64)   # [under, bins..., over]
        self.total = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.under_sum = 0.0
        self.over_sum = 0.0

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes)

    def bin_index(self, v: np.ndarray) -> np.ndarray:
        """Bin of each (non-NaN) value: 0 = underflow, 1..nbins, nbins + 1 = overflow."""
        idx = np.zeros(v.shape, dtype=np.int64)
        inside = (v >= self.lo_s) & (v < self.hi_s)
        if inside.any():
            b = np.floor((np.log(v[inside]) - self._log_lo) * self._inv_log_r).astype(np.int64)
            idx[inside] = np.clip(b, 0, self.nbins - 1) + 1
        idx[v >= self.hi_s] = self.nbins + 1
        return idx

    def add(self, values, weights=None) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        if weights is None:
            keep = ~np.isnan(v)
            v = v[keep]
            w = None
        else:
            w = np.asarray(weights).ravel()
            if w.shape != v.shape:
                raise ValueError(f"values and weights differ in length ({v.size} vs {w.size})")
            w = w.astype(np.int64, copy=False)
            if (w < 0).any():
                raise ValueError("weights must be non-negative")
            keep = ~np.isnan(v) & (w > 0)
            v, w = v[keep], w[keep]
        if v.size == 0:
            return
        idx = self.bin_index(v)
        if w is None:
            self.counts += np.bincount(idx, minlength=self.nbins + 2)
            self.total += int(v.size)
            vw = v
        else:
            self.counts += np.rint(np.bincount(idx, weights=w, minlength=self.nbins + 2)
                                   ).astype(np.int64)
            self.total += int(w.sum())
            vw = v * w
        self.sum += float(vw.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        under = idx == 0
        if under.any():
            self.under_sum += float(vw[under].sum())
        over = idx == self.nbins + 1
        if over.any():
            self.over_sum += float(vw[over].sum())

    def _rep(self, b: np.ndarray) -> np.ndarray:
        """Value standing for each bin in ``b`` (geometric middle; under/overflow means)."""
        b = np.asarray(b, dtype=np.int64)
        out = np.exp(self._log_lo + (b - 0.5) * self._log_r)
        c = self.counts
        if c[0]:
            out = np.where(b == 0, self.under_sum / c[0], out)
        if c[-1]:
            out = np.where(b == self.nbins + 1, self.over_sum / c[-1], out)
        return np.clip(out, self.min, self.max)

    def quantiles(self, qs: Sequence[float] | float) -> np.ndarray:
        """Quantiles ``qs`` (each in [0, 1]) by the rule in the module docstring; NaN when
        empty."""
        q = np.asarray(qs, dtype=np.float64)
        if np.isnan(q).any() or (q < 0).any() or (q > 1).any():
            raise ValueError(f"quantiles must lie in [0, 1], got {qs!r}")
        if self.total == 0:
            return np.full(q.shape, np.nan)
        cum = np.cumsum(self.counts)
        last = float(self.total - 1)
        pos = q * last
        lo_pos = np.floor(pos)
        frac = pos - lo_pos
        hi_pos = np.minimum(lo_pos + 1.0, last)

        def at(rank):
            v = self._rep(np.searchsorted(cum, rank, side="right"))
            v = np.where(rank == 0, self.min, v)
            return np.where(rank == last, self.max, v)

        lo = at(lo_pos)
        hi = at(hi_pos)
        return lo + (hi - lo) * frac

    def stats(self) -> dict:
        """``{mean, p50, p90, p99}`` (all ``None`` when empty), like ``latency_stats``."""
        if self.total == 0:
            return empty_stats()
        out = {"mean": self.sum / self.total}
        for (key, _), v in zip(PERCENTILES, self.quantiles([q for _, q in PERCENTILES])):
            out[key] = float(v)
        return out

    def nonzero(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin values, counts) of the non-empty bins, ascending: a weighted sample whose CDF
        is this histogram's (for plots)."""
        b = np.flatnonzero(self.counts)
        return self._rep(b).astype(np.float64), self.counts[b].copy()


# --------------------------------------------------------------------------------------------
# Overload rule 3: queue growth by arrival order
# --------------------------------------------------------------------------------------------

class _QueueTrend:
    """Coarse queue-delay histograms per arrival-time slice ``[k·width, (k+1)·width)``; the
    width doubles (neighbouring slices merge) whenever more than ``max_slices`` would be
    needed."""

    def __init__(self, max_slices: int = MAX_TREND_SLICES):
        self.max_slices = max_slices
        self.width_s = 2.0 ** -10
        self.slices: dict[int, np.ndarray] = {}
        self.hist = LogHistogram(rel_width=1e-2)   # binning only
        self.n = 0

    def _coarsen(self) -> None:
        merged: dict[int, np.ndarray] = {}
        for k, h in self.slices.items():
            j = k // 2
            if j in merged:
                merged[j] += h
            else:
                merged[j] = h
        self.slices = merged
        self.width_s *= 2.0

    def add(self, arrival: np.ndarray, queue: np.ndarray) -> None:
        ok = ~np.isnan(queue) & ~np.isnan(arrival)
        if not ok.any():
            return
        a, q = arrival[ok], queue[ok]
        self.n += int(a.size)
        while True:
            k = np.floor(a / self.width_s).astype(np.int64)
            kmin, kmax = int(k.min()), int(k.max())
            if self.slices:
                kmin = min(kmin, min(self.slices))
                kmax = max(kmax, max(self.slices))
            if kmax - kmin + 1 <= self.max_slices:
                break
            self._coarsen()
        b = self.hist.bin_index(q)
        order = np.argsort(k, kind="stable")
        ks = k[order]
        bs = b[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        ends = np.r_[starts[1:], ks.size]
        size = self.hist.nbins + 2
        for s, e in zip(starts, ends):
            key = int(ks[s])
            h = np.bincount(bs[s:e], minlength=size)
            if key in self.slices:
                self.slices[key] += h
            else:
                self.slices[key] = h

    def fifth_medians(self) -> tuple[float, float] | None:
        """(median queue_s of the 2nd fifth, of the last fifth) of the scheduled requests in
        arrival order, as ``summary._queue_growth`` defines them (approximately)."""
        if self.n < OVERLOAD_MIN_SAMPLES:
            return None
        keys = sorted(self.slices)
        cnt = np.array([self.slices[k].sum() for k in keys], dtype=np.float64)
        cum = np.r_[0.0, np.cumsum(cnt)]
        n = int(cum[-1])
        # np.array_split(…, 5) sizes: the first n % 5 parts get one more
        sizes = [n // 5 + (1 if i < n % 5 else 0) for i in range(5)]
        edges = np.r_[0, np.cumsum(sizes)]
        bins = np.arange(self.hist.nbins + 2)
        reps = np.exp(self.hist._log_lo + (bins - 0.5) * self.hist._log_r)
        reps[0] = 0.0
        reps[-1] = self.hist.hi_s

        def median(a: float, b: float) -> float:
            w = np.zeros(self.hist.nbins + 2)
            for i, k in enumerate(keys):
                overlap = min(b, cum[i + 1]) - max(a, cum[i])
                if overlap > 0 and cnt[i] > 0:
                    w += self.slices[k] * (overlap / cnt[i])
            return float(weighted_quantiles(reps, w, 0.5))

        return median(edges[1], edges[2]), median(edges[4], edges[5])


# --------------------------------------------------------------------------------------------
# Accumulator
# --------------------------------------------------------------------------------------------

class _ClassAcc:
    __slots__ = ("raw", "count", "finished", "met", "lat")

    def __init__(self, raw):
        self.raw = raw
        self.count = 0
        self.finished = 0
        self.met = 0
        self.lat = {c: LogHistogram() for c in ("ttft_s", "tpot_s", "e2e_s")}


class StreamingSummary:
    """Summary of a request table seen in chunks (see module docstring).

    ``slo``/``class_slo`` are the targets the chunks' ``slo_met`` was computed with (they are
    reported in ``summary['slo']``)."""

    def __init__(self, slo: Any = None, class_slo: Any = None):
        self.base = normalize_slo(slo)
        self.per_class = normalize_class_slo(class_slo, self.base)
        self.rows = 0
        self.status_counts = {st: 0 for st in STATUSES}
        self.preemptions = 0
        self.never_scheduled_unfinished = 0
        self.min_arrival_s = math.inf
        self.max_finish_s = -math.inf
        self.in_tokens = 0.0
        self.out_tokens = 0.0
        self.n_met = 0
        self.lat = {c: LogHistogram() for c in LATENCY_COLUMNS}
        self.reasons: dict[str, dict[str, int]] = {"rejected": {}, "failed": {}}
        self.reasons_lumped = 0
        self.classes: dict[str, _ClassAcc] = {}
        self.has_tenant = False
        self.trend = _QueueTrend()

    # ---------------------------------------------------------------------------- add ---
    def add(self, df: pd.DataFrame) -> None:
        """Fold one chunk of rows (raw + derived columns) into the totals."""
        _require_columns(df, STREAM_COLUMNS)
        if "tenant" in df.columns:
            self.has_tenant = True
        if not len(df):
            return
        masks = _status_masks(df)
        fin = masks["finished"]
        self.rows += len(df)
        for st in STATUSES:
            self.status_counts[st] += int(masks[st].sum())
        self.preemptions += int(np.nansum(_float_col(df, "num_preemptions")))
        arrival = _float_col(df, "arrival_s")
        finish = _float_col(df, "finish_s")
        sched = _float_col(df, "first_scheduled_s")
        self.never_scheduled_unfinished += int((masks["unfinished"] & np.isnan(sched)).sum())
        if (~np.isnan(arrival)).any():
            self.min_arrival_s = min(self.min_arrival_s, float(np.nanmin(arrival)))
        fin_finish = finish[fin]
        if fin_finish.size and (~np.isnan(fin_finish)).any():
            self.max_finish_s = max(self.max_finish_s, float(np.nanmax(fin_finish)))
        self.in_tokens += float(np.nansum(_float_col(df, "num_prompt_tokens")[fin]))
        self.out_tokens += float(np.nansum(_float_col(df, "num_output_tokens")[fin]))
        lat = {c: df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in LATENCY_COLUMNS}
        for c, h in self.lat.items():
            h.add(lat[c][fin])
        met = df["slo_met"].to_numpy(dtype=bool)
        self.n_met += int(met.sum())
        for st in ("rejected", "failed"):
            if masks[st].any():
                self._add_reasons(st, df, masks[st])
        if "tenant" in df.columns:
            self._add_classes(df, fin, met, lat)
        self.trend.add(arrival, lat["queue_s"])

    def _add_reasons(self, status: str, df: pd.DataFrame, mask: np.ndarray) -> None:
        if "reason" in df.columns:
            vc = df.loc[mask, "reason"].fillna("no reason given").astype(str).value_counts(
                sort=False)
            items = vc.items()
        else:
            items = [("no reason given", int(mask.sum()))]
        seen = self.reasons[status]
        for r, c in items:
            if r in seen:
                seen[r] += int(c)
            elif len(seen) < MAX_DISTINCT_REASONS:
                seen[r] = int(c)
            else:
                seen[_OTHER_REASONS] = seen.get(_OTHER_REASONS, 0) + int(c)
                self.reasons_lumped += int(c)

    def _add_classes(self, df, fin, met, lat) -> None:
        codes, uniques = pd.factorize(df["tenant"], use_na_sentinel=True)
        labels = [str(u) for u in uniques]
        raws = list(uniques)
        if (codes < 0).any():
            codes = np.where(codes < 0, len(labels), codes)
            labels.append("(none)")
            raws.append(None)
        for g, (label, raw) in enumerate(zip(labels, raws)):
            idx = codes == g
            acc = self.classes.get(label)
            if acc is None:
                acc = self.classes[label] = _ClassAcc(raw)
            f = idx & fin
            acc.count += int(idx.sum())
            acc.finished += int(f.sum())
            acc.met += int(met[idx].sum())
            for c, h in acc.lat.items():
                h.add(lat[c][f])

    # ----------------------------------------------------------------------- summary ---
    def _duration(self, simulated_s) -> tuple[float | None, str]:
        if self.status_counts["finished"] and math.isfinite(self.min_arrival_s):
            span = self.max_finish_s - self.min_arrival_s
            if math.isfinite(span) and span > 0:
                return span, "first_arrival_to_last_finish"
        sim = float(simulated_s) if simulated_s is not None else float("nan")
        return (sim if math.isfinite(sim) and sim > 0 else None), "simulated_s"

    def _reason_text(self, status: str, top: int = 3) -> str:
        seen = self.reasons[status]
        if not seen:
            return ""
        vc = pd.Series(seen, dtype=np.int64).sort_values(ascending=False, kind="stable")
        parts = [f"{r}: {int(c):,}" for r, c in vc.head(top).items()]
        if len(vc) > top:
            parts.append(f"{len(vc) - top} other reasons: {int(vc.iloc[top:].sum()):,}")
        return " (" + "; ".join(parts) + ")"

    def _overload(self, counts: dict, notes: list[str]) -> bool:
        return overload_verdict(counts, self.never_scheduled_unfinished,
                                self.trend.fifth_medians(), notes)

    def approximations(self, itl: LogHistogram | None = None) -> list[str]:
        """What in :meth:`summary` is approximate, in words."""
        h = next(iter(self.lat.values()))
        out = [f"percentiles (p50/p90/p99) of ttft_s, tpot_s, e2e_s, queue_s"
               + (", itl_s" if itl is not None else "")
               + f" come from log-spaced histograms with {100 * h.rel_width:g}% wide bins "
               f"({h.lo_s:g} s to {h.hi_s:g} s); each is within "
               f"{100 * (math.sqrt(1 + h.rel_width) - 1):.2g}% of the exact value; means, "
               "counts, attainment and cost are exact",
               "overload rule 3 (queue growth) compares medians of arrival fifths cut from "
               f"arrival-time slices ({self.trend.width_s:g} s wide) with 1%-wide delay bins"]
        if self.reasons_lumped:
            out.append(f"{self.reasons_lumped:,} rejected/failed requests had reasons beyond "
                       f"the first {MAX_DISTINCT_REASONS:,} distinct ones and are counted as "
                       f"'{_OTHER_REASONS}'")
        return out

    def summary(self, *, itl: LogHistogram | None, pools: Sequence[Mapping], simulated_s: float,
                wall_s: float, events: int, scenario: str, seed: Any,
                notes: Iterable[str] = (), extra: Mapping | None = None) -> dict:
        """The §9 summary (keys and definitions of ``summarize``) plus ``approximations``.
        ``itl`` is the weighted ITL histogram (``None``: ITL statistics empty)."""
        n = self.rows
        counts = {"arrived": n, **self.status_counts, "preemptions": self.preemptions}
        duration_s, window = self._duration(simulated_s)
        throughput = {
            "requests_per_s": _rate(counts["finished"], duration_s),
            "input_tokens_per_s": _rate(self.in_tokens, duration_s),
            "output_tokens_per_s": _rate(self.out_tokens, duration_s),
            "duration_s": duration_s,
            "window": window,
        }
        lat = {c: h.stats() for c, h in self.lat.items()}
        itl_stats = itl.stats() if itl is not None else empty_stats()
        slo_out = {
            "targets": self.base,
            "attainment": self.n_met / n if n else None,
            "goodput_requests_per_s": _rate(self.n_met, duration_s),
        }
        if self.per_class:
            slo_out["class_targets"] = self.per_class
        all_notes = [str(s) for s in notes]
        cost, pools_out = _pools_summary(pools, self.out_tokens, all_notes)
        if counts["unfinished"]:
            all_notes.append(
                f"{_n(counts['unfinished'], 'request')} still running or waiting when the "
                f"simulation ended at {float(simulated_s):.6g} s are counted as unfinished "
                f"({self.never_scheduled_unfinished:,} of them were never scheduled)")
        if counts["rejected"]:
            all_notes.append(f"{_n(counts['rejected'], 'request')} rejected"
                             + self._reason_text("rejected"))
        if counts["failed"]:
            all_notes.append(f"{_n(counts['failed'], 'request')} failed"
                             + self._reason_text("failed"))
        if n and not counts["finished"]:
            all_notes.append("no request finished: latency statistics and throughput are empty")
        overload = self._overload(counts, all_notes)

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
            "itl_s": itl_stats,
            "e2e_s": lat["e2e_s"],
            "queue_s": lat["queue_s"],
            "slo": slo_out,
            "cost": cost,
            "pools": pools_out,
        }
        if self.has_tenant and self.classes:
            summary["classes"] = self._classes_summary(duration_s)
        summary["overload"] = overload
        summary["notes"] = all_notes
        if extra:
            clash = [k for k in extra if k in _SCHEMA_KEYS or k == "approximations"]
            if clash:
                raise ValueError(f"extra keys collide with the summary schema: {clash}")
            summary.update(extra)
        summary["approximations"] = self.approximations(itl)
        return to_jsonable(summary)

    def _classes_summary(self, duration_s) -> dict:
        out = {}
        for label in sorted(self.classes):
            acc = self.classes[label]
            out[label] = {
                "count": acc.count,
                "finished": acc.finished,
                "attainment": acc.met / acc.count if acc.count else None,
                "goodput_requests_per_s": _rate(acc.met, duration_s),
                "slo_targets": self.per_class.get(acc.raw, self.base),
                **{c: h.stats() for c, h in acc.lat.items()},
            }
        return out
