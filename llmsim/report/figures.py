"""Plotly figure builders for run, comparison, sweep and plan reports.

Each builder returns a ``plotly.graph_objects.Figure`` and reads only DataFrames, arrays and
summary dicts, so notebooks and the sweep/plan reports can reuse them. Conventions:

- Latencies are plotted in milliseconds; fractions (KV use, SLO attainment) in percent.
- Large inputs are reduced before plotting so a report of a million requests stays small:
  CDF curves keep at most ``max_points`` points (a uniform grid in probability plus a finer grid
  in the upper tail, so p99/p99.9 stay exact steps), time series are averaged into at most
  ``max_points`` time bins, and replicas beyond ``max_lines`` are drawn as per-pool mean/max.
- Missing columns raise :class:`llmsim.errors.InputError` naming the column.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from llmsim.errors import InputError, input_problem, suggest

#: Default maximum number of points per curve.
MAX_POINTS = 2000
#: Replicas drawn individually in the KV figure before switching to per-pool mean/max.
MAX_REPLICA_LINES = 32

STATUS_COLORS = {"finished": "#2ca02c", "rejected": "#d62728", "unfinished": "#ff7f0e",
                 "failed": "#7f7f7f"}

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50), height=420,
               legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))


def _need(df: pd.DataFrame, cols: Iterable[str], where: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise InputError(input_problem("expected a pandas DataFrame", where=where,
                                       value=type(df).__name__))
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError([input_problem(f"column is missing{suggest(c, map(str, df.columns))}",
                                        where=where, key=c) for c in missing])


# --------------------------------------------------------------------------------------------
# CDFs
# --------------------------------------------------------------------------------------------

def _prob_grid(max_points: int) -> np.ndarray:
    """Probabilities at which a downsampled CDF is evaluated: 3/4 of the points uniform in
    [0, 1], 1/4 geometric towards 1 (tail detail down to 1e-6)."""
    n_tail = max(max_points // 4, 2)
    uni = np.linspace(0.0, 1.0, max(max_points - n_tail, 2))
    tail = 1.0 - np.geomspace(1e-1, 1e-6, n_tail)
    return np.unique(np.concatenate([uni, tail]))


def cdf_points(values, weights=None, max_points: int = MAX_POINTS) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Empirical CDF of a (weighted) sample as ``(x, F)`` with at most about ``max_points``
    points; ``F[i]`` = fraction of the total weight with value <= ``x[i]``. NaNs and zero weights
    are dropped; empty input gives two empty arrays."""
    v = np.asarray(values, dtype=np.float64).ravel()
    w = (np.ones_like(v) if weights is None
         else np.asarray(weights, dtype=np.float64).ravel())
    if v.shape != w.shape:
        raise ValueError(f"values and weights differ in length ({v.size} vs {w.size})")
    keep = ~np.isnan(v) & (w > 0)
    v, w = v[keep], w[keep]
    if v.size == 0:
        return np.empty(0), np.empty(0)
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cum = np.cumsum(w)
    cum /= cum[-1]
    # one point per distinct value (the last occurrence carries the full step)
    last = np.r_[v[1:] != v[:-1], True]
    v, cum = v[last], cum[last]
    if v.size > max_points:
        idx = np.searchsorted(cum, _prob_grid(max_points), side="left")
        idx = np.unique(np.clip(idx, 0, v.size - 1))
        v, cum = v[idx], cum[idx]
    return v, cum


def cdf_figure(curves: Sequence[tuple], *, title: str, x_title: str,
               slo_s: float | Sequence[float] | None = None, slo_label: str = "SLO",
               y_title: str = "fraction of requests", scale: float = 1000.0,
               max_points: int = MAX_POINTS, log_x: bool = False) -> go.Figure:
    """Overlaid CDFs. ``curves`` is a list of ``(name, values)`` or ``(name, values, weights)``
    with values in seconds; x is ``values · scale`` (ms by default). ``slo_s`` (seconds, or a
    list of them) draws dashed vertical target lines."""
    fig = go.Figure()
    for curve in curves:
        name, values = curve[0], curve[1]
        weights = curve[2] if len(curve) > 2 else None
        x, y = cdf_points(values, weights, max_points)
        fig.add_trace(go.Scatter(x=x * scale, y=y, mode="lines", name=str(name),
                                 line=dict(shape="hv"),
                                 hovertemplate="%{x:.4g}: %{y:.2%}<extra>" + str(name)
                                 + "</extra>"))
    targets = [] if slo_s is None else ([slo_s] if np.isscalar(slo_s) else list(slo_s))
    for t in sorted({float(t) for t in targets if t is not None}):
        fig.add_vline(x=t * scale, line=dict(dash="dash", color="#d62728"),
                      annotation_text=f"{slo_label} {t * scale:.4g}",
                      annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, **_LAYOUT)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


# --------------------------------------------------------------------------------------------
# Time series from the timeline
# --------------------------------------------------------------------------------------------

TIMELINE_COLUMNS = ("time_s", "pool", "replica", "num_waiting", "num_running", "kv_usage",
                    "num_finished", "tokens_out")


def _bin_mean(t: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive samples into at most ``max_points`` bins (time = bin mean)."""
    if t.size <= max_points:
        return t, y
    k = int(np.ceil(t.size / max_points))
    n = (t.size // k) * k
    tb = t[:n].reshape(-1, k).mean(axis=1)
    yb = y[:n].reshape(-1, k).mean(axis=1)
    if n < t.size:
        tb = np.r_[tb, t[n:].mean()]
        yb = np.r_[yb, y[n:].mean()]
    return tb, yb


def counter_rates(timeline: pd.DataFrame, column: str, *, by: Sequence[str] = (),
                  max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Rate per second of a cumulative per-replica counter (``tokens_out``, ``num_finished``).

    Increments are taken per (pool, replica) between consecutive samples (a replica's first
    sample counts from 0; a drop is read as a counter restart, so the increment is the new
    value), summed over replicas (within each ``by`` group) per sample time, and divided by the
    time since the previous sample time. Consecutive samples are merged so at most
    ``max_points`` remain per group. Returns columns ``*by, time_s, rate_per_s``.
    """
    _need(timeline, ("time_s", "pool", "replica", column), "timeline")
    tl = timeline[list(dict.fromkeys(["time_s", "pool", "replica", column, *by]))]
    tl = tl.sort_values(["pool", "replica", "time_s"], kind="stable")
    val = tl[column].to_numpy(dtype=np.float64)
    prev = tl.groupby(["pool", "replica"], sort=False)[column].shift(1).to_numpy(dtype=np.float64)
    inc = np.where(np.isnan(prev), val, val - prev)
    inc = np.where(inc < 0, val, inc)
    tl = tl.assign(_inc=inc)
    frames = []
    groups = tl.groupby(list(by), sort=True) if by else [((), tl)]
    for key, g in groups:
        per_t = g.groupby("time_s", sort=True)["_inc"].sum()
        t = per_t.index.to_numpy(dtype=np.float64)
        c = per_t.to_numpy(dtype=np.float64)
        if t.size == 0:
            continue
        # merge consecutive samples into bins of k: rate = increments / bin span
        k = max(1, int(np.ceil(t.size / max_points)))
        ends = np.arange(k - 1, t.size, k)
        if ends.size == 0 or ends[-1] != t.size - 1:
            ends = np.r_[ends, t.size - 1]
        csum = np.cumsum(c)
        inc_bin = np.diff(np.r_[0.0, csum[ends]])
        t_end = t[ends]
        t_start = np.r_[0.0, t_end[:-1]]   # the first bin counts from simulated time 0
        span = t_end - t_start
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(span > 0, inc_bin / span, np.nan)
        keep = ~np.isnan(rate)
        out = pd.DataFrame({"time_s": t_end[keep], "rate_per_s": rate[keep]})
        key = key if isinstance(key, tuple) else (key,)
        for col, kv in zip(by, key):
            out.insert(0, col, kv)
        frames.append(out)
    if not frames:
        return pd.DataFrame(columns=[*by, "time_s", "rate_per_s"])
    return pd.concat(frames, ignore_index=True)


def _total_over_replicas(timeline: pd.DataFrame, column: str, max_points: int):
    per_t = timeline.groupby("time_s", sort=True)[column].sum()
    return _bin_mean(per_t.index.to_numpy(dtype=np.float64),
                     per_t.to_numpy(dtype=np.float64), max_points)


def throughput_figure(runs: Sequence[tuple[str, pd.DataFrame]], *,
                      max_points: int = MAX_POINTS) -> go.Figure:
    """Output tokens/s over time (all replicas) per run; with one run, also per pool when it
    has several pools. ``runs`` is a list of ``(name, timeline)``."""
    fig = go.Figure()
    for name, tl in runs:
        _need(tl, ("time_s", "pool", "replica", "tokens_out"), "timeline")
        r = counter_rates(tl, "tokens_out", max_points=max_points)
        fig.add_trace(go.Scatter(x=r["time_s"], y=r["rate_per_s"], mode="lines",
                                 name=str(name) if len(runs) > 1 else "all pools"))
        if len(runs) == 1 and tl["pool"].nunique() > 1:
            rp = counter_rates(tl, "tokens_out", by=["pool"], max_points=max_points)
            for pool, g in rp.groupby("pool", sort=True):
                fig.add_trace(go.Scatter(x=g["time_s"], y=g["rate_per_s"], mode="lines",
                                         name=f"pool {pool}", line=dict(dash="dot")))
    fig.update_layout(title="Throughput over time", xaxis_title="simulated time (s)",
                      yaxis_title="output tokens/s", **_LAYOUT)
    return fig


def queue_figure(runs: Sequence[tuple[str, pd.DataFrame]], *,
                 max_points: int = MAX_POINTS) -> go.Figure:
    """Waiting requests (summed over replicas) over time per run; with one run also the number
    of running requests. ``runs`` is a list of ``(name, timeline)``."""
    fig = go.Figure()
    for name, tl in runs:
        _need(tl, ("time_s", "num_waiting", "num_running"), "timeline")
        t, w = _total_over_replicas(tl, "num_waiting", max_points)
        label = "waiting" if len(runs) == 1 else f"{name} waiting"
        fig.add_trace(go.Scatter(x=t, y=w, mode="lines", name=label))
        if len(runs) == 1:
            t, r = _total_over_replicas(tl, "num_running", max_points)
            fig.add_trace(go.Scatter(x=t, y=r, mode="lines", name="running",
                                     line=dict(dash="dot")))
    fig.update_layout(title="Queue length over time", xaxis_title="simulated time (s)",
                      yaxis_title="requests (all replicas)", **_LAYOUT)
    return fig


def kv_usage_figure(timeline: pd.DataFrame, *, name: str | None = None,
                    max_points: int = MAX_POINTS,
                    max_lines: int = MAX_REPLICA_LINES) -> go.Figure:
    """KV-cache use (% of blocks) over time, one line per replica; with more than
    ``max_lines`` replicas, per-pool mean and max instead."""
    _need(timeline, ("time_s", "pool", "replica", "kv_usage"), "timeline")
    fig = go.Figure()
    keys = timeline[["pool", "replica"]].drop_duplicates()
    if len(keys) <= max_lines:
        for (pool, rep), g in timeline.groupby(["pool", "replica"], sort=True):
            g = g.sort_values("time_s", kind="stable")
            t, y = _bin_mean(g["time_s"].to_numpy(dtype=np.float64),
                             g["kv_usage"].to_numpy(dtype=np.float64), max_points)
            fig.add_trace(go.Scatter(x=t, y=100.0 * y, mode="lines", name=f"{pool}/{rep}"))
    else:
        for pool, g in timeline.groupby("pool", sort=True):
            agg = g.groupby("time_s", sort=True)["kv_usage"].agg(["mean", "max"])
            tt = agg.index.to_numpy(dtype=np.float64)
            for stat, dash in (("mean", None), ("max", "dot")):
                t, y = _bin_mean(tt, agg[stat].to_numpy(dtype=np.float64), max_points)
                fig.add_trace(go.Scatter(x=t, y=100.0 * y, mode="lines",
                                         name=f"{pool} {stat}", line=dict(dash=dash)))
    title = "KV cache usage per replica" + (f" ({name})" if name else "")
    fig.update_layout(title=title, xaxis_title="simulated time (s)",
                      yaxis_title="KV blocks used (%)", **_LAYOUT)
    fig.update_yaxes(range=[0, 102])
    return fig


# --------------------------------------------------------------------------------------------
# Request status
# --------------------------------------------------------------------------------------------

def status_counts(requests: pd.DataFrame) -> pd.DataFrame:
    """Counts per (status, reason) with reason ``""`` for finished requests / missing reasons."""
    _need(requests, ("status",), "requests")
    reason = (requests["reason"] if "reason" in requests.columns
              else pd.Series([None] * len(requests), index=requests.index))
    df = pd.DataFrame({"status": requests["status"].astype(str),
                       "reason": reason.fillna("").astype(str)})
    return df.value_counts(["status", "reason"]).rename("count").reset_index()


def status_figure(runs: Sequence[tuple[str, pd.DataFrame]]) -> go.Figure:
    """Stacked bars of request status per run (hover lists the reasons).
    ``runs`` is a list of ``(name, requests)``."""
    names = [str(n) for n, _ in runs]
    counts = [status_counts(df) for _, df in runs]
    statuses = ["finished", "rejected", "unfinished", "failed"]
    extra = sorted({s for c in counts for s in c["status"]} - set(statuses))
    fig = go.Figure()
    for st in statuses + extra:
        ys, hovers = [], []
        for c in counts:
            sub = c[c["status"] == st]
            ys.append(int(sub["count"].sum()))
            reasons = [f"{r or 'no reason given'}: {int(k)}"
                       for r, k in zip(sub["reason"], sub["count"])] if st != "finished" else []
            hovers.append("<br>".join(reasons[:8]))
        if not any(ys) and st not in ("finished",):
            continue
        fig.add_trace(go.Bar(x=names, y=ys, name=st, text=ys, textposition="auto",
                             marker_color=STATUS_COLORS.get(st), customdata=hovers,
                             hovertemplate="%{x}: %{y} " + st + "<br>%{customdata}<extra></extra>"))
    fig.update_layout(title="Request status", barmode="stack", yaxis_title="requests",
                      **_LAYOUT)
    return fig


# --------------------------------------------------------------------------------------------
# Sweep / plan charts (tidy frame, one row per run)
# --------------------------------------------------------------------------------------------

def _lines(df: pd.DataFrame, x: str, ys: Sequence[str], group: str | None,
           scale: float) -> list[go.Scatter]:
    traces = []
    groups = df.groupby(group, sort=True) if group else [(None, df)]
    for gkey, g in groups:
        g = g.sort_values(x, kind="stable")
        for y in ys:
            parts = [p for p in ((f"{group}={gkey}" if group else None),
                                 (y if len(ys) > 1 or not group else None)) if p]
            traces.append(go.Scatter(x=g[x], y=g[y].astype(float) * scale,
                                     mode="lines+markers", name=", ".join(parts) or y))
    return traces


def latency_vs_load(df: pd.DataFrame, x: str, y: str | Sequence[str],
                    slo: float | None = None, *, group: str | None = None,
                    scale: float = 1000.0, title: str | None = None,
                    x_title: str | None = None, y_title: str | None = None) -> go.Figure:
    """Latency (columns ``y``, seconds) against load (column ``x``), one line per ``y`` column
    and per value of ``group``; ``slo`` (seconds) draws a dashed target line. y is shown
    times ``scale`` (ms by default). ``df`` is tidy: one row per run."""
    ys = [y] if isinstance(y, str) else list(y)
    _need(df, [x, *ys] + ([group] if group else []), "sweep results")
    fig = go.Figure(_lines(df, x, ys, group, scale))
    if slo is not None:
        fig.add_hline(y=float(slo) * scale, line=dict(dash="dash", color="#d62728"),
                      annotation_text=f"SLO {float(slo) * scale:.4g}",
                      annotation_position="top left")
    unit = "ms" if scale == 1000.0 else ("s" if scale == 1.0 else f"x{scale:g}")
    fig.update_layout(title=title or f"{', '.join(ys)} vs {x}", xaxis_title=x_title or x,
                      yaxis_title=y_title or f"latency ({unit})", **_LAYOUT)
    return fig


def attainment_vs_rate(df: pd.DataFrame, x: str = "rate_per_s", y: str = "attainment", *,
                       group: str | None = None, target: float | None = None,
                       title: str | None = None, x_title: str | None = None) -> go.Figure:
    """SLO attainment (column ``y``, fraction 0–1) against offered load (column ``x``), one
    line per ``group`` value; ``target`` (fraction) draws the required attainment."""
    _need(df, [x, y] + ([group] if group else []), "sweep results")
    fig = go.Figure(_lines(df, x, [y], group, 100.0))
    if target is not None:
        fig.add_hline(y=100.0 * float(target), line=dict(dash="dash", color="#d62728"),
                      annotation_text=f"target {100.0 * float(target):.4g}%",
                      annotation_position="bottom left")
    fig.update_layout(title=title or "SLO attainment vs load", xaxis_title=x_title or x,
                      yaxis_title="SLO attainment (%)", **_LAYOUT)
    fig.update_yaxes(range=[0, 102])
    return fig


# --------------------------------------------------------------------------------------------
# Sweep / plan charts with intervals, cost, per-replica series, roofline, Pareto front
# --------------------------------------------------------------------------------------------

def mean_ci_figure(df: pd.DataFrame, x: str, y: str, *, group: str | None = None,
                   scale: float = 1.0, title: str | None = None, x_title: str | None = None,
                   y_title: str | None = None, hline: float | None = None,
                   hline_label: str = "target") -> go.Figure:
    """Mean of metric ``y`` against ``x`` with confidence intervals as error bars, from a
    per-point frame holding ``{y}_mean``, ``{y}_ci_low`` and ``{y}_ci_high`` (as
    :func:`llmsim.planning.metrics.aggregate` makes); one line per ``group`` value. Values are
    shown times ``scale``; ``hline`` (in the same unit as ``y``) draws a dashed line."""
    m, lo, hi = f"{y}_mean", f"{y}_ci_low", f"{y}_ci_high"
    _need(df, [x, m, lo, hi] + ([group] if group else []), "sweep points")
    fig = go.Figure()
    groups = df.groupby(group, sort=True) if group else [(None, df)]
    for gkey, g in groups:
        g = g.sort_values(x, kind="stable")
        mean = g[m].astype(float).to_numpy() * scale
        up = (g[hi].astype(float).to_numpy() * scale) - mean
        down = mean - (g[lo].astype(float).to_numpy() * scale)
        fig.add_trace(go.Scatter(
            x=g[x], y=mean, mode="lines+markers",
            name=f"{group}={gkey}" if group else y,
            error_y=dict(type="data", array=np.nan_to_num(up), arrayminus=np.nan_to_num(down),
                         visible=True)))
    if hline is not None:
        fig.add_hline(y=float(hline) * scale, line=dict(dash="dash", color="#d62728"),
                      annotation_text=f"{hline_label} {float(hline) * scale:.4g}",
                      annotation_position="top left")
    fig.update_layout(title=title or f"{y} vs {x}", xaxis_title=x_title or x,
                      yaxis_title=y_title or y, **_LAYOUT)
    return fig


def cost_vs_rate(df: pd.DataFrame, x: str = "rate_per_s",
                 y: str = "usd_per_million_output_tokens", *, group: str | None = None,
                 title: str | None = None, x_title: str | None = None,
                 y_title: str | None = None) -> go.Figure:
    """Cost (column ``y``, USD) against offered load (column ``x``), one line per ``group``
    value. ``df`` is tidy (one row per run or per point)."""
    _need(df, [x, y] + ([group] if group else []), "sweep results")
    fig = go.Figure(_lines(df, x, [y], group, 1.0))
    fig.update_layout(title=title or "Cost vs load", xaxis_title=x_title or x,
                      yaxis_title=y_title or "USD per million output tokens", **_LAYOUT)
    return fig


def replica_series_figure(timeline: pd.DataFrame, column: str, *, title: str,
                          y_title: str, name: str | None = None, scale: float = 1.0,
                          max_points: int = MAX_POINTS,
                          max_lines: int = MAX_REPLICA_LINES) -> go.Figure:
    """A timeline column (``num_waiting``, ``num_running``, ``kv_usage``) over time, one line
    per replica (``pool/replica``); with more than ``max_lines`` replicas, per-pool mean and
    max. Values are shown times ``scale``."""
    _need(timeline, ("time_s", "pool", "replica", column), "timeline")
    fig = go.Figure()
    keys = timeline[["pool", "replica"]].drop_duplicates()
    if len(keys) <= max_lines:
        for (pool, rep), g in timeline.groupby(["pool", "replica"], sort=True):
            g = g.sort_values("time_s", kind="stable")
            t, y = _bin_mean(g["time_s"].to_numpy(dtype=np.float64),
                             g[column].to_numpy(dtype=np.float64), max_points)
            fig.add_trace(go.Scatter(x=t, y=scale * y, mode="lines", name=f"{pool}/{rep}"))
    else:
        for pool, g in timeline.groupby("pool", sort=True):
            agg = g.groupby("time_s", sort=True)[column].agg(["mean", "max"])
            tt = agg.index.to_numpy(dtype=np.float64)
            for stat, dash in (("mean", None), ("max", "dot")):
                t, y = _bin_mean(tt, agg[stat].to_numpy(dtype=np.float64), max_points)
                fig.add_trace(go.Scatter(x=t, y=scale * y, mode="lines",
                                         name=f"{pool} {stat}", line=dict(dash=dash)))
    fig.update_layout(title=title + (f" ({name})" if name else ""),
                      xaxis_title="simulated time (s)", yaxis_title=y_title, **_LAYOUT)
    return fig


def roofline_figure(phases: Sequence[tuple[str, Sequence[dict]]], *, peak_flops_per_s: float,
                    memory_bandwidth_bytes_per_s: float, title: str = "Roofline",
                    efficiency: tuple[float, float] | None = None) -> go.Figure:
    """Operators on the roofline: attained FLOP/s (``flops / time_s``) against arithmetic
    intensity (FLOP/byte), log-log, one marker series per phase. ``phases`` is a list of
    ``(label, ops)`` with ``ops`` as ``OpCost.as_dict()``; the datasheet roofline is
    ``min(peak, bandwidth · intensity)``; ``efficiency = (compute, memory)`` adds the roofline
    at those fractions."""
    pts = [o for _, ops in phases for o in ops
           if o.get("flops", 0) > 0 and o.get("time_s", 0) > 0 and o.get("intensity", 0) > 0]
    ridge = peak_flops_per_s / memory_bandwidth_bytes_per_s
    xs = [o["intensity"] for o in pts] or [1.0]
    lo, hi = min(min(xs) / 4, ridge / 100), max(max(xs) * 4, ridge * 10)
    grid = np.geomspace(lo, hi, 200)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=grid, y=np.minimum(peak_flops_per_s,
                                                  memory_bandwidth_bytes_per_s * grid),
                             mode="lines", name="datasheet roofline",
                             line=dict(dash="dash", color="gray")))
    if efficiency is not None:
        ec, em = efficiency
        fig.add_trace(go.Scatter(x=grid, y=np.minimum(peak_flops_per_s * ec,
                                                      memory_bandwidth_bytes_per_s * em * grid),
                                 mode="lines", name="at card efficiency",
                                 line=dict(color="black")))
    for (label, ops), sym in zip(phases, ("circle", "diamond", "square", "x")):
        ops = [o for o in ops if o.get("flops", 0) > 0 and o.get("time_s", 0) > 0
               and o.get("intensity", 0) > 0]
        fig.add_trace(go.Scatter(
            x=[o["intensity"] for o in ops], y=[o["flops"] / o["time_s"] for o in ops],
            mode="markers", name=str(label), marker=dict(symbol=sym, size=10),
            text=[f"{o['name']}: {o['time_s'] * 1e3:.3g} ms, {o.get('bound', '?')}-bound"
                  for o in ops], hoverinfo="text"))
    fig.update_layout(title=title, xaxis_title="arithmetic intensity (FLOP/byte)",
                      yaxis_title="attained FLOP/s per GPU", **_LAYOUT)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


def pareto_figure(points: pd.DataFrame, *, x: str = "tokens_per_s_per_user",
                  y: str = "output_tokens_per_s_per_gpu", front: str = "on_front",
                  label: str = "candidate", curves: dict | None = None,
                  title: str = "Throughput per GPU vs per-user token rate") -> go.Figure:
    """Simulated points (one series per ``label`` value; hollow markers when column
    ``meets_slo`` is false), the Pareto front (rows where ``front`` is true) as a step line,
    and optional roofline curves ``{name: [(batch, x, y), ...]}`` dashed."""
    _need(points, [x, y, front, label], "pareto points")
    fig = go.Figure()
    for name, curve in (curves or {}).items():
        if curve:
            fig.add_trace(go.Scatter(x=[c[1] for c in curve], y=[c[2] for c in curve],
                                     mode="lines", name=f"roofline {name}",
                                     line=dict(dash="dash", width=1),
                                     text=[f"batch {c[0]}" for c in curve]))
    for name, g in points.groupby(label, sort=False):
        ok = g["meets_slo"].astype(bool) if "meets_slo" in g.columns else pd.Series(True, g.index)
        fig.add_trace(go.Scatter(
            x=g[x], y=g[y], mode="markers", name=str(name),
            marker=dict(size=10, symbol=["circle" if v else "circle-open" for v in ok]),
            text=[f"rate {r:g} req/s" for r in g["rate_per_s"]] if "rate_per_s" in g.columns
            else None))
    f = points[points[front].astype(bool)].sort_values(x)
    if len(f):
        fig.add_trace(go.Scatter(x=f[x], y=f[y], mode="lines", name="Pareto front",
                                 line=dict(shape="vh", color="black")))
    fig.update_layout(title=title, xaxis_title="tokens/s per user (1 / median TPOT)",
                      yaxis_title="output tokens/s per GPU", **_LAYOUT)
    return fig


def candidates_figure(df: pd.DataFrame, *, x: str = "usd_per_hour", y: str = "attainment",
                      status: str = "status", label: str = "label",
                      target: float | None = None,
                      title: str = "Candidates: price vs SLO attainment") -> go.Figure:
    """Planner candidates: price per hour (x) against simulated attainment (y, %), one series
    per ``status``; candidates without a simulated attainment (pruned, skipped) sit at 0 with
    hollow markers. ``target`` (fraction) draws the required attainment."""
    _need(df, [x, y, status, label], "candidates")
    colors = {"passed": "#2ca02c", "failed": "#d62728", "pruned": "#7f7f7f",
              "skipped": "#bbbbbb", "invalid": "#ff7f0e"}
    fig = go.Figure()
    for st, g in df.groupby(status, sort=True):
        yy = g[y].astype(float)
        sim = yy.notna()
        fig.add_trace(go.Scatter(
            x=g[x], y=np.where(sim, 100.0 * yy.fillna(0.0), 0.0), mode="markers", name=str(st),
            marker=dict(size=10, color=colors.get(str(st)),
                        symbol=["circle" if s else "circle-open" for s in sim]),
            text=[str(t) for t in g[label]], hoverinfo="text+x+y"))
    if target is not None:
        fig.add_hline(y=100.0 * float(target), line=dict(dash="dash", color="#d62728"),
                      annotation_text=f"target {100.0 * float(target):.4g}%",
                      annotation_position="bottom left")
    fig.update_layout(title=title, xaxis_title="USD per hour", yaxis_title="SLO attainment (%)",
                      **_LAYOUT)
    return fig
