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
from llmsim.workload.items import CAP_OUTPUT, CAP_PROMPT


def window(items: Iterable[tuple], start_s: float, end_s: float | None, counts: dict
           ) -> Iterator[tuple]:
    end = float("inf") if end_s is None else end_s
    for it in items:
        t = it[0]
        if t < start_s:
            counts["outside_window_rows"] += 1
            continue
        if t >= end:
            return
        yield (t - start_s,) + it[1:] if start_s else it


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


def scale_time(items: Iterable[tuple], factor: float) -> Iterator[tuple]:
    for it in items:
        yield (it[0] * factor,) + it[1:]


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


def cap_item(it: tuple, max_p: int | None, max_o: int | None, mode: str, block_tokens: int):
    """Capped item, or None when ``mode == 'drop'`` and a length is over its cap."""
    p, o = it[1], it[2]
    over_p = max_p is not None and p > max_p
    over_o = max_o is not None and o > max_o
    if not (over_p or over_o):
        return it
    if mode == "drop":
        return None
    flags = it[6]
    h = it[3]
    if over_p:
        p = max_p
        flags |= CAP_PROMPT
        if h is not None and block_tokens:
            h = h[: -(-p // block_tokens)]
    if over_o:
        o = max_o
        flags |= CAP_OUTPUT
    return (it[0], p, o, h, it[4], it[5], flags)


def cap(items: Iterable[tuple], max_p, max_o, mode: str, block_tokens: int, counts: dict
        ) -> Iterator[tuple]:
    if max_p is None and max_o is None:
        yield from items
        return
    for it in items:
        c = cap_item(it, max_p, max_o, mode, block_tokens)
        if c is None:
            counts["dropped_over_cap_rows"] += 1
            continue
        yield c
