"""llmsim: discrete-event simulator of LLM serving clusters.

Public API (imported lazily so that ``import llmsim`` stays cheap):
``load_scenario``, ``simulate``, ``Result``, ``sweep``, ``plan``.
"""
from __future__ import annotations

from llmsim import _compiled

__version__ = "0.1.0"
#: "compiled", "pure" or "source" (compiled modules present but not used): see llmsim/_compiled.py
BUILD = _compiled.install()

_LAZY = {
    "load_scenario": ("llmsim.scenario", "load_scenario"),
    "simulate": ("llmsim.api", "simulate"),
    "Result": ("llmsim.api", "Result"),
    "sweep": ("llmsim.sweep", "sweep"),
    "plan": ("llmsim.plan", "plan"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'llmsim' has no attribute {name!r}")
