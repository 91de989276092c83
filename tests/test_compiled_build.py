"""The compiled build (mypyc, see llmsim/_compiled.py) gives exactly the pure-Python results, and
its guard keeps an edited source from being shadowed by an older compiled module."""
from __future__ import annotations

import importlib.machinery
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import llmsim
from llmsim import _compiled

ROOT = Path(__file__).resolve().parent.parent
SO = importlib.machinery.EXTENSION_SUFFIXES[0]

# small runs through every compiled module's paths: the chat path (vllm, sarathi), static
# batching, prefix caching with offload (synthetic sessions), disaggregated hand-offs,
# speculative decoding, spot preemptions
RUNS = [
    ("scenarios/sched_vllm.yaml", ["workload.num_requests=600"]),
    ("scenarios/sched_sarathi.yaml", ["workload.num_requests=600"]),
    ("scenarios/sched_static.yaml", ["workload.num_requests=300"]),
    ("scenarios/prefix_caching.yaml",
     ["workload.trace.path=../traces/synthetic_sessions_mooncake.jsonl"]),
    ("scenarios/disaggregated.yaml", ["workload.num_requests=400"]),
    ("scenarios/speculative.yaml", []),
    ("scenarios/spot.yaml", []),
    # the compiled network: a slow link (many KV transfers in flight at once: max-min filling,
    # drain timers, deliveries after the latency), then spot preemptions of decode replicas
    # on top (aborted transfers, re-sent contexts)
    ("scenarios/disaggregated.yaml",
     ["workload.num_requests=300", "cluster.network.links.0.bandwidth_gbps=5"]),
    ("scenarios/disaggregated.yaml",
     ["workload.num_requests=300", "cluster.network.links.0.bandwidth_gbps=5",
      "cluster.faults.spot.pools=[decode]", "cluster.faults.spot.rate_per_hour=300",
      "cluster.faults.spot.warning_s=2", "cluster.faults.spot.on_preempt=migrate",
      "cluster.faults.provisioning_s=5"]),
]

CHILD = """
import os, pickle, sys
import llmsim
from llmsim.api import simulate
import llmsim.scheduling.runs as runs
out = {"build": llmsim.BUILD, "runs_file": runs.__file__, "results": []}
for path, overrides in pickle.loads(bytes.fromhex(sys.argv[1])):
    res = simulate(os.path.join(sys.argv[2], path), overrides)
    summary = {k: v for k, v in res.summary.items() if k not in ("wall_s", "events")}
    out["results"].append((res.requests, summary))
sys.stdout.buffer.write(pickle.dumps(out))
"""


def _run_child(pure: bool, runs) -> dict:
    env = dict(os.environ, LLMSIM_PURE="1" if pure else "0", LLMSIM_CHECK_INVARIANTS="1",
               PYTHONHASHSEED="0")
    done = subprocess.run([sys.executable, "-c", CHILD, pickle.dumps(runs).hex(), str(ROOT)],
                          env=env, cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return pickle.loads(done.stdout)


@pytest.mark.skipif(llmsim.BUILD == "pure", reason="no compiled build in this installation "
                    "(LLMSIM_PURE_BUILD=1, or mypyc / a C compiler was missing at install)")
def test_compiled_and_pure_builds_give_identical_results():
    compiled = _run_child(False, RUNS)
    pure = _run_child(True, RUNS)
    assert compiled["build"] == "compiled" and compiled["runs_file"].endswith(SO)
    assert pure["build"] == "source" and pure["runs_file"].endswith("runs.py")
    for (path, _), (df_c, sum_c), (df_p, sum_p) in zip(RUNS, compiled["results"],
                                                       pure["results"]):
        assert len(df_c) > 0, path
        if path.endswith("disaggregated.yaml"):
            assert sum_c["pools"]["decode"]["kv_transfers_in"] > 0, path
        pd.testing.assert_frame_equal(df_c, df_p, check_exact=True, obj=path)
        assert json.dumps(sum_c, sort_keys=True, default=str) == \
            json.dumps(sum_p, sort_keys=True, default=str), path


# -- the guard, on a copy of the package layout ---------------------------------------------
def _fake_package(tmp_path: Path, compiled: bool = True, manifest: bool = True) -> Path:
    pkg = tmp_path / "llmsim"
    digests = {}
    for m in _compiled.MODULES:
        src = _compiled.source_file(m, pkg)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {m}\n")
        digests[m] = _compiled.source_digest(src)
        if compiled:
            src.with_suffix(SO).write_bytes(b"")
    if manifest:
        (pkg / _compiled.MANIFEST).write_text(json.dumps(digests))
    return pkg


def test_a_build_from_these_sources_is_used(tmp_path):
    pkg = _fake_package(tmp_path)
    assert _compiled.build_state(pkg, {}) == ("compiled", "built from these sources")
    assert _compiled.build_state(pkg, {"LLMSIM_PURE": "0"})[0] == "compiled"


def test_an_edited_source_is_not_shadowed_by_its_older_compiled_module(tmp_path):
    pkg = _fake_package(tmp_path)
    src = _compiled.source_file("llmsim.engine.replica", pkg)
    src.write_text(src.read_text() + "x = 1\n")
    state, why = _compiled.build_state(pkg, {})
    assert state == "source" and str(src) in why and "rebuild" in why


def test_pure_on_request_and_without_a_manifest(tmp_path):
    pkg = _fake_package(tmp_path)
    assert _compiled.build_state(pkg, {"LLMSIM_PURE": "1"}) == ("source", "LLMSIM_PURE=1")
    pkg2 = _fake_package(tmp_path / "b", manifest=False)
    state, why = _compiled.build_state(pkg2, {})
    assert state == "source" and _compiled.MANIFEST in why
    pkg3 = _fake_package(tmp_path / "c", compiled=False)
    assert _compiled.build_state(pkg3, {"LLMSIM_PURE": "1"})[0] == "pure"


def test_a_switch_takes_0_or_1_and_says_when_it_ignores_a_value(tmp_path):
    pkg = _fake_package(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"LLMSIM_PURE='true' is ignored: set it to 1"):
        assert _compiled.build_state(pkg, {"LLMSIM_PURE": "true"})[0] == "compiled"
    assert _compiled.env_flag("X", {"X": "1"}) and not _compiled.env_flag("X", {"X": "0"})
    assert not _compiled.env_flag("X", {})


def test_the_source_finder_serves_every_compiled_module_from_its_py():
    finder = _compiled._SourceFinder(_compiled.PACKAGE_DIR)
    for m in _compiled.MODULES:
        spec = finder.find_spec(m)
        assert spec.origin.endswith(".py") and Path(spec.origin).is_file()
        assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert finder.find_spec("llmsim.api") is None


def test_an_edited_source_runs_with_a_warning(tmp_path):
    """End to end on a copy of the installed package: an edit made after the build is what
    runs (with a warning to rebuild), in a pure or a compiled installation alike."""
    import shutil
    pkg = tmp_path / "llmsim"
    shutil.copytree(_compiled.PACKAGE_DIR, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for so in ROOT.glob(f"*__mypyc*{SO}"):        # the compiled group's shared library
        shutil.copy(so, tmp_path)
    runs_py = _compiled.source_file("llmsim.scheduling.runs", pkg)
    runs_py.write_text(runs_py.read_text() + "\nEDITED = True\n")
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import llmsim, llmsim.scheduling.runs as r\n"
            "print(llmsim.BUILD, getattr(r, 'EDITED', False), r.__file__.endswith('.py'))")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), LLMSIM_PURE="0")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state, edited, from_py = done.stdout.split()
    assert edited == "True" and from_py == "True"
    if llmsim.BUILD != "pure":
        assert state == "source" and "changed after the build" in done.stderr


def test_a_request_takes_numpy_numbers_in_either_build():
    """Typed fields of a compiled class refuse numpy ints; Request converts its counts (and
    refuses a float count), so hand-made requests behave the same in both builds."""
    import numpy as np
    from llmsim.workload.request import Request
    r = Request(0, np.float64(1.5), np.int64(7), np.int32(3), hash_block_tokens=np.int64(0),
                priority=np.int8(1))
    assert (r.arrival_s, r.num_prompt_tokens, r.max_tokens, r.priority) == (1.5, 7, 3, 1)
    assert type(r.num_prompt_tokens) is int and type(r.arrival_s) is float
    assert type(Request(1, 2, 5, 1).arrival_s) is float
    with pytest.raises(TypeError):
        Request(2, 0.0, 7.5, 3)
