"""llmsim.sweep: grid parsing, seeds, tidy rows equal to single runs, failures per point, CLI."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import llmsim
from llmsim.api import simulate
from llmsim.cli import main
from llmsim.errors import InputError
from llmsim.planning.grid import (check_key_paths, normalize_grid, parse_grid_arg,
                                  parse_grid_args, point_label, point_overrides, run_seeds,
                                  split_top_level)
from llmsim.planning.metrics import METRIC_COLUMNS, aggregate, flatten_summary, mean_ci
from llmsim.scenario import load_scenario
from llmsim.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "scenarios" / "quickstart.yaml"
SMALL = ["workload.num_requests=120"]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# ------------------------------------------------------------------------------- grid
def test_split_and_parse_grid_values():
    assert split_top_level("1,[2, 3],{a: 1, b: 2},'x,y'") == ["1", "[2, 3]", "{a: 1, b: 2}",
                                                             "'x,y'"]
    key, vals = parse_grid_arg("cluster.pools.0.parallel={tp: 1},{tp: 2}")
    assert key == "cluster.pools.0.parallel" and vals == [{"tp": 1}, {"tp": 2}]
    key, vals = parse_grid_arg("workload.arrival.rate_per_s=1e3,2.5,7,null,true,vllm")
    assert vals == [1000.0, 2.5, 7, None, True, "vllm"]
    assert isinstance(vals[0], float) and isinstance(vals[2], int)


@pytest.mark.parametrize("spec,msg", [
    ("replicas", "expected KEY=V1,V2"),
    ("a..b=1", "empty segment"),
    ("a.b=1,,2", "empty value"),
    ("a.b=[1,", "not a valid YAML value"),
])
def test_parse_grid_errors(spec, msg):
    with pytest.raises(InputError) as e:
        parse_grid_arg(spec)
    assert msg in str(e.value)


def test_repeated_grid_key_is_an_error():
    with pytest.raises(InputError, match="given twice"):
        parse_grid_args(["a.b=1", "a.b=2"])


def test_normalize_grid_forms_and_order():
    pts = normalize_grid({"a": [1, 2], "b": ["x", "y", "z"], "c": 5})
    assert len(pts) == 6
    assert pts[0] == {"a": 1, "b": "x", "c": 5} and pts[1] == {"a": 1, "b": "y", "c": 5}
    assert pts[-1] == {"a": 2, "b": "z", "c": 5}          # last key varies fastest
    assert normalize_grid(["a=1,2", "b=3"]) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert normalize_grid([{"a": 1}, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    assert normalize_grid(None) == [{}]
    with pytest.raises(InputError, match="no values"):
        normalize_grid({"a": []})


def test_point_overrides_round_trip_through_the_scenario_loader():
    pt = {"cluster.pools.0.replicas": 3, "workload.arrival.rate_per_s": 1e-05,
          "cluster.pools.0.hardware": "a100-80gb", "cluster.pools.0.parallel": {"tp": 2}}
    scn = load_scenario(QUICK, point_overrides(pt))
    p = scn.cluster.pools[0]
    assert p.replicas == 3 and p.hardware == "a100-80gb" and p.parallel.tp == 2
    assert scn.workload.arrival.rate_per_s == 1e-05
    assert point_label({"cluster.pools.0.replicas": 2, "seed": 1}) == "replicas=2, seed=1"
    # same last segment: as many trailing segments as it takes to tell them apart
    assert point_label({"a.x": 1, "b.x": 2}) == "a.x=1, b.x=2"
    assert point_label({"cluster.pools.0.replicas": 1, "cluster.pools.1.replicas": 2,
                        "seed": 3}) == "0.replicas=1, 1.replicas=2, seed=3"


def test_check_key_paths_suggests():
    data = load_scenario(QUICK).to_dict()
    check_key_paths(data, ["cluster.pools.0.replicas", "cluster.faults.spot.rate_per_hour",
                           "seed"])
    with pytest.raises(InputError) as e:
        check_key_paths(data, ["cluster.pools.0.replicaz", "cluster.pools.3.replicas",
                               "seed.x"])
    text = str(e.value)
    assert "Did you mean 'replicas'" in text
    assert "list of 1 item(s)" in text
    assert "holds a value" in text


def test_run_seeds_deterministic_first_is_the_scenario_seed():
    s = run_seeds(42, 4)
    assert s[0] == 42 and len(set(s)) == 4
    assert s == run_seeds(42, 4)
    assert run_seeds(42, 2) == s[:2]
    ss = np.random.SeedSequence(42, spawn_key=(1,))
    assert s[1] == int(ss.generate_state(1, np.uint32)[0])
    assert run_seeds(7, 3)[1:] != s[1:3]
    with pytest.raises(InputError):
        run_seeds(1, 0)


# ------------------------------------------------------------------------------- metrics
def test_flatten_summary_by_hand():
    summary = {
        "requests": {"arrived": 10, "finished": 8, "rejected": 1, "unfinished": 1, "failed": 0,
                     "preemptions": 3},
        "throughput": {"requests_per_s": 2.0, "input_tokens_per_s": 100.0,
                       "output_tokens_per_s": 60.0},
        "ttft_s": {"mean": 0.1, "p50": 0.05, "p90": 0.2, "p99": 0.3},
        "tpot_s": {"mean": 0.02, "p50": 0.025, "p90": 0.03, "p99": None},
        "slo": {"attainment": 0.7, "goodput_requests_per_s": 1.4},
        "cost": {"gpu_hours": 1.0, "usd": 5.0, "usd_per_million_output_tokens": 3.0},
        "pools": {"a": {"gpus": 2, "usd_per_gpu_hour": 4.0, "utilization": 0.5,
                        "kv_usage_mean": 0.2},
                  "b": {"replicas": 3, "gpus_per_replica": 2, "usd_per_gpu_hour": 1.0,
                        "utilization": 1.0, "kv_usage_mean": 0.4}},
        "overload": True, "simulated_s": 5.0, "events": 77,
    }
    r = flatten_summary(summary)
    assert set(r) == set(METRIC_COLUMNS)
    assert r["requests_rejected"] == 1 and r["preemptions"] == 3
    assert r["gpus"] == 8                                   # 2 + 3*2
    assert r["usd_per_hour"] == pytest.approx(2 * 4.0 + 6 * 1.0)
    assert r["utilization"] == pytest.approx((2 * 0.5 + 6 * 1.0) / 8)
    assert r["kv_usage_mean"] == pytest.approx((2 * 0.2 + 6 * 0.4) / 8)
    assert r["output_tokens_per_s_per_gpu"] == pytest.approx(60.0 / 8)
    assert r["tokens_per_s_per_user"] == pytest.approx(40.0)
    assert math.isnan(r["tpot_s_p99"]) and math.isnan(r["e2e_s_mean"])
    assert r["overload"] == 1.0 and r["attainment"] == 0.7


def test_mean_ci_student_t_by_hand():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.302653, s = 1, n = 3
    half = 4.302652729911275 * 1.0 / math.sqrt(3)
    assert m == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    m, lo, hi = mean_ci([5.0, float("nan")])
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci([]))
    # a fraction's interval stays inside [0, 1]
    m, lo, hi = mean_ci([0.5, 1.0], lo=0.0, hi=1.0)
    assert m == 0.75 and lo == 0.0 and hi == 1.0


def test_aggregate_skips_failed_runs():
    df = pd.DataFrame({"point": [0, 0, 1, 1], "x": [1, 1, 2, 2],
                       "error": [None, None, None, "boom"],
                       "attainment": [0.5, 0.7, 0.9, float("nan")]})
    a = aggregate(df, ["point", "x"], ["attainment"])
    assert list(a["runs"]) == [2, 2] and list(a["failed"]) == [0, 1]
    assert a.loc[0, "attainment_mean"] == pytest.approx(0.6)
    assert a.loc[1, "attainment_mean"] == 0.9 and a.loc[1, "error"] == "boom"
    assert math.isnan(a.loc[1, "attainment_ci_low"])


# ------------------------------------------------------------------------------- sweep
def test_sweep_rows_equal_single_runs_exactly():
    grid = {"cluster.pools.0.replicas": [1, 2], "workload.arrival.rate_per_s": [10, 40]}
    res = sweep(QUICK, grid, seeds=2, overrides=SMALL, jobs=2)
    f = res.frame
    assert len(f) == 8 and f["error"].isna().all() and res.ok
    assert list(f.columns[:4]) == ["point", "label", "cluster.pools.0.replicas",
                                   "workload.arrival.rate_per_s"]
    assert sorted(set(f["seed"])) == sorted(run_seeds(42, 2))
    assert list(f["run"]) == [0, 1] * 4 and list(f["seed"]) == run_seeds(42, 2) * 4
    for row in f.to_dict("records"):
        ov = SMALL + [f"cluster.pools.0.replicas={row['cluster.pools.0.replicas']}",
                      f"workload.arrival.rate_per_s={row['workload.arrival.rate_per_s']}",
                      f"seed={row['seed']}"]
        single = flatten_summary(simulate(QUICK, ov).summary)
        bad = [m for m in METRIC_COLUMNS if not same(row[m], single[m])]
        assert not bad, (row["label"], row["seed"], bad)
    # per-point means are the means of the rows
    p = res.points
    assert len(p) == 4
    for pt in p.to_dict("records"):
        rows = f[f["point"] == pt["point"]]
        assert pt["ttft_s_p99_mean"] == pytest.approx(rows["ttft_s_p99"].mean())
        assert pt["runs"] == 2 and pt["failed"] == 0
    # more load on the same replicas: more throughput; seeds differ → rows differ
    r1 = p[p["cluster.pools.0.replicas"] == 1].set_index("workload.arrival.rate_per_s")
    assert r1.loc[40, "requests_per_s_mean"] > r1.loc[10, "requests_per_s_mean"]
    assert f.loc[0, "ttft_s_mean"] != f.loc[1, "ttft_s_mean"]


def test_a_failing_point_is_reported_and_the_others_complete():
    res = sweep(QUICK, {"cluster.pools.0.replicas": [1, 0, 2]}, seeds=2, overrides=SMALL,
                jobs=1)
    f = res.frame
    assert len(f) == 6 and not res.ok
    bad = f[f["cluster.pools.0.replicas"] == 0]
    assert len(bad) == 2
    assert all("replicas" in e and "at least one replica" in e for e in bad["error"])
    assert bad["requests_finished"].isna().all()
    good = f[f["cluster.pools.0.replicas"] != 0]
    assert good["error"].isna().all() and (good["requests_finished"] == 120).all()
    assert list(res.points["failed"]) == [0, 2, 0]
    assert len(res.failed) == 2


def test_a_run_that_crashes_is_reported_per_run(monkeypatch):
    import llmsim.api as api
    real = api.simulate
    seeds = run_seeds(42, 2)

    def flaky(scn, *a, **kw):
        if scn.seed == seeds[1] and scn.cluster.pools[0].replicas == 2:
            raise RuntimeError("simulated crash")
        return real(scn, *a, **kw)

    monkeypatch.setattr(api, "simulate", flaky)
    res = sweep(QUICK, {"cluster.pools.0.replicas": [1, 2]}, seeds=2, overrides=SMALL, jobs=1)
    f = res.frame
    crashed = f[f["error"].notna()]
    assert len(crashed) == 1 and crashed.iloc[0]["seed"] == seeds[1]
    assert "internal error RuntimeError: simulated crash" in crashed.iloc[0]["error"]
    assert f["error"].isna().sum() == 3
    row = res.points[res.points["cluster.pools.0.replicas"] == 2].iloc[0]
    assert row["runs"] == 2 and row["failed"] == 1
    assert row["requests_finished_mean"] == 120


def test_sweep_input_errors():
    with pytest.raises(InputError, match="Did you mean 'replicas'"):
        sweep(QUICK, {"cluster.pools.0.replicaz": [1, 2]}, overrides=SMALL, jobs=1)
    with pytest.raises(InputError, match="no grid point is a valid scenario"):
        sweep(QUICK, {"cluster.pools.0.replicas": [0, -1]}, overrides=SMALL, jobs=1)
    with pytest.raises(InputError, match="unknown backend"):
        sweep(QUICK, {"cluster.pools.0.replicas": [1]}, overrides=SMALL, backend="rey")
    with pytest.raises(InputError, match="number of runs"):
        sweep(QUICK, {"cluster.pools.0.replicas": [1]}, overrides=SMALL, seeds=["a"], jobs=1)
    with pytest.raises(InputError, match="--jobs"):
        sweep(QUICK, {"cluster.pools.0.replicas": [1]}, overrides=SMALL, jobs=0)


def test_explicit_seeds_keep_results_and_save(tmp_path):
    res = sweep(load_scenario(QUICK, SMALL), {"cluster.pools.0.replicas": [1, 2]},
                seeds=[3, 4], jobs=1, keep_results=True)
    assert sorted(set(res.frame["seed"])) == [3, 4]
    assert set(res.results) == {(0, 3), (1, 3)}                   # first seed of each point
    r = res.results[(0, 3)]
    assert len(r.requests) == 120 and r.scenario.cluster.pools[0].replicas == 1
    paths = res.save(tmp_path, fmt="parquet")
    back = pd.read_parquet(paths["runs"])
    assert len(back) == 4 and "cluster.pools.0.replicas" in back.columns
    meta = json.loads(paths["sweep"].read_text())
    assert meta["seeds"] == [3, 4] and meta["failed"] == []
    html = paths["report"].read_text()
    assert "fig-0" in html and "Roofline" in html and "TTFT p50" in html
    assert "Running requests (batch) per replica" in html


def test_llmsim_sweep_is_callable_after_importing_the_module():
    import llmsim.sweep  # noqa: F401  (binds the module on the package)
    res = llmsim.sweep(QUICK, None, overrides=SMALL, jobs=1)
    assert len(res.frame) == 1
    single = flatten_summary(simulate(QUICK, SMALL).summary)   # one seed = the scenario seed
    assert all(same(res.frame.loc[0, m], single[m]) for m in METRIC_COLUMNS)


# ------------------------------------------------------------------------------- CLI
def test_cli_sweep_json_and_out(tmp_path, capsys):
    out = tmp_path / "sw"
    rc = main(["sweep", str(QUICK), "--grid", "cluster.pools.0.replicas=1,0",
               "--set", "workload.num_requests=80", "--jobs", "1", "--no-progress",
               "--json", "--out", str(out), "--format", "csv"])
    cap = capsys.readouterr()
    assert rc == 0
    doc = json.loads(cap.out)
    assert doc["grid_keys"] == ["cluster.pools.0.replicas"]
    assert len(doc["runs"]) == 2 and doc["runs"][1]["error"]
    assert doc["runs"][1]["requests_finished"] is None          # NaN → null
    assert "failed: replicas=0" in cap.err
    assert (out / "runs.csv").exists() and (out / "report.html").exists()
    assert len(pd.read_csv(out / "points.csv")) == 2


def test_cli_sweep_text_and_bad_input(capsys):
    rc = main(["sweep", str(QUICK), "--grid", "cluster.pools.0.replicas=1,2", "--seeds", "2",
               "--set", "workload.num_requests=60", "--jobs", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "replicas=1" in out and "replicas=2" in out and "2/2" in out
    assert main(["sweep", str(QUICK), "--grid", "cluster.pools.0.replicas"]) == 2
    assert main(["sweep", str(QUICK)]) == 2
    assert main(["sweep", str(QUICK), "--grid", "seed=1", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert "expected KEY=V1,V2" in err and "--seeds" in err
