"""llmsim.sweep on Ray: plain remote tasks on a local Ray started by the test give the same
rows as the local backend, and a failing point is reported there too."""
import math
from pathlib import Path

import pytest

from llmsim.planning.metrics import METRIC_COLUMNS
from llmsim.sweep import sweep

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'llmsim[ray]')")

QUICK = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"
SMALL = ["workload.num_requests=80"]


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    if started:
        ray.shutdown()


def test_ray_backend_matches_local_and_reports_failures(local_ray):
    grid = {"cluster.pools.0.replicas": [1, 0, 2]}
    on_ray = sweep(QUICK, grid, seeds=1, overrides=SMALL, backend="ray")
    local = sweep(QUICK, grid, seeds=1, overrides=SMALL, jobs=1)
    assert ray.is_initialized()            # an initialised Ray is used, not shut down
    f, g = on_ray.frame, local.frame
    assert list(f["seed"]) == list(g["seed"]) and len(f) == 3
    for m in METRIC_COLUMNS:
        for a, b in zip(f[m], g[m]):
            assert (math.isnan(a) and math.isnan(b)) or a == b, m
    bad = f[f["cluster.pools.0.replicas"] == 0]
    assert len(bad) == 1 and all("at least one replica" in e for e in bad["error"])
    assert f[f["cluster.pools.0.replicas"] != 0]["error"].isna().all()
