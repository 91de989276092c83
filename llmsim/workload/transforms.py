"""Trace transforms, each a generator over items (see :mod:`llmsim.workload.items`), applied in
this order by :mod:`llmsim.workload.sources`:

1. ``window(start_s, end_s)`` — keep start_s <= t < end_s (t from the trace's first row) and
   re-base to start_s; rows before the window are counted in ``outside_window_rows``, reading
   stops at the first row at or after end_s.
2. ``sample(fraction)`` — keep each row (ShareGPT: each conversation) with probability
   ``fraction`` (seeded Bernoulli); the others are counted in ``sampled_out_rows``.
3. time scaling — ``speedup``: t / speedup; ``rate_per_s``: t · (observed rate / target) where
   the observed mean rate (n − 1) / (t_last − t_first) of the windowed, sampled trace is measured
   by a first streaming pass.
4. ``retime`` — synthetic arrivals replace the timestamps (lengths-only traces, or to re-time any
   trace): the i-th row gets the i-th arrival of the process.
5. ``cap`` — ``max_prompt_tokens``/``max_output_tokens``: ``clip`` sets longer lengths to the
   cap (flags the request so the Workload counts it in ``capped_prompt_requests`` /
   ``capped_output_requests``; hash ids are cut to the clipped prompt), ``drop`` leaves the row
   out (counted in ``dropped_over_cap_rows``).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from llmsim.errors import InputError, input_problem
from llmsim.workload.arrivals import CHUNK, iter_times
# the per-item transforms run compiled in the compiled build (see llmsim/workload/stream.py)
from llmsim.workload.stream import cap, cap_item, scale_time, window

__all__ = ["window", "sample", "scale_time", "observed_rate", "retime", "cap_item", "cap"]


def sample(records: Iterable, fraction: float, rng: np.random.Generator, counts: dict) -> Iterator:
    """Bernoulli(fraction) thinning of any records (items or sessions), uniforms drawn in chunks."""
    u = rng.random(CHUNK)
    i = 0
    for r in records:
        if i == CHUNK:
            u = rng.random(CHUNK)
            i = 0
        keep = u[i] < fraction
        i += 1
        if keep:
            yield r
        else:
            counts["sampled_out_rows"] += 1


def observed_rate(items: Iterable[tuple], where: str) -> float:
    """(n − 1) / span of a time-ordered item stream (one streaming pass)."""
    n = 0
    first = last = None
    for it in items:
        if first is None:
            first = it[0]
        last = it[0]
        n += 1
    if n < 2 or last <= first:
        raise InputError(input_problem(
            "cannot rescale to rate_per_s: the trace (after window/sampling) has fewer than two "
            "requests or zero time span", where=where, key="rate_per_s"))
    return (n - 1) / (last - first)


def retime(items: Iterable[tuple], arrival_chunks: Iterable[np.ndarray]) -> Iterator[tuple]:
    times = iter_times(arrival_chunks)
    for it in items:
        t = next(times, None)
        if t is None:          # a finite rate curve ended: no more arrivals
            return
        yield (t,) + it[1:]
