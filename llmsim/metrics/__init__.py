"""llmsim.metrics: recording (``recorder``), statistics (``stats``), the run summary
(``summary``) and its terminal rendering (``format``).

The public helpers are importable from here lazily (``from llmsim.metrics import summarize``)
so that importing the hot-path recorder does not pull in the summary code.
"""
from __future__ import annotations

_LAZY = {
    "latency_stats": "llmsim.metrics.stats",
    "weighted_quantiles": "llmsim.metrics.stats",
    "weighted_stats": "llmsim.metrics.stats",
    "add_derived_columns": "llmsim.metrics.summary",
    "summarize": "llmsim.metrics.summary",
    "summary_frame": "llmsim.metrics.summary",
    "format_summary": "llmsim.metrics.format",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmsim.metrics' has no attribute {name!r}")
