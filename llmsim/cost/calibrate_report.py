"""Text tables, JSON and the plotly chart of a cost-model validation (predicted vs measured).

Contract: functions of the evaluated table of :func:`llmsim.cost.calibrate.evaluate` (columns
``group, model, tp, split, ape, ratio, predicted_s, measured_s`` ...). Errors are printed as
percentages; JSON keeps fractions. :func:`write_plot` writes one self-contained offline HTML
file (plotly.js inlined).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.cost.calibrate import summarize, target_report

__all__ = ["error_tables", "format_tables", "format_targets", "report_json", "write_plot"]

_BY = {"operator family": "group", "model": "model", "TP degree": "tp"}


def _tp_label(v) -> str:
    return "-" if not np.isfinite(v) else str(int(v))


def error_tables(ev: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{title: table}`` with n / median / p90 APE / bias per group and split (TP degrees in
    numeric order, ``-`` for rows without one)."""
    out = {}
    for title, col in _BY.items():
        t = summarize(ev, [col, "split"])
        if col == "tp":
            t["tp"] = t["tp"].map(_tp_label)
        out[title] = t
    return out


def _pct(x: float) -> str:
    return f"{100 * x:6.1f}%"


def format_tables(tables: dict[str, pd.DataFrame]) -> str:
    """Aligned text: one block per table; columns n, median, p90, bias per split."""
    out = []
    for title, t in tables.items():
        key = t.columns[0]
        out.append(f"Absolute percentage error by {title} (median / p90; bias = median "
                   "predicted/measured - 1):")
        width = max([len(str(k)) for k in t[key]] + [len(title)])
        out.append(f"  {title:<{width}}  {'split':<8} {'n':>7}  {'median':>7}  {'p90':>7}  "
                   f"{'bias':>7}")
        for row in t.itertuples(index=False):
            k, split, n, med, p90, bias = row
            out.append(f"  {str(k):<{width}}  {split:<8} {n:>7}  {_pct(med)}  {_pct(p90)}  "
                       f"{_pct(bias)}")
        out.append("")
    return "\n".join(out)


def format_targets(targets: list[dict]) -> str:
    """The target check as text (judged on held-out rows when there are any)."""
    out = ["Targets (median absolute percentage error):"]
    for t in targets:
        j = t[t["judged_on"]]
        extra = "  ".join(f"{s} {_pct(t[s]['median_ape']).strip()} (n={t[s]['n']})"
                          for s in ("holdout", "fit") if t.get(s))
        mark = "met" if t["met"] else "NOT met"
        out.append(f"  {t['target']:<26} <= {100 * t['limit']:.0f}%: {mark:<7} "
                   f"[{t['judged_on']}: {_pct(j['median_ape']).strip()}, p90 "
                   f"{_pct(j['p90_ape']).strip()}]  {extra}")
    return "\n".join(out)


def report_json(ev: pd.DataFrame) -> dict:
    """Summaries as plain data: tables (records) and targets."""
    tables = error_tables(ev)
    splits = {s: int((ev["split"] == s).sum()) for s in ("fit", "holdout", "unused")}
    splits["not_predicted"] = int((~np.isfinite(ev["predicted_s"].to_numpy(float))).sum())
    return {"rows": splits,
            "by_op": tables["operator family"].to_dict("records"),
            "by_model": tables["model"].to_dict("records"),
            "by_tp": tables["TP degree"].to_dict("records"),
            "targets": target_report(ev)}


def write_plot(ev: pd.DataFrame, path: str | Path, title: str, max_points: int = 1500) -> Path:
    """Offline HTML: predicted against measured time (log-log), one trace per operator family
    and split (at most ``max_points`` evenly spaced rows each), the y = x line and a ±15%
    band."""
    import plotly.graph_objects as go

    ok = ev[np.isfinite(ev["predicted_s"].to_numpy(float))]
    fig = go.Figure()
    for (group, split), sub in ok.groupby(["group", "split"], sort=True):
        if len(sub) > max_points:     # evenly spaced rows keep the file small
            sub = sub.iloc[np.linspace(0, len(sub) - 1, max_points).round().astype(int)]
        text = [f"{m} tp={_tp_label(tp)} tokens={tok:g} batch={b:g} size={sz:g}<br>{f}:{ln}"
                for m, tp, tok, b, sz, f, ln in zip(
                    sub["model"], sub["tp"], sub["tokens"], sub["batch"], sub["size_bytes"],
                    sub["file"], sub["line"])]
        fig.add_trace(go.Scattergl(
            x=sub["measured_s"] * 1e3, y=sub["predicted_s"] * 1e3, mode="markers",
            name=f"{group} ({split})", text=text, marker={"size": 4, "opacity": 0.6,
                                                          "symbol": "circle" if split != "holdout"
                                                          else "diamond"},
            hovertemplate="measured %{x:.4g} ms<br>predicted %{y:.4g} ms<br>%{text}"))
    lo = float(ok["measured_s"].min() * 1e3 / 2) if len(ok) else 1e-3
    hi = float(ok["measured_s"].max() * 1e3 * 2) if len(ok) else 1e3
    for k, dash in ((1.0, "solid"), (1.15, "dot"), (0.85, "dot")):
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo * k, hi * k], mode="lines",
                                 line={"color": "black", "dash": dash, "width": 1},
                                 name="y = x" if k == 1 else f"{k - 1:+.0%}", hoverinfo="skip"))
    fig.update_layout(title=title, xaxis={"type": "log", "title": "measured (ms)"},
                      yaxis={"type": "log", "title": "predicted (ms)"},
                      legend={"font": {"size": 10}}, height=800)
    path = Path(path)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path
