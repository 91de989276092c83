"""llmsim.report: plotly figures (``figures``) and the offline HTML report (``html``).

``from llmsim.report import write_html`` works; plotly is imported only when used.
"""
from __future__ import annotations

_LAZY = {
    "write_html": "llmsim.report.html",
    "render_html": "llmsim.report.html",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmsim.report' has no attribute {name!r}")
