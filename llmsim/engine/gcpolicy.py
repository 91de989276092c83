"""Garbage-collector settings for the duration of a simulation run.

A run allocates a few container objects per request that stay alive (the request and its
row, held until the run's tables are built) and many short-lived ones (SimPy events, step
outputs) that reference counting frees at once. With CPython's default thresholds (700, 10, 10)
the cyclic collector runs every 700 net allocations, and the surviving requests push it into
full collections of an ever larger heap: ≈ 5% of a 300,000-request chat run's wall time
(0.75 s of 14.5 s, timed with ``gc.callbacks``). With the youngest generation collected every
50,000 net allocations the same run spends 0.2 s in the collector; cyclic garbage is still
collected, so memory stays bounded (``benchmarks/bench_memory.py``).

:func:`run_collection_thresholds` raises the youngest generation's threshold inside a
``with`` block and restores the caller's thresholds on leaving it, also on an exception.
Nested or concurrent blocks (threads running simulations) share one setting: the thresholds
found by the first block to enter are restored by the last one to leave.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

#: Net allocations of container objects between two collections of the youngest generation
#: during a run (CPython's default: 700); the older generations keep their thresholds.
RUN_GEN0_THRESHOLD = 50_000

_lock = threading.Lock()
_depth = 0
_saved: tuple = ()


@contextmanager
def run_collection_thresholds():
    """Collect the youngest generation every :data:`RUN_GEN0_THRESHOLD` net allocations
    inside the block, unless the caller's threshold is already higher or 0 (disabled)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            if 0 < _saved[0] < RUN_GEN0_THRESHOLD:    # 0: the caller disabled collection
                gc.set_threshold(RUN_GEN0_THRESHOLD, *_saved[1:])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
