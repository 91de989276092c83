"""The network layer as the compiled build has it (llmsim/_compiled.py compiles
llmsim.engine.network): Path is a plain class with read-only, value-compared fields, and a
compiled run of contended transfers gives exactly the pure-Python results."""
from __future__ import annotations

import importlib.machinery
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path as FsPath

import pandas as pd
import pytest

import llmsim
from llmsim import _compiled
from llmsim.engine import network
from llmsim.engine.events import Environment
from llmsim.engine.network import Network, Path, Resource

ROOT = FsPath(__file__).resolve().parent.parent
SO = importlib.machinery.EXTENSION_SUFFIXES[0]


def test_the_network_is_part_of_the_compiled_build():
    assert "llmsim.engine.network" in _compiled.MODULES
    if llmsim.BUILD == "compiled":
        assert network.__file__.endswith(SO)


def test_a_path_is_immutable_and_compared_by_value():
    a, b = Resource("a", 10.0), Resource("b", 4)
    p = Path([a, b], 1)                         # any iterable; latency kept as a float
    assert p.resources == (a, b) and isinstance(p.resources, tuple)
    assert p.latency_s == 1.0 and type(p.latency_s) is float and p.description == ""
    assert p.bottleneck_bytes_per_s == 4.0 and p.idle_time_s(8.0) == 3.0
    q = Path((a, b), 1.0)
    assert p == q and hash(p) == hash(q) and p != Path((a, b), 1.0, "other")
    assert p != Path((b, a), 1.0) and p != "path"
    for field in ("resources", "latency_s", "description", "bottleneck_bytes_per_s"):
        with pytest.raises(AttributeError):
            setattr(p, field, None)
    assert repr(p).startswith("Path(resources=(Resource('a'")


def test_a_path_without_resources_has_no_bottleneck_and_carries_nothing():
    empty = Path((), 0.0)
    with pytest.raises(ValueError, match="no bottleneck"):
        empty.bottleneck_bytes_per_s
    net = Network(Environment())
    with pytest.raises(ValueError, match="at least one resource"):
        net.start(1.0, empty, lambda tr: None)


def test_contention_and_abort_in_either_build():
    """Three transfers share a link (max-min), one is aborted, one sent when alone: the
    delivery times of the filling computed by hand."""
    env = Environment()
    net = Network(env)
    link = Resource("link", 1e9)
    port = Resource("port", 0.25e9)
    got = {}

    def start(name, nbytes, resources, lat=0.0):
        return net.start(nbytes, Path(resources, lat), lambda tr: got.__setitem__(name, env.now))

    start("a", 1e9, (link,))
    start("b", 0.25e9, (link, port))             # capped by its port at 0.25 GB/s
    c = start("c", 1e9, (link,))

    def later():
        yield env.timeout(0.5)
        net.abort(c)
        yield env.timeout(1.5)
        start("d", 1e9, (link,), 0.5)            # alone: 1 s + 0.5 s latency
    env.process(later())
    env.run()
    # 0-0.5 s: b 0.25, a and c 0.375 GB/s each; then a 0.75 GB/s until b ends at 1 s
    # (a: 0.1875 + 0.375 = 0.5625 GB moved), then 1 GB/s: a ends at 1.4375 s
    assert got["b"] == pytest.approx(1.0)
    assert got["a"] == pytest.approx(1.4375)
    assert "c" not in got and got["d"] == pytest.approx(3.5)
    assert net.num_started == 4 and net.num_done == 3 and net.num_aborted == 1
    assert not net.active and link.bytes_moved == pytest.approx(1e9 + 0.25e9 + 0.1875e9 + 1e9)


CHILD = """
import os, pickle, sys
import llmsim
from llmsim.api import simulate
import llmsim.engine.network as net
out = {"build": llmsim.BUILD, "file": net.__file__, "results": []}
for path, overrides in pickle.loads(bytes.fromhex(sys.argv[1])):
    res = simulate(os.path.join(sys.argv[2], path), overrides)
    summary = {k: v for k, v in res.summary.items() if k not in ("wall_s", "events")}
    out["results"].append((res.requests, summary))
sys.stdout.buffer.write(pickle.dumps(out))
"""

# a slow link: many KV transfers in flight at once (max-min filling, drain timers, deliveries
# after the latency); spot preemptions of decode replicas (aborted transfers, re-sent contexts)
RUNS = [
    ("scenarios/disaggregated.yaml",
     ["workload.num_requests=300", "cluster.network.links.0.bandwidth_gbps=5"]),
    ("scenarios/disaggregated.yaml",
     ["workload.num_requests=300", "cluster.network.links.0.bandwidth_gbps=5",
      "cluster.faults.spot.pools=[decode]", "cluster.faults.spot.rate_per_hour=300",
      "cluster.faults.spot.warning_s=2", "cluster.faults.spot.on_preempt=migrate",
      "cluster.faults.provisioning_s=5"]),
]


def _run(pure: bool) -> dict:
    env = dict(os.environ, LLMSIM_PURE="1" if pure else "0", LLMSIM_CHECK_INVARIANTS="1",
               PYTHONHASHSEED="0")
    done = subprocess.run([sys.executable, "-c", CHILD, pickle.dumps(RUNS).hex(), str(ROOT)],
                          env=env, cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return pickle.loads(done.stdout)


@pytest.mark.skipif(llmsim.BUILD == "pure", reason="no compiled build in this installation")
def test_contended_transfers_give_identical_results_in_both_builds():
    compiled, pure = _run(False), _run(True)
    assert compiled["file"].endswith(SO) and pure["file"].endswith("network.py")
    for (path, _), (df_c, sum_c), (df_p, sum_p) in zip(RUNS, compiled["results"],
                                                       pure["results"]):
        assert sum_c["pools"]["decode"]["kv_transfers_in"] > 0
        pd.testing.assert_frame_equal(df_c, df_p, check_exact=True, obj=path)
        assert json.dumps(sum_c, sort_keys=True, default=str) == \
            json.dumps(sum_p, sort_keys=True, default=str), path


def test_path_from_a_generator_of_resources():
    """A path made from a one-pass iterable keeps its resources and its bottleneck."""
    slow, fast = Resource("slow", 1e9), Resource("fast", 4e9)
    p = Path((r for r in (fast, slow)), 0.001)
    assert p.resources == (fast, slow)
    assert p.bottleneck_bytes_per_s == 1e9
