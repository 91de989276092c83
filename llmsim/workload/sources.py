"""One request source → a time-ordered stream of items.

* ``synthetic_items``: arrival times (chunks) + length sampler (+ sessions);
* ``trace_items``: a trace reader through the transforms of :mod:`llmsim.workload.transforms`;
* ``SplitArrivals``: one arrival process whose arrivals are marked with a class drawn with the
  sources' shares, giving each share-source its own (lazily buffered) stream of start times.

Every generator is lazy; nothing reads ahead more than one chunk.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np

from llmsim.errors import InputError, input_problem
from llmsim.workload import config as C
from llmsim.workload import transforms as T
from llmsim.workload.arrivals import CHUNK, arrival_chunks, iter_times
from llmsim.workload.lengths import make_marginal, make_pair_sampler
from llmsim.workload.readers import open_reader
from llmsim.workload.sessions import BlockIds, schedule_turns
from llmsim.workload.stream import NonEmpty, SyntheticItems

#: Counters kept per source (``Workload.stats``), filled as iteration goes:
#: requests — requests yielded; rows_read — trace rows (ShareGPT: conversations) read;
#: skipped_bad_rows — malformed rows skipped under ``on_bad_row: skip``; filtered_rows — rows
#: left out by BurstGPT model/log-type filters; failed_rows — BurstGPT failed requests dropped;
#: outside_window_rows — rows before the window; sampled_out_rows — rows removed by
#: ``sample_fraction``; dropped_over_cap_rows — rows over a cap with ``cap_mode: drop``;
#: capped_{prompt,output}_requests — yielded requests whose length a trace cap clipped;
#: truncated_{prompt,output}_requests — yielded requests whose synthetic draw fell outside the
#: distribution's [min, max] (clipped or redrawn); sessions — sessions started;
#: session_turns_dropped — turns not issued because the prompt would exceed the session's
#: ``max_prompt_tokens``. Reading runs at most one row ahead of the last yielded request.
SOURCE_COUNTER_KEYS = (
    "requests", "rows_read", "skipped_bad_rows", "filtered_rows", "failed_rows",
    "outside_window_rows", "sampled_out_rows", "dropped_over_cap_rows",
    "capped_prompt_requests", "capped_output_requests",
    "truncated_prompt_requests", "truncated_output_requests",
    "sessions", "session_turns_dropped",
)


def new_source_counts() -> dict:
    d = {k: 0 for k in SOURCE_COUNTER_KEYS}
    d["bad_row_examples"] = []
    return d


class _Take:
    """Hands out k values at a time from arrays drawn ``CHUNK`` at a time."""

    def __init__(self, draw):
        self.draw = draw
        self.bufs = None
        self.i = 0

    def take(self, k: int) -> list[np.ndarray]:
        parts = None
        while k > 0:
            if self.bufs is None or self.i >= self.bufs[0].size:
                self.bufs = list(self.draw(max(CHUNK, k)))
                self.i = 0
            m = min(k, self.bufs[0].size - self.i)
            chunk = [b[self.i:self.i + m] for b in self.bufs]
            parts = chunk if parts is None else [np.concatenate([a, b]) for a, b in zip(parts, chunk)]
            self.i += m
            k -= m
        return parts


# ------------------------------------------------------------------------------------------
# synthetic
# ------------------------------------------------------------------------------------------

def synthetic_items(part, start_chunks: Iterator[np.ndarray], rng_len: np.random.Generator,
                    rng_sess: np.random.Generator, base_dir: Path, key: str, counts: dict,
                    session_prefix: str | None) -> Iterator[tuple]:
    """Items of a synthetic source (lazy: the length sampler is built at the first ``next``)."""
    if part.sessions is None:
        # compiled loop per item (llmsim/workload/stream.py)
        return SyntheticItems(start_chunks,
                              lambda: make_pair_sampler(part, rng_len, base_dir, key).draw)
    return _session_items(part, start_chunks, rng_len, rng_sess, base_dir, key, counts,
                          session_prefix)


def _session_items(part, start_chunks, rng_len, rng_sess, base_dir, key, counts,
                   session_prefix) -> Iterator[tuple]:
    sampler = make_pair_sampler(part, rng_len, base_dir, key)
    yield from schedule_turns(_synthetic_sessions(part.sessions, sampler, start_chunks, rng_sess,
                                                  base_dir, key, counts, session_prefix))


def _synthetic_sessions(sc: C.SessionConfig, sampler, start_chunks, rng, base_dir, key, counts,
                        prefix):
    pairs = _Take(sampler.draw)
    if isinstance(sc.turns, int):
        n_turns = None
    else:
        tm = make_marginal(sc.turns, base_dir, f"{key}.sessions.turns")
        n_turns = _Take(lambda n: (tm.draw(rng, n)[0],))
    if sc.think_time_dist == "exponential":
        gaps = _Take(lambda n: (rng.exponential(sc.think_time_s, n),))
    else:
        gaps = None
    ids = BlockIds(sc.hash_block_tokens, sc.shared_prefix_tokens)
    S = sc.shared_prefix_tokens
    k = 0
    for start in iter_times(start_chunks):
        n = sc.turns if n_turns is None else int(n_turns.take(1)[0][0])
        u, o, fl = pairs.take(n)
        g = gaps.take(n - 1)[0] if (gaps is not None and n > 1) else [sc.think_time_s] * (n - 1)
        sid = k if prefix is None else f"{prefix}{k}"
        k += 1
        counts["sessions"] += 1
        u, o, fl = u.tolist(), o.tolist(), fl.tolist()
        # prompts of each turn; stop before one over max_prompt_tokens
        prompts = []
        hist = S
        for j in range(n):
            P = hist + u[j]
            if sc.max_prompt_tokens is not None and P > sc.max_prompt_tokens:
                counts["session_turns_dropped"] += n - j
                break
            prompts.append(P)
            hist = P + o[j]
        if not prompts:
            continue
        base = ids.new_session(prompts[-1] + o[len(prompts) - 1])
        turns = [(None, P, o[j], ids.prompt_ids(base, P), sid, None, fl[j])
                 for j, P in enumerate(prompts)]
        yield start, turns, g


class SplitArrivals:
    """Marks each arrival of one process with a class (probabilities ``shares``); ``stream(c)``
    yields chunks of class c's arrival times. Buffers only arrivals another class has not yet
    consumed."""

    def __init__(self, chunks: Iterator[np.ndarray], shares: list[float], rng: np.random.Generator):
        self.chunks = iter(chunks)
        self.cum = np.cumsum(np.asarray(shares, dtype=np.float64))
        self.cum[-1] = 1.0
        self.rng = rng
        self.queues = [deque() for _ in shares]
        self.done = False

    def _pull(self) -> bool:
        if self.done:
            return False
        t = next(self.chunks, None)
        if t is None:
            self.done = True
            return False
        cls = np.searchsorted(self.cum, self.rng.random(t.size), side="right")
        for c, q in enumerate(self.queues):
            sel = t[cls == c]
            if sel.size:
                q.append(sel)
        return True

    def stream(self, c: int) -> Iterator[np.ndarray]:
        q = self.queues[c]
        while True:
            if q:
                yield q.popleft()
            elif not self._pull():
                return


# ------------------------------------------------------------------------------------------
# traces
# ------------------------------------------------------------------------------------------

def trace_items(tc, path: Path, on_bad_row: str, counts: dict, rng_sample_seed,
                rng_arrival: np.random.Generator, rng_think: np.random.Generator
                ) -> Iterator[tuple]:
    """Items of a trace source (``tc``: a concrete-format trace config). ``rng_sample_seed`` is a
    SeedSequence so the rate pre-pass can repeat the same sampling. Lazy: the file is opened at
    the first ``next``; a trace of which no request is left raises InputError saying why."""
    def build():
        reader = open_reader(tc, path, on_bad_row, counts)
        return _trace_items(tc, path, reader, on_bad_row, counts, rng_sample_seed, rng_arrival,
                            rng_think)

    def empty():    # read to the end and nothing kept: say why rather than run an empty simulation
        why = [f"{counts[k]} {what}" for k, what in (
            ("skipped_bad_rows", "bad rows skipped"), ("outside_window_rows", "outside the window"),
            ("sampled_out_rows", "sampled out"), ("dropped_over_cap_rows", "dropped over the caps"))
            if counts.get(k)]
        raise InputError(input_problem(
            f"no request is left of the trace's {counts['rows_read']} rows"
            + (f" ({', '.join(why)})" if why else ""), where=str(path)))

    return NonEmpty(build, empty)       # (compiled: no interpreted step per item)


def _trace_items(tc, path, reader, on_bad_row, counts, rng_sample_seed, rng_arrival, rng_think):
    """The item stream of ``reader`` through the transforms (built when the first item is
    asked for: :func:`trace_items`)."""
    B = reader.hash_block_tokens
    if reader.yields_sessions:
        return _trace_sessions(tc, reader, counts, rng_sample_seed, rng_arrival, rng_think)

    def front(rd, cnt):
        items = iter(rd)
        if tc.window is not None:
            items = T.window(items, tc.window.start_s, tc.window.end_s, cnt)
        if tc.sample_fraction is not None:
            items = T.sample(items, tc.sample_fraction, np.random.default_rng(rng_sample_seed), cnt)
        return items

    items = front(reader, counts)
    if tc.speedup is not None:
        items = T.scale_time(items, 1.0 / tc.speedup)
    elif tc.rate_per_s is not None:
        scratch = new_source_counts()
        probe = open_reader(tc, path, on_bad_row, scratch)
        rate = T.observed_rate(front(probe, scratch), str(path))
        items = T.scale_time(items, rate / tc.rate_per_s)
    if tc.arrival is not None:
        items = T.retime(items, arrival_chunks(tc.arrival, rng_arrival))
    return T.cap(items, tc.max_prompt_tokens, tc.max_output_tokens, tc.cap_mode, B, counts)


def _trace_sessions(tc, reader, counts, rng_sample_seed, rng_arrival, rng_think):
    B = reader.hash_block_tokens
    sessions = iter(reader)
    if tc.sample_fraction is not None:
        sessions = T.sample(sessions, tc.sample_fraction, np.random.default_rng(rng_sample_seed),
                            counts)
    starts = iter_times(arrival_chunks(tc.arrival, rng_arrival))
    think = getattr(tc, "think_time_s", None) or 0.0

    def gen():
        for sid, turns in sessions:
            t = next(starts, None)
            if t is None:
                return
            counts["sessions"] += 1
            kept = []
            for it in turns:
                c = T.cap_item(it, tc.max_prompt_tokens, tc.max_output_tokens, tc.cap_mode, B)
                if c is None:
                    counts["dropped_over_cap_rows"] += 1
                    continue
                kept.append(c)
            if not kept:
                continue
            gaps = rng_think.exponential(think, len(kept) - 1) if think > 0 else \
                [0.0] * (len(kept) - 1)
            yield t, kept, gaps
    return schedule_turns(gen())
