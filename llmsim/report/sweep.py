"""Offline HTML reports of a sweep (:func:`write_sweep_html`) and of a plan
(:func:`write_plan_html`), built from the figure builders of :mod:`llmsim.report.figures`.

Like the run report, each page embeds plotly.js once and opens without network access; figure
ids are fixed (``fig-0``, ``fig-1``, …) so the same results give the same file.

Sweep page: the grid, failures (each failed run with its error), a table of every point (mean
and confidence interval of the key metrics), latency-vs-load curves with SLO lines,
SLO attainment vs load (with intervals), throughput and cost vs load, then — for the runs kept
with ``keep_results`` — the run report's figures side by side (latency CDFs, throughput, queue,
KV per replica, request status) plus running (the batch) and waiting requests per replica, and
the roofline chart of the base scenario's operators. The x axis is the first grid key whose values are
numbers (else the point label); other keys split the curves.

Plan page: each answer with its roofline bound; max rate: attainment and latencies against the
rates tried; min cost: every candidate's price, bound, status and attainment; Pareto: the
points, the front and the roofline curves; and the roofline chart.
"""
from __future__ import annotations

import html as _html
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from llmsim.metrics.format import fmt_ms, fmt_num, fmt_pct, fmt_usd, slo_targets_text
from llmsim.report.html import write_report_text
from llmsim.report import figures as F

__all__ = ["render_sweep_html", "write_sweep_html", "render_plan_html", "write_plan_html",
           "mean_ci_text"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1280px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:10px 14px;border-radius:4px}
.muted{color:#777} pre{background:#f7f7f7;padding:10px;overflow:auto;font-size:0.85em}
"""

#: Runs kept for the side-by-side section at most.
MAX_SIDE_BY_SIDE = 8
#: Rows of the per-run table shown in the page at most.
MAX_RUN_ROWS = 500


def _esc(x: Any) -> str:
    return _html.escape(str(x), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def mean_ci_text(row, m: str, fmt) -> str:
    """``mean [low, high]`` of metric ``m`` in a points row."""
    mean, lo, hi = row.get(f"{m}_mean"), row.get(f"{m}_ci_low"), row.get(f"{m}_ci_high")
    if not _finite(mean):
        return "-"
    s = fmt(mean)
    if _finite(lo) and _finite(hi):
        s += f" [{fmt(lo)}, {fmt(hi)}]"
    return s


def _page(title: str, parts: list[str], figs: list[go.Figure]) -> str:
    body = [f"<h1>{_esc(title)}</h1>", *[p for p in parts if p]]
    if figs:
        body.append('<h2>Figures</h2><div class="grid">')
        for i, fig in enumerate(figs):
            body.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{i}",
                                    default_width="100%", default_height="420px",
                                    config={"displaylogo": False}))
        body.append("</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _roofline(scenario, shape=None) -> go.Figure | None:
    """Roofline chart of the scenario's first pool (None when it cannot be built)."""
    if scenario is None:
        return None
    try:
        from llmsim.planning.bounds import operator_breakdown, workload_shape
        if shape is None:
            shape = workload_shape(scenario, max_requests=2000)
        b = operator_breakdown(scenario, shape)
        hw = scenario.cluster.pools[0].resolved_hardware()
        eff = getattr(hw, "efficiency", None)
        effs = ((eff.gemm_eff_max, eff.mem_eff) if eff is not None
                and hasattr(eff, "gemm_eff_max") else None)
        return F.roofline_figure([(b["prefill_label"], b["prefill"]),
                                  (b["decode_label"], b["decode"])],
                                 peak_flops_per_s=b["peak_flops_per_s"],
                                 memory_bandwidth_bytes_per_s=b["memory_bandwidth_bytes_per_s"],
                                 title="Roofline: " + b["title"], efficiency=effs)
    except Exception:  # noqa: BLE001 - the chart is optional; the page stays useful
        return None


# ----------------------------------------------------------------------------- sweep
def _axes(points: pd.DataFrame, keys: Sequence[str]) -> tuple[str, str | None, pd.DataFrame]:
    """(x column, group column or None, frame with the group column added)."""
    numeric = [k for k in keys if k in points.columns
               and pd.api.types.is_numeric_dtype(points[k])
               and not pd.api.types.is_bool_dtype(points[k]) and points[k].nunique() > 1]
    x = numeric[0] if numeric else "label"
    rest = [k for k in keys if k != x and k in points.columns and points[k].nunique() > 1]
    df = points.copy()
    if not rest:
        return x, None, df
    df["group"] = [", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(rest, vals))
                   for vals in df[rest].itertuples(index=False)]
    return x, "group", df


def _sweep_figures(res) -> list[go.Figure]:
    figs: list[go.Figure] = []
    pts = res.points[res.points["runs"] > res.points["failed"]]
    if len(pts):
        x, group, df = _axes(pts, res.grid_keys)
        targets = ((res.base_scenario.slo.targets if res.base_scenario is not None
                    and res.base_scenario.slo is not None else {}) or {})
        for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
            figs.append(F.latency_vs_load(
                df, x, [f"{key}_p50_mean", f"{key}_p99_mean"], targets.get(key), group=group,
                title=f"{label} p50/p99 vs {x}", y_title=f"{label} (ms)"))
        plan = getattr(res.base_scenario, "plan", None)
        figs.append(F.mean_ci_figure(df, x, "attainment", group=group, scale=100.0,
                                     title=f"SLO attainment vs {x}",
                                     y_title="SLO attainment (%)",
                                     hline=plan.attainment_target if plan else None))
        figs.append(F.mean_ci_figure(df, x, "requests_per_s", group=group,
                                     title=f"Throughput vs {x}", y_title="requests/s"))
        figs.append(F.mean_ci_figure(df, x, "goodput_requests_per_s", group=group,
                                     title=f"Goodput vs {x}", y_title="requests/s meeting SLO"))
        figs.append(F.cost_vs_rate(df, x, "usd_per_million_output_tokens_mean", group=group,
                                   title=f"Cost vs {x}"))
    runs = list(res.results.values())[:MAX_SIDE_BY_SIDE]
    if runs:
        from llmsim.report.html import build_figures
        names = [str(getattr(r, "name", f"run {i}")) for i, r in enumerate(runs)]
        figs += build_figures(runs, names)
        for n, r in zip(names, runs):
            tl = getattr(r, "timeline", None)
            if isinstance(tl, pd.DataFrame) and len(tl):
                figs.append(F.replica_series_figure(tl, "num_running",
                                                    title="Running requests (batch) per replica",
                                                    y_title="requests", name=n))
                figs.append(F.replica_series_figure(tl, "num_waiting",
                                                    title="Waiting requests per replica",
                                                    y_title="requests", name=n))
    rf = _roofline(res.base_scenario)
    if rf is not None:
        figs.append(rf)
    return figs


def render_sweep_html(res, title: str | None = None) -> str:
    """The sweep report as one HTML string (see module docstring)."""
    title = title or f"llmsim sweep: {res.scenario_name}"
    frame, pts = res.frame, res.points
    n_fail = int(frame["error"].notna().sum())
    parts = [f'<p class="muted">grid: {_esc(", ".join(res.grid_keys) or "(none)")}; '
             f'{len(pts)} point(s) x {len(res.seeds)} seed(s) = {len(frame)} run(s); '
             f'seeds {_esc(res.seeds)}; intervals: {100 * res.confidence:.0f}% Student-t</p>']
    if n_fail:
        parts.append(f'<p class="warn"><b>{n_fail} run(s) failed</b>; the other runs are '
                     "reported as usual.</p>")
        parts.append("<h2>Failed runs</h2>" + _table(
            ["point", "seed", "error"],
            [[r.label, r.seed, r.error] for r in res.failed.itertuples()]))
    rows = []
    for r in pts.to_dict("records"):
        usd_h = r.get("usd_per_hour_mean")
        rows.append([r["label"], r["runs"], r["failed"]]
                    + [mean_ci_text(r, m, f) for m, f in (
                        ("requests_per_s", fmt_num), ("ttft_s_p99", fmt_ms),
                        ("tpot_s_p99", fmt_ms), ("e2e_s_p99", fmt_ms), ("attainment", fmt_pct),
                        ("goodput_requests_per_s", fmt_num))]
                    + [fmt_usd(usd_h) if _finite(usd_h) else "-",
                       mean_ci_text(r, "usd_per_million_output_tokens", fmt_usd)])
    parts.append("<h2>Points</h2>" + _table(
        ["point", "runs", "failed", "req/s", "TTFT p99 ms", "TPOT p99 ms", "E2E p99 ms",
         "SLO met", "goodput req/s", "USD/h", "USD / 1M out tok"], rows))
    show = frame.head(MAX_RUN_ROWS)
    cols = ["label", "seed", "requests_per_s", "ttft_s_p99", "tpot_s_p99", "attainment",
            "usd_per_million_output_tokens", "error"]
    parts.append("<details><summary>Runs" + (f" (first {MAX_RUN_ROWS})" if len(frame) >
                                              MAX_RUN_ROWS else "") + "</summary>"
                 + _table(cols, [[fmt_num(v) if isinstance(v, float) else
                                  ("" if v is None else v) for v in row]
                                 for row in show[cols].itertuples(index=False)])
                 + "</details>")
    return _page(title, parts, _sweep_figures(res))


def write_sweep_html(res, path, title: str | None = None) -> Path:
    """Write the sweep report of ``res`` (a :class:`llmsim.sweep.SweepResult`) to ``path``."""
    return write_report_text(render_sweep_html(res, title), path)


# ----------------------------------------------------------------------------- plan
def _max_rate_part(a) -> tuple[str, list[go.Figure]]:
    ev = a.evaluations
    txt = [f"<h2>Max rate</h2><p>Highest rate meeting the SLO: <b>"
           f"{_esc(fmt_num(a.rate_per_s))} req/s</b> (attainment {_esc(fmt_pct(a.attainment))});"
           f" fails at {_esc(fmt_num(a.fail_rate_per_s))} req/s (attainment "
           f"{_esc(fmt_pct(a.fail_attainment))}). Roofline request capacity: "
           f"<b>{_esc(fmt_num(a.bound_rate_per_s))} req/s</b>; attainment bound from latency "
           f"floors {_esc(fmt_pct(a.attainment_bound))}. Rate key <code>{_esc(a.rate_key)}"
           f"</code>, seeds {_esc(a.seeds)}.</p>"]
    txt += [f'<p class="warn">{_esc(n)}</p>' for n in a.notes]
    figs = []
    if ev is not None and len(ev):
        fig = F.attainment_vs_rate(ev, "rate_per_s", "attainment_mean", target=a.target,
                                   title="SLO attainment vs rate (max-rate search)",
                                   x_title="arrival rate (req/s)")
        if _finite(a.bound_rate_per_s):
            fig.add_vline(x=a.bound_rate_per_s, line=dict(dash="dot", color="gray"),
                          annotation_text="roofline capacity")
        if a.rate_per_s is not None:
            fig.add_vline(x=a.rate_per_s, line=dict(dash="dash", color="#2ca02c"),
                          annotation_text="max rate", annotation_position="bottom right")
        figs.append(fig)
        figs.append(F.latency_vs_load(ev, "rate_per_s", ["ttft_s_p99_mean", "tpot_s_p99_mean"],
                                      title="p99 latency vs rate",
                                      x_title="arrival rate (req/s)", y_title="latency (ms)"))
    return "".join(txt), figs


def _min_cost_part(a) -> tuple[str, list[go.Figure]]:
    b = a.best
    head = (f"<b>{_esc(b.label)}</b> at <b>{_esc(fmt_usd(b.usd_per_hour))}/h</b> ({b.gpus} GPUs, "
            f"attainment {_esc(fmt_pct(b.evaluation.attainment))}, roofline capacity "
            f"{_esc(fmt_num(b.bound_rate_per_s))} req/s)" if b is not None
            else "no candidate meets the SLO")
    roof = (f"{_esc(a.roofline_label)} at {_esc(fmt_usd(a.roofline_usd_per_hour))}/h"
            if a.roofline_usd_per_hour is not None else "none")
    txt = [f"<h2>Min cost at {_esc(fmt_num(a.target_rate_per_s))} req/s</h2>"
           f"<p>Cheapest deployment meeting the SLO: {head}. Cheapest candidate the roofline "
           f"does not rule out: {roof}. {a.simulated} candidate(s) simulated.</p>"]
    txt += [f'<p class="warn">{_esc(n)}</p>' for n in a.notes]
    df = a.candidates.sort_values(["usd_per_hour", "candidate"], na_position="last")
    rows = [[r["label"], fmt_usd(r["usd_per_hour"]) if _finite(r["usd_per_hour"]) else "-",
             r["gpus"], fmt_num(r["bound_rate_per_s"]), fmt_pct(r["attainment_bound"])
             if _finite(r["attainment_bound"]) else "-", r["status"],
             fmt_pct(r["attainment"]) if _finite(r["attainment"]) else "-",
             fmt_ms(r["ttft_s_p99"]) if _finite(r["ttft_s_p99"]) else "-",
             fmt_ms(r["tpot_s_p99"]) if _finite(r["tpot_s_p99"]) else "-", r["reason"]]
            for r in df.to_dict("records")]
    txt.append(_table(["candidate", "USD/h", "GPUs", "roofline req/s", "attainment bound",
                       "status", "attainment", "TTFT p99 ms", "TPOT p99 ms", "reason"], rows))
    figs = [F.candidates_figure(a.candidates, target=a.target)]
    return "".join(txt), figs


def _pareto_part(a) -> tuple[str, list[go.Figure]]:
    rows = [[r["candidate"], f"{r['rate_per_s']:g}", fmt_num(r["tokens_per_s_per_user"]),
             fmt_num(r["output_tokens_per_s_per_gpu"]), fmt_num(r["bound_tokens_per_s_per_gpu"]),
             "yes" if r["meets_slo"] else "no"] for r in a.front.to_dict("records")]
    txt = ["<h2>Pareto front</h2>" + _table(
        ["candidate", "rate req/s", "tok/s per user", "tok/s per GPU",
         "roofline tok/s per GPU", "meets SLO"], rows)]
    txt += [f'<p class="warn">{_esc(n)}</p>' for n in a.notes]
    return "".join(txt), [F.pareto_figure(a.points, curves=a.curves)]


def render_plan_html(res, title: str | None = None) -> str:
    """The plan report as one HTML string (see module docstring)."""
    title = title or f"llmsim plan: {res.scenario_name}"
    parts = [f'<p class="muted">SLO: {_esc(slo_targets_text(res.slo_targets))}; met when the '
             f'mean attainment over {len(res.seeds)} seed(s) is at least '
             f'{_esc(fmt_pct(res.attainment_target))}.</p>']
    figs: list[go.Figure] = []
    for a, fn in ((res.max_rate, _max_rate_part), (res.min_cost, _min_cost_part),
                  (res.pareto, _pareto_part)):
        if a is not None:
            t, f = fn(a)
            parts.append(t)
            figs += f
    rf = _roofline(res.base_scenario, res.shape)
    if rf is not None:
        figs.append(rf)
    return _page(title, parts, figs)


def write_plan_html(res, path, title: str | None = None) -> Path:
    """Write the plan report of ``res`` (a :class:`llmsim.plan.PlanResult`) to ``path``."""
    return write_report_text(render_plan_html(res, title), path)
