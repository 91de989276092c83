"""Streaming statistics of a trace file (``llmsim trace stats``).

Memory does not grow with the number of rows, except for prefix reuse, which keeps the set of
hash ids seen (one entry per distinct block). Length percentiles are exact: lengths are counted
in a histogram of integer values (memory ∝ the longest length); a percentile q is the smallest
length v with at least q % of the requests <= v (nearest rank). Arrival rate over time is kept in
at most 4096 bins whose width doubles (from 1 s) whenever the span outgrows them.

Definitions: span = last − first arrival; mean rate = (rows − 1) / span (one over the mean
inter-arrival time); inter-arrival CV = std / mean of the gaps between consecutive arrivals
(1 for Poisson). Prefix reuse (formats with hash ids): ``block_reuse_fraction`` = blocks whose id
appeared in an earlier request / all blocks; ``prefix_hit_fraction`` = leading blocks of each
prompt already seen (what an unbounded prefix cache could reuse) / all blocks;
``prefix_hit_token_fraction`` the same in tokens.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from llmsim.workload.readers import reader_for_file

_FLUSH = 65536
_MAX_BINS = 4096
PERCENTILES = (50, 90, 99)


def _grow_add(acc: np.ndarray, values: np.ndarray) -> np.ndarray:
    c = np.bincount(values)
    if c.size > acc.size:
        c[: acc.size] += acc
        return c
    acc[: c.size] += c
    return acc


def length_summary(hist: np.ndarray) -> dict | None:
    n = int(hist.sum())
    if n == 0:
        return None
    vals = np.flatnonzero(hist)
    cum = np.cumsum(hist)
    out = {"min": int(vals[0]),
           "mean": float((hist * np.arange(hist.size)).sum() / n)}
    for q in PERCENTILES:
        rank = max(1, math.ceil(q / 100 * n))
        out[f"p{q}"] = int(np.searchsorted(cum, rank))
    out["max"] = int(vals[-1])
    out["total"] = int((hist * np.arange(hist.size, dtype=np.float64)).sum())
    return out


class TraceStats:
    """Accumulates rows; ``summary()`` gives the dict, ``figure()`` the plotly figure."""

    def __init__(self):
        self.n = 0
        self.p_hist = np.zeros(1, dtype=np.int64)
        self.o_hist = np.zeros(1, dtype=np.int64)
        self.rate_counts = np.zeros(_MAX_BINS, dtype=np.int64)
        self.bin_s = 1.0
        self.first_t = None
        self.last_t = None
        self.gap_n = 0
        self.gap_sum = 0.0
        self.gap_sq = 0.0
        self._p, self._o, self._t = [], [], []
        # prefix reuse
        self.block_tokens = 0
        self.seen: set = set()
        self.blocks = 0
        self.reused_blocks = 0
        self.prefix_blocks = 0
        self.prefix_tokens = 0
        self.prompt_tokens_with_ids = 0
        self.requests_with_hit = 0
        self.requests_with_ids = 0

    def add(self, t, p: int, o: int, hash_ids=None, block_tokens: int = 0):
        self.n += 1
        self._p.append(p)
        self._o.append(o)
        if t is not None:
            self._t.append(t)
        if hash_ids is not None:
            self._add_ids(hash_ids, p, block_tokens)
        if len(self._p) >= _FLUSH:
            self._flush()

    def _add_ids(self, ids, p, B):
        self.block_tokens = B
        seen = self.seen
        self.requests_with_ids += 1
        self.blocks += len(ids)
        self.prompt_tokens_with_ids += p
        lead = 0
        leading = True
        reused = 0
        for x in ids:
            if x in seen:
                reused += 1
                if leading:
                    lead += 1
            else:
                leading = False
                seen.add(x)
        self.reused_blocks += reused
        self.prefix_blocks += lead
        self.prefix_tokens += min(lead * B, p)
        if lead:
            self.requests_with_hit += 1

    def _flush(self):
        if self._p:
            self.p_hist = _grow_add(self.p_hist, np.asarray(self._p, dtype=np.int64))
            self.o_hist = _grow_add(self.o_hist, np.asarray(self._o, dtype=np.int64))
            self._p, self._o = [], []
        if self._t:
            t = np.asarray(self._t, dtype=np.float64)
            self._t = []
            if self.first_t is None:
                self.first_t = float(t[0])
            prev = self.last_t
            g = np.diff(t) if prev is None else np.diff(np.concatenate(([prev], t)))
            self.gap_n += g.size
            self.gap_sum += float(g.sum())
            self.gap_sq += float((g * g).sum())
            self.last_t = float(t[-1])
            rel = t - self.first_t
            while rel[-1] / self.bin_s >= _MAX_BINS:
                self.rate_counts = self.rate_counts.reshape(-1, 2).sum(axis=1)
                self.rate_counts = np.concatenate([self.rate_counts,
                                                   np.zeros(_MAX_BINS // 2, dtype=np.int64)])
                self.bin_s *= 2
            idx = (rel / self.bin_s).astype(np.int64)
            self.rate_counts += np.bincount(idx, minlength=_MAX_BINS)[:_MAX_BINS]

    def summary(self) -> dict:
        self._flush()
        out: dict = {"rows": self.n}
        if self.first_t is not None and self.n > 1:
            span = self.last_t - self.first_t
            mean = self.gap_sum / self.gap_n
            var = max(self.gap_sq / self.gap_n - mean * mean, 0.0)
            out.update(span_s=span,
                       mean_rate_per_s=(self.n - 1) / span if span > 0 else None,
                       interarrival_mean_s=mean,
                       interarrival_cv=math.sqrt(var) / mean if mean > 0 else None)
        else:
            out.update(span_s=None, mean_rate_per_s=None, interarrival_mean_s=None,
                       interarrival_cv=None)
        out["prompt_tokens"] = length_summary(self.p_hist)
        out["output_tokens"] = length_summary(self.o_hist)
        if self.requests_with_ids:
            out["prefix"] = {
                "hash_block_tokens": self.block_tokens,
                "requests_with_hash_ids": self.requests_with_ids,
                "blocks": self.blocks,
                "unique_blocks": len(self.seen),
                "block_reuse_fraction": self.reused_blocks / self.blocks if self.blocks else 0.0,
                "prefix_hit_fraction": self.prefix_blocks / self.blocks if self.blocks else 0.0,
                "prefix_hit_token_fraction": (self.prefix_tokens / self.prompt_tokens_with_ids
                                              if self.prompt_tokens_with_ids else 0.0),
                "requests_with_prefix_hit": self.requests_with_hit,
            }
        else:
            out["prefix"] = None
        return out

    def rate_series(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin start in s from the first arrival, requests/s in the bin)."""
        self._flush()
        if self.first_t is None:
            return np.zeros(0), np.zeros(0)
        nb = int((self.last_t - self.first_t) / self.bin_s) + 1
        c = self.rate_counts[:nb]
        return np.arange(nb) * self.bin_s, c / self.bin_s

    def figure(self, title: str):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
        x, y = self.rate_series()
        fig = make_subplots(rows=3, cols=1, subplot_titles=(
            f"arrival rate (requests/s, {self.bin_s:g} s bins)", "prompt tokens", "output tokens"),
            vertical_spacing=0.09)
        if x.size:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="arrival rate",
                                     line_shape="hv"), row=1, col=1)
        for row, hist, name in ((2, self.p_hist, "prompt tokens"), (3, self.o_hist, "output tokens")):
            cx, cy, w = _rebin(hist, 80)
            fig.add_trace(go.Bar(x=cx, y=cy, width=w, name=name), row=row, col=1)
        fig.update_xaxes(title_text="time since first request (s)", row=1, col=1)
        fig.update_xaxes(title_text="tokens", row=2, col=1)
        fig.update_xaxes(title_text="tokens", row=3, col=1)
        fig.update_yaxes(title_text="requests", row=2, col=1)
        fig.update_yaxes(title_text="requests", row=3, col=1)
        fig.update_layout(title=title, showlegend=False, height=950, template="plotly_white")
        return fig


def _rebin(hist: np.ndarray, nbins: int):
    vals = np.flatnonzero(hist)
    if vals.size == 0:
        return [], [], 1
    lo, hi = int(vals[0]), int(vals[-1])
    w = max(1, math.ceil((hi - lo + 1) / nbins))
    edges = np.arange(lo, hi + w + 1, w)
    counts = np.add.reduceat(hist[lo:], edges[:-1] - lo)[: edges.size - 1]
    centers = edges[:-1] + (w - 1) / 2
    return centers.tolist(), counts.tolist(), w


def trace_stats(path, fmt: str | None = None, on_bad_row: str = "error",
                extra: dict | None = None, plot_path=None) -> dict:
    """Statistics of a trace file (format detected when ``fmt`` is None). ``extra`` passes trace
    config keys (``columns``, ``time_unit`` for csv/parquet). ``plot_path`` writes an offline
    plotly HTML (plotly.js embedded) with arrival rate over time and length histograms."""
    reader = reader_for_file(Path(path), fmt, on_bad_row, extra)
    st = TraceStats()
    B = reader.hash_block_tokens
    add = st.add
    if reader.yields_sessions:
        n_sessions = 0
        for _sid, turns in reader:
            n_sessions += 1
            for it in turns:
                add(None, it[1], it[2], it[3], B)
    else:
        n_sessions = None
        for it in reader:
            add(it[0], it[1], it[2], it[3], B)
    out = {"file": str(path), "format": reader.format, **st.summary()}
    if n_sessions is not None:
        out["conversations"] = n_sessions
    c = reader.counts
    for k in ("rows_read", "skipped_bad_rows", "filtered_rows", "failed_rows"):
        out[k] = c[k]
    out["bad_row_examples"] = list(c["bad_row_examples"])
    if plot_path is not None:
        fig = st.figure(f"{Path(path).name} ({reader.format}, {st.n} requests)")
        fig.write_html(str(plot_path), include_plotlyjs=True, full_html=True)
        out["plot"] = str(plot_path)
    return out
