"""llmsim.workload: the request stream of a scenario.

``WorkloadConfig`` (the ``workload:`` section), ``build_workload(cfg, seed, base_dir) ->
Workload`` (lazy, deterministic stream of :class:`Request`), trace readers
(:mod:`llmsim.workload.readers`) and ``trace_stats`` (``llmsim trace stats``).
"""
from __future__ import annotations

from llmsim.workload.config import WorkloadConfig
from llmsim.workload.request import Request
from llmsim.workload.workload import Workload, build_workload

__all__ = ["WorkloadConfig", "Workload", "build_workload", "Request", "trace_stats"]


def __getattr__(name):
    if name == "trace_stats":
        from llmsim.workload.tracestats import trace_stats
        return trace_stats
    raise AttributeError(f"module 'llmsim.workload' has no attribute {name!r}")
