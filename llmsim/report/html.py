"""Self-contained offline HTML report of one run or a side-by-side comparison of several.

:func:`write_html` takes a ``Result`` (anything with ``.requests``, ``.timeline``, ``.summary``,
``.itl_gaps_s``, ``.itl_weights`` and ``.name``) or a list of them and writes one HTML file that
opens without network access: plotly.js is embedded once in the page head and every figure is
a ``<div>`` that uses it. Figure ids are fixed (``fig-0``, ``fig-1``, …) so the same results give
the same file.

One run: headline metrics, notes (an overload warning first), pools and classes tables, TTFT /
TPOT / ITL / E2E CDFs with SLO lines, throughput, queue length and KV use over time, request
status, and the full summary JSON. Several runs: a metrics table with one column per run, the
same figures overlaid (KV use: one figure per run) and each run's notes.
"""
from __future__ import annotations

import html as _html
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from llmsim.errors import InputError, input_problem
from llmsim.metrics.format import fmt_ms, fmt_num, fmt_pct, fmt_usd, key_metrics
from llmsim.report import figures as F

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:0.92em}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:10px 14px;border-radius:4px}
.muted{color:#777} pre{background:#f7f7f7;padding:10px;overflow:auto;font-size:0.85em}
"""

#: Figure titles (also what tests look for).
TITLES = {
    "ttft": "TTFT CDF", "tpot": "TPOT CDF", "itl": "ITL CDF", "e2e": "E2E latency CDF",
}


def _esc(x: Any) -> str:
    return _html.escape(str(x), quote=True)


def _as_runs(results: Any) -> list:
    if results is None:
        raise InputError(input_problem("nothing to report: no results given", where="report"))
    if hasattr(results, "summary"):
        runs = [results]
    else:
        try:
            runs = list(results)
        except TypeError:
            raise InputError(input_problem("expected a Result or a list of Results",
                                           where="report", value=type(results).__name__)
                             ) from None
    if not runs:
        raise InputError(input_problem("nothing to report: the list of results is empty",
                                       where="report"))
    for i, r in enumerate(runs):
        missing = [a for a in ("requests", "summary") if not hasattr(r, a)]
        if missing:
            raise InputError(input_problem(
                f"result has no attribute(s) {', '.join(missing)}; expected a Result",
                where=f"report results[{i}]", value=type(r).__name__))
    return runs


def _names(runs: Sequence) -> list[str]:
    """Display names, made unique with a #n suffix."""
    names, seen = [], {}
    for i, r in enumerate(runs):
        base = getattr(r, "name", None) or (r.summary or {}).get("scenario") or f"run {i + 1}"
        base = str(base)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base} #{seen[base]}")
    return names


def _finished_latencies(requests: pd.DataFrame, summary: dict) -> pd.DataFrame:
    """Finished rows with the derived latency columns (computed when absent)."""
    if not {"ttft_s", "tpot_s", "e2e_s"}.issubset(requests.columns):
        from llmsim.metrics.summary import add_derived_columns
        requests = add_derived_columns(requests, (summary.get("slo") or {}).get("targets"))
    fin = (requests["status"] == "finished").to_numpy(dtype=bool, na_value=False)
    return requests.loc[fin, ["ttft_s", "tpot_s", "e2e_s"]]


def _targets(runs: Sequence, key: str) -> list[float]:
    out = []
    for r in runs:
        t = ((r.summary or {}).get("slo") or {}).get("targets") or {}
        if t.get(key) is not None:
            out.append(float(t[key]))
    return sorted(set(out))


def _has_timeline(r) -> bool:
    tl = getattr(r, "timeline", None)
    return isinstance(tl, pd.DataFrame) and len(tl) > 0


def _itl(r) -> tuple[np.ndarray, np.ndarray]:
    g = getattr(r, "itl_gaps_s", None)
    w = getattr(r, "itl_weights", None)
    if g is None or w is None:
        return np.empty(0), np.empty(0)
    return np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)


def build_figures(runs: Sequence, names: Sequence[str]) -> list[go.Figure]:
    """The report's figures, in page order (see module docstring)."""
    lat = [_finished_latencies(r.requests, r.summary or {}) for r in runs]
    figs = [
        F.cdf_figure([(n, d["ttft_s"]) for n, d in zip(names, lat)], title=TITLES["ttft"],
                     x_title="time to first token (ms)", slo_s=_targets(runs, "ttft_s"),
                     slo_label="TTFT SLO"),
        F.cdf_figure([(n, d["tpot_s"]) for n, d in zip(names, lat)], title=TITLES["tpot"],
                     x_title="time per output token (ms)", slo_s=_targets(runs, "tpot_s"),
                     slo_label="TPOT SLO"),
        F.cdf_figure([(n, *_itl(r)) for n, r in zip(names, runs)], title=TITLES["itl"],
                     x_title="inter-token latency (ms)", y_title="fraction of tokens",
                     slo_s=_targets(runs, "tpot_s"), slo_label="TPOT SLO"),
        F.cdf_figure([(n, d["e2e_s"]) for n, d in zip(names, lat)], title=TITLES["e2e"],
                     x_title="end-to-end latency (ms)", slo_s=_targets(runs, "e2e_s"),
                     slo_label="E2E SLO"),
    ]
    with_tl = [(n, r.timeline) for n, r in zip(names, runs) if _has_timeline(r)]
    if with_tl:
        figs.append(F.throughput_figure(with_tl))
        figs.append(F.queue_figure(with_tl))
        for n, tl in with_tl:
            figs.append(F.kv_usage_figure(tl, name=n if len(runs) > 1 else None))
    figs.append(F.status_figure([(n, r.requests) for n, r in zip(names, runs)]))
    if len(runs) == 1:
        figs += roofline_figures(runs[0])
    return figs


def roofline_figures(run) -> list[go.Figure]:
    """One roofline chart per pool of a single run: the operators of a prefill of the run's
    median prompt and of a decode step at the pool's mean running batch and mean context,
    from the pool's cost model (nothing when the Result has no scenario)."""
    scn = getattr(run, "scenario", None)
    if scn is None or not hasattr(scn, "cluster"):
        return []
    from llmsim.cost import CostModel
    from llmsim.cost.types import BatchAggregates
    df = run.requests
    prompt = 1024
    ctx = 1024
    if df is not None and len(df):
        prompt = max(2, int(np.nanmedian(df["num_prompt_tokens"])))
        ctx = max(1, int(np.nanmean(df["num_prompt_tokens"] + df["num_output_tokens"] / 2)))
    tl = run.timeline if _has_timeline(run) else None
    model = scn.resolved_model()
    out = []
    for pool in scn.cluster.pools:
        if getattr(pool, "stages", None):
            continue   # decentralized pipelines mix cards: no single roofline
        hw = pool.resolved_hardware()
        cost = CostModel(model, hw, pool.parallel_config(), pool.quant_config())
        batch = 1
        if tl is not None and "pool" in tl and (tl["pool"] == pool.name).any():
            running = tl.loc[tl["pool"] == pool.name, "num_running"]
            batch = max(1, int(round(float(running[running > 0].mean())))) \
                if (running > 0).any() else 1
        pre = cost.breakdown(BatchAggregates(1, prompt, 0, prompt * prompt, 0, 0, 0, 1))
        dec = cost.breakdown(BatchAggregates(decode_seqs=batch, decode_ctx_sum=batch * ctx,
                                             num_sampled=batch))
        dtype = pool.quant_config().activation_dtype
        eff = hw.efficiency
        out.append(F.roofline_figure(
            [(f"prefill of {prompt} tokens", [o.as_dict() for o in pre]),
             (f"decode, batch {batch} at context {ctx}", [o.as_dict() for o in dec])],
            peak_flops_per_s=hw.peak_for(dtype),
            memory_bandwidth_bytes_per_s=hw.memory_bandwidth_bytes_per_s,
            title=f"Roofline: pool {pool.name} ({hw.name}, tp={pool.parallel.tp})",
            efficiency=(eff.gemm_eff_max, eff.mem_eff)))
    return out


def _table_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_table(summaries: Sequence[dict], names: Sequence[str]) -> str:
    cols = [key_metrics(s) for s in summaries]
    labels = [label for label, _ in cols[0]]
    rows = [[label] + [dict(c).get(label, "-") for c in cols] for label in labels]
    return _table_html(["metric"] + list(names), rows)


def _pools_table(summary: dict) -> str:
    pools = summary.get("pools") or {}
    if not pools:
        return ""
    rows = [[name, p.get("hardware", "-"), p.get("role", "-"), fmt_num(p.get("replicas")),
             fmt_num(p.get("gpus")), fmt_pct(p.get("utilization")),
             fmt_pct(p.get("kv_usage_mean")), fmt_num(p.get("gpu_hours")), fmt_usd(p.get("usd"))]
            for name, p in pools.items()]
    return "<h2>Pools</h2>" + _table_html(
        ["pool", "hardware", "role", "replicas", "GPUs", "busy", "KV mean", "GPU-hours", "USD"],
        rows)


def _classes_table(summary: dict) -> str:
    classes = summary.get("classes") or {}
    if not classes:
        return ""
    rows = []
    for name, c in classes.items():
        rows.append([name, fmt_num(c.get("count")), fmt_num(c.get("finished")),
                     fmt_pct(c.get("attainment"))]
                    + [fmt_ms(((c.get(k) or {}).get(p))) for k in ("ttft_s", "tpot_s", "e2e_s")
                       for p in ("p50", "p99")])
    return "<h2>Classes</h2>" + _table_html(
        ["class", "count", "finished", "SLO met", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms",
         "TPOT p99 ms", "E2E p50 ms", "E2E p99 ms"], rows)


def _notes_html(summary: dict, name: str | None = None) -> str:
    notes = list(summary.get("notes") or [])
    if not notes and not summary.get("overload"):
        return ""
    prefix = f"{_esc(name)}: " if name else ""
    parts = []
    if summary.get("overload"):
        parts.append(f'<p class="warn"><b>{prefix}Overload.</b> The offered load exceeds what '
                     "this deployment sustains; latency percentiles cover finished requests "
                     "only. See the notes.</p>")
    if notes:
        parts.append(f"<p><b>{prefix}Notes</b></p><ul>"
                     + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(parts)


def render_html(results: Any, title: str | None = None) -> str:
    """The report as one HTML string (see :func:`write_html`)."""
    runs = _as_runs(results)
    names = _names(runs)
    summaries = [dict(r.summary or {}) for r in runs]
    single = len(runs) == 1
    if title is None:
        title = (f"llmsim report: {names[0]}" if single
                 else f"llmsim comparison: {', '.join(names)}")
    parts = [f"<h1>{_esc(title)}</h1>"]
    if single:
        s = summaries[0]
        parts.append(f'<p class="muted">scenario {_esc(s.get("scenario", "-"))}, seed '
                     f'{_esc(s.get("seed", "-"))}, simulated {_esc(fmt_num(s.get("simulated_s")))}'
                     f' s in {_esc(fmt_num(s.get("wall_s")))} s wall clock, '
                     f'{_esc(fmt_num(s.get("events")))} events</p>')
        parts.append(_notes_html(s))
        parts.append("<h2>Summary</h2>" + _metrics_table(summaries, names))
        parts.append(_pools_table(s))
        parts.append(_classes_table(s))
    else:
        parts.append("<h2>Key metrics</h2>" + _metrics_table(summaries, names))
        parts += [_notes_html(s, n) for s, n in zip(summaries, names)]

    figs = build_figures(runs, names)
    parts.append("<h2>Figures</h2><div class=\"grid\">")
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{i}",
                                 default_width="100%", default_height="420px",
                                 config={"displaylogo": False}))
    parts.append("</div>")
    for s, n in zip(summaries, names):
        label = "Summary JSON" + ("" if single else f" ({n})")
        parts.append(f"<details><summary>{_esc(label)}</summary><pre>"
                     f"{_esc(json.dumps(s, indent=2, default=str))}</pre></details>")
    body = "\n".join(p for p in parts if p)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head>"
            f"<body>\n{body}\n</body></html>\n")


def write_html(results: Any, path: str | Path, title: str | None = None) -> Path:
    """Write the offline HTML report of ``results`` (a Result or a list of Results) to
    ``path`` (parent folders are created) and return the path.

    Raises :class:`InputError` when there is nothing to report or ``path`` cannot be written.
    """
    return write_report_text(render_html(results, title), path)


def write_report_text(text: str, path: str | Path) -> Path:
    """Write an HTML page to ``path`` (parent folders created); InputError naming the path
    when it cannot be written."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(input_problem(f"cannot write the report: {e.strerror or e}",
                                       where=str(out))) from None
    return out
