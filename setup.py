"""Build of llmsim: pure Python plus, where it can be built, the compiled hot path.

Everything else is declared in pyproject.toml. The modules listed in ``llmsim/_compiled.py``
(``MODULES``) are compiled with mypyc (mypy, a build requirement, and a C compiler) into
extension modules next to their sources; the build then writes ``llmsim/_compiled_sources.json``
(the SHA-256 of each source compiled), which ``llmsim/_compiled.py`` checks at import so that an
edited source is never shadowed by an older compiled module. The build is all or nothing: when
mypyc or the C compiler fails, it says so and installs the pure-Python package (same results,
≈ 2× slower). ``LLMSIM_PURE_BUILD=1`` skips compiling.
"""
from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
_COMPILED = runpy.run_path(str(ROOT / "llmsim" / "_compiled.py"))
MODULES = _COMPILED["MODULES"]
MANIFEST = _COMPILED["MANIFEST"]


def _warn(msg: str) -> None:
    print(f"llmsim setup: {msg}; installing the pure-Python package (same results, slower)",
          file=sys.stderr)


def _source(module: str) -> Path:
    return _COMPILED["source_file"](module, ROOT / "llmsim")


def _mypyc_extensions() -> list:
    if _COMPILED["env_flag"]("LLMSIM_PURE_BUILD"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        _warn(f"mypyc is not available ({exc})")
        return []
    paths = [str(_source(m).relative_to(ROOT)) for m in MODULES]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return mypycify(["--ignore-missing-imports", "--follow-imports=silent",
                         # mypyc 2.4 stops on these notes (untyped function bodies)
                         "--disable-error-code=annotation-unchecked", *paths], opt_level="3",
                        # a fixed name for the shared library (llmsim__mypyc): the default
                        # hashes the module list, and an editable install knows only the name
                        # it was installed with
                        group_name="llmsim")
    except (Exception, SystemExit) as exc:      # mypyc reports type errors by exiting
        _warn(f"mypyc could not compile the hot path ({exc})")
        return []
    finally:
        os.chdir(cwd)


class BuildCompiledOrNothing(build_ext):
    """Build every extension or none (a C compiler failing leaves the pure package), then
    write the manifest of the sources compiled next to them."""

    def run(self):
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as exc:         # compiler missing or failing: distutils errors
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            _warn(f"compiling the hot path failed ({exc})")
            return
        manifest = {m: _COMPILED["source_digest"](_source(m)) for m in MODULES}
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        targets = [Path(self.build_lib) / "llmsim" / MANIFEST]
        if self.inplace:
            targets.append(ROOT / "llmsim" / MANIFEST)
        for t in targets:
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_text(text)


setup(ext_modules=_mypyc_extensions(), cmdclass={"build_ext": BuildCompiledOrNothing})
