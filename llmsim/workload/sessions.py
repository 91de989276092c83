"""Multi-turn sessions: prefix hash ids for a growing conversation, and a scheduler that turns
session starts + think times into one time-ordered stream of turns.

Hash ids. A session is one growing token stream: ``shared_prefix_tokens`` (common to every
session of the source), then user tokens and output tokens of turn 1, of turn 2, … Turn k's
prompt is the first P_k tokens of that stream. Block j (tokens [jB, (j+1)B)) gets an id that
depends only on the stream and j, so the same block in a later turn has the same id: ids below
``shared_prefix_tokens // B`` are shared by all sessions of the source, the others are unique to
the session. A trailing partial block of a prompt has content no later turn repeats, so it gets a
fresh id. A prompt of P tokens has ceil(P / B) ids (the Mooncake convention).
"""
from __future__ import annotations

import heapq
from typing import Iterable, Iterator

import numpy as np


class BlockIds:
    """Allocates hash ids for sessions of one source (deterministic counters)."""

    def __init__(self, block_tokens: int, shared_prefix_tokens: int = 0):
        self.B = block_tokens
        self.n_shared = shared_prefix_tokens // block_tokens
        self.next_id = self.n_shared

    def new_session(self, total_tokens: int) -> int:
        """Reserve ids for a stream of ``total_tokens``; returns the session's base so that block
        j >= n_shared has id base + j."""
        n_blocks = total_tokens // self.B
        base = self.next_id - self.n_shared
        self.next_id += max(0, n_blocks - self.n_shared)
        return base

    def prompt_ids(self, base: int, prompt_tokens: int) -> list[int]:
        full = prompt_tokens // self.B
        ns = min(self.n_shared, full)
        ids = list(range(ns))
        if full > ns:
            ids.extend(range(base + ns, base + full))
        if prompt_tokens % self.B:
            ids.append(self.next_id)
            self.next_id += 1
        return ids


def schedule_turns(sessions: Iterable[tuple[float, list[tuple], np.ndarray | list[float]]]
                   ) -> Iterator[tuple]:
    """Time-ordered items from sessions.

    ``sessions`` yields (start_s, turns, gaps) in non-decreasing start_s: ``turns`` is a list of
    items (their t is ignored), ``gaps[k]`` the delay of turn k+1 after turn k. Items are yielded
    in non-decreasing t; ties keep session order, then turn order. Memory holds only the turns of
    sessions still in progress.
    """
    heap: list = []
    seq = 0
    for start, turns, gaps in sessions:
        while heap and heap[0][0] <= start:
            yield heapq.heappop(heap)[2]
        t = start
        for k, item in enumerate(turns):
            if k:
                t += float(gaps[k - 1])
            heapq.heappush(heap, (t, seq, (t,) + tuple(item[1:])))
            seq += 1
    while heap:
        yield heapq.heappop(heap)[2]
