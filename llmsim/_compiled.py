"""The compiled build: which modules mypyc compiles, and the guard that keeps a stale or unwanted
build out (standard library only: ``setup.py`` reads this file before llmsim's dependencies are
installed).

The hot path of a simulation (event loop, engine loop, schedulers, decode-run plans, KV
managers and prefix cache, network and pipeline models, recorder, router, request stream and
trace rows, request, roofline cost model: :data:`MODULES`) is plain, typed Python that
``setup.py`` also compiles with mypyc when it can (a C compiler and mypy at build time). A
compiled module is a ``.so`` file next to its ``.py``; Python imports the ``.so`` first. Both
builds give identical results (``tests/test_compiled_build.py`` compares them); the compiled one
runs the chat benchmark several times faster (``benchmarks/README.md``).

Contract of :func:`install` (called by ``llmsim/__init__.py`` before anything else of llmsim is
imported): the modules of :data:`MODULES` come from their ``.py`` sources — all of them, never a
mix (compiled modules reach each other's classes natively) — when

- ``LLMSIM_PURE=1`` is set (pure Python on purpose: profiling with cProfile, debugging, the
  comparison test), or
- the build's manifest (:data:`MANIFEST`: the SHA-256 of each source it compiled) is missing or
  does not match a source as it is now (a ``.py`` edited after the build: the edit runs, with a
  warning to rebuild, instead of the old compiled code).

Otherwise the compiled modules are imported as usual. :func:`build_state` says which applies.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

#: modules the compiled build compiles (together: one mypyc group)
MODULES = (
    "llmsim.engine.events",
    "llmsim.scheduling.runs",
    "llmsim.scheduling.base",
    "llmsim.scheduling.policies",
    "llmsim.memory.base",
    "llmsim.memory.paged",
    "llmsim.engine.replica",
    "llmsim.engine.cluster",
    "llmsim.engine.router",
    "llmsim.metrics.recorder",
    "llmsim.workload.request",
    "llmsim.cost.roofline",
    "llmsim.memory.prefix_spans",
    "llmsim.memory.host",
    "llmsim.memory.prefix",
    "llmsim.engine.network",
    "llmsim.engine.pipeline",
    "llmsim.workload.stream",
    "llmsim.workload.readers.rows",
)
#: written by the build next to this file: ``{module: sha256 of the .py it compiled}``
MANIFEST = "_compiled_sources.json"
PURE_ENV = "LLMSIM_PURE"
PACKAGE_DIR = Path(__file__).resolve().parent


def source_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """The ``.py`` of ``module`` (``llmsim.a.b`` → ``<package_dir>/a/b.py``)."""
    return package_dir.joinpath(*module.split(".")[1:]).with_suffix(".py")


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compiled_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The extension modules of :data:`MODULES` present under ``package_dir``."""
    found = []
    for m in MODULES:
        src = source_file(m, package_dir)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            so = src.with_suffix(suffix)
            if so.is_file():
                found.append(so)
                break
    return found


def env_flag(name: str, environ=os.environ) -> bool:
    """Whether the switch ``name`` is on: ``1`` on, ``0`` or unset off; any other value is
    ignored (off) with a warning naming the variable and what it takes."""
    value = environ.get(name, "")
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    warnings.warn(f"llmsim: {name}={value!r} is ignored: set it to 1 (on) or 0 (off)",
                  RuntimeWarning, stacklevel=3)
    return False


def build_state(package_dir: Path = PACKAGE_DIR, environ=os.environ) -> tuple[str, str]:
    """``(state, why)``: ``"compiled"`` (the compiled modules are used), ``"pure"`` (there are
    none) or ``"source"`` (there are, but the sources are used: ``why`` says why)."""
    if not compiled_files(package_dir):
        return "pure", "no compiled modules in this installation"
    if env_flag(PURE_ENV, environ):
        return "source", f"{PURE_ENV}={environ[PURE_ENV]}"
    try:
        manifest = json.loads((package_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return "source", f"the build's manifest {MANIFEST} is missing or unreadable"
    for m in MODULES:
        src = source_file(m, package_dir)
        if manifest.get(m) != source_digest(src):
            return "source", (f"{src} changed after the build (rebuild: pip install -e . "
                              "or python setup.py build_ext --inplace)")
    return "compiled", "built from these sources"


class _SourceFinder:
    """A ``sys.meta_path`` finder that loads :data:`MODULES` from their ``.py`` files."""

    def __init__(self, package_dir: Path):
        self.package_dir = package_dir

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MODULES:
            return None
        src = source_file(fullname, self.package_dir)
        loader = importlib.machinery.SourceFileLoader(fullname, str(src))
        return importlib.util.spec_from_file_location(fullname, src, loader=loader)


def install() -> str:
    """Apply :func:`build_state` to this installation (see the module docstring); returns the
    state. A stale build warns (``LLMSIM_PURE`` does not: it is asked for)."""
    state, why = build_state()
    if state == "source":
        if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _SourceFinder(PACKAGE_DIR))
        if not why.startswith(PURE_ENV):
            warnings.warn(f"llmsim: running the pure-Python sources, not the compiled build: "
                          f"{why}", RuntimeWarning, stacklevel=2)
    return state
