"""Human-readable rendering of a run summary (the dict of :func:`llmsim.metrics.summary.summarize`).

:func:`format_summary` gives the terminal table ``llmsim run`` prints; :func:`key_metrics` gives
the short (label, text) list the HTML report and comparison tables reuse. Latencies are shown in
milliseconds, fractions as percentages; a missing value (``None``) prints as ``-``. Both accept
summaries that lack optional sections (``classes``, ``pools``, ``notes``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

#: (summary key, label) of the latency blocks, in display order.
LATENCY_ROWS: tuple[tuple[str, str], ...] = (
    ("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E"),
    ("queue_s", "Queue"))

_DASH = "-"


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (thousands separated when large); ``-`` for
    None."""
    if x is None:
        return _DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if x != x:  # NaN slipped through
        return _DASH
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_ms(seconds: Any) -> str:
    """Seconds shown as milliseconds (``-`` for None)."""
    if seconds is None:
        return _DASH
    ms = float(seconds) * 1000.0
    return f"{ms:,.0f}" if abs(ms) >= 1000 else f"{ms:.3g}"


def fmt_pct(fraction: Any) -> str:
    """A fraction 0–1 shown as a percentage (``-`` for None)."""
    if fraction is None:
        return _DASH
    return f"{100.0 * float(fraction):.1f}%"


def fmt_usd(usd: Any) -> str:
    if usd is None:
        return _DASH
    return f"${usd:,.2f}" if abs(usd) >= 0.01 or usd == 0 else f"${usd:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ",
           label_column: bool = True) -> list[str]:
    """Aligned text table: the first column left-aligned when it holds labels
    (``label_column``), every other column right-aligned."""
    cols = [list(header)] + [list(r) for r in rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
    first = str.ljust if label_column else str.rjust
    lines = []
    for r in cols:
        cells = [first(str(r[0]), widths[0])] + [str(c).rjust(w)
                                                 for c, w in zip(r[1:], widths[1:])]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return default
        d = d[k]
    return d


def slo_targets_text(targets: Mapping | None) -> str:
    """``TTFT <= 1000 ms, TPOT <= 50 ms`` or ``none``."""
    if not targets:
        return "none"
    parts = [f"{label} <= {fmt_ms(targets.get(key))} ms"
             for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E"))
             if targets.get(key) is not None]
    return ", ".join(parts) if parts else "none"


def key_metrics(summary: Mapping) -> list[tuple[str, str]]:
    """The headline metrics of one run as (label, formatted value) pairs, in display order."""
    req = summary.get("requests", {}) or {}
    thr = summary.get("throughput", {}) or {}
    slo = summary.get("slo", {}) or {}
    cost = summary.get("cost", {}) or {}
    rows = [
        ("Requests arrived", fmt_num(req.get("arrived"))),
        ("Finished", fmt_num(req.get("finished"))),
        ("Rejected", fmt_num(req.get("rejected"))),
        ("Unfinished", fmt_num(req.get("unfinished"))),
        ("Failed", fmt_num(req.get("failed"))),
        ("Preemptions", fmt_num(req.get("preemptions"))),
        ("Throughput (req/s)", fmt_num(thr.get("requests_per_s"))),
        ("Input tokens/s", fmt_num(thr.get("input_tokens_per_s"))),
        ("Output tokens/s", fmt_num(thr.get("output_tokens_per_s"))),
    ]
    for key, label in LATENCY_ROWS:
        stats = summary.get(key) or {}
        for p in ("p50", "p90", "p99"):
            rows.append((f"{label} {p} (ms)", fmt_ms(stats.get(p))))
    rows += [
        ("SLO targets", slo_targets_text(slo.get("targets"))),
        ("SLO attainment", fmt_pct(slo.get("attainment"))),
        ("Goodput (req/s)", fmt_num(slo.get("goodput_requests_per_s"))),
        ("GPU-hours", fmt_num(cost.get("gpu_hours"))),
        ("Cost (USD)", fmt_usd(cost.get("usd"))),
        ("USD per 1M output tokens", fmt_usd(cost.get("usd_per_million_output_tokens"))),
        ("Overload", "YES" if summary.get("overload") else "no"),
    ]
    return rows


def format_summary(summary: Mapping) -> str:
    """A readable multi-line terminal report of a summary dict (no trailing newline)."""
    out: list[str] = []
    name = summary.get("scenario", "?")
    out.append(f"llmsim run: {name} (seed {summary.get('seed', '-')})")
    sim = summary.get("simulated_s")
    wall = summary.get("wall_s")
    ev = summary.get("events")
    out.append(f"  simulated {fmt_num(sim)} s in {fmt_num(wall)} s wall clock, "
               f"{fmt_num(ev)} events")
    if summary.get("overload"):
        out.append("")
        out.append("  !! OVERLOAD: the offered load exceeds what this deployment sustains; "
                   "see notes. Latencies below cover finished requests only.")

    req = summary.get("requests") or {}
    out += ["", "Requests"]
    out += _table(["arrived", "finished", "rejected", "unfinished", "failed", "preemptions"],
                  [[fmt_num(req.get(k)) for k in ("arrived", "finished", "rejected",
                                                  "unfinished", "failed", "preemptions")]],
                  label_column=False)

    thr = summary.get("throughput") or {}
    window = thr.get("window")
    wtext = {"first_arrival_to_last_finish": "first arrival to last finish",
             "simulated_s": "whole simulated time"}.get(window, window or "")
    out += ["", f"Throughput (finished requests, over {fmt_num(thr.get('duration_s'))} s"
                + (f", {wtext})" if wtext else ")")]
    out += _table(["requests/s", "input tokens/s", "output tokens/s"],
                  [[fmt_num(thr.get("requests_per_s")), fmt_num(thr.get("input_tokens_per_s")),
                    fmt_num(thr.get("output_tokens_per_s"))]], label_column=False)

    out += ["", "Latency (ms, finished requests; ITL pooled over tokens)"]
    lat_rows = []
    for key, label in LATENCY_ROWS:
        st = summary.get(key) or {}
        lat_rows.append([label] + [fmt_ms(st.get(k)) for k in ("mean", "p50", "p90", "p99")])
    out += _table(["", "mean", "p50", "p90", "p99"], lat_rows)

    slo = summary.get("slo") or {}
    out += ["", "SLO"]
    out.append(f"  targets: {slo_targets_text(slo.get('targets'))}")
    for tenant, tg in (slo.get("class_targets") or {}).items():
        out.append(f"  class {tenant}: {slo_targets_text(tg)}")
    out.append(f"  attainment {fmt_pct(slo.get('attainment'))} of arrived requests, goodput "
               f"{fmt_num(slo.get('goodput_requests_per_s'))} req/s")

    cost = summary.get("cost") or {}
    out += ["", "Cost"]
    out.append(f"  {fmt_num(cost.get('gpu_hours'))} GPU-hours, {fmt_usd(cost.get('usd'))}, "
               f"{fmt_usd(cost.get('usd_per_million_output_tokens'))} per million output tokens")

    pools = summary.get("pools") or {}
    if pools:
        out += ["", "Pools"]
        rows = []
        # prefix-cache hit rate column only when some pool caches prefixes
        hits = any(p.get("prefix_hit_rate") is not None for p in pools.values())
        for pname, p in pools.items():
            row = [str(pname), str(p.get("hardware", _DASH)), str(p.get("role", _DASH)),
                   fmt_num(p.get("replicas")), fmt_num(p.get("gpus")),
                   fmt_pct(p.get("utilization")), fmt_pct(p.get("kv_usage_mean"))]
            if hits:
                row.append(fmt_pct(p.get("prefix_hit_rate")))
            rows.append(row + [fmt_num(p.get("gpu_hours")), fmt_usd(p.get("usd"))])
        out += _table(["pool", "hardware", "role", "replicas", "GPUs", "busy", "KV mean"]
                      + (["prefix hit"] if hits else []) + ["GPU-h", "USD"], rows)

    classes = summary.get("classes") or {}
    if classes:
        out += ["", "Classes"]
        rows = []
        for cname, c in classes.items():
            rows.append([str(cname), fmt_num(c.get("count")), fmt_num(c.get("finished")),
                         fmt_pct(c.get("attainment")),
                         fmt_ms(_get(c, "ttft_s", "p99")), fmt_ms(_get(c, "tpot_s", "p99")),
                         fmt_ms(_get(c, "e2e_s", "p99"))])
        out += _table(["class", "count", "finished", "SLO met", "TTFT p99 ms", "TPOT p99 ms",
                       "E2E p99 ms"], rows)

    notes = summary.get("notes") or []
    if notes:
        out += ["", "Notes"]
        out += [f"  - {n}" for n in notes]
    return "\n".join(out)
