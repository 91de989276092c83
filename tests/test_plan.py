"""llmsim.plan: the plan: section, roofline bounds by hand, max rate (holds / fails just
above, re-simulated), min cost (never a configuration that fails its SLO), Pareto, CLI."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

import llmsim
from llmsim.api import simulate
from llmsim.cli import main
from llmsim.cost import CostModel
from llmsim.cost.types import BatchAggregates
from llmsim.errors import InputError
from llmsim.planning.bounds import (WorkloadShape, cluster_bound, pool_bound,
                                    tokens_per_s_per_gpu_bound, workload_shape)
from llmsim.planning.evaluate import find_rate_key
from llmsim.planning.pareto import pareto_mask
from llmsim.plan import plan
from llmsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def base_scenario(num_requests=300, rate=12.0, slo=None, plan_section=None) -> dict:
    d = {
        "name": "plan-test", "seed": 3, "model": "llama-3.1-8b",
        "cluster": {"pools": [{"name": "gpu", "hardware": "h100-sxm", "replicas": 1,
                               "scheduler": {"policy": "vllm", "max_num_seqs": 128}}]},
        "workload": {"num_requests": num_requests,
                     "arrival": {"process": "poisson", "rate_per_s": rate},
                     "prompt_tokens": {"dist": "lognormal", "mean": 600, "sigma": 0.7,
                                       "max": 4000},
                     "output_tokens": {"dist": "lognormal", "mean": 150, "sigma": 0.7,
                                       "max": 1000}},
        "slo": slo if slo is not None else {"ttft_s": 0.5, "tpot_s": 0.04},
    }
    if plan_section is not None:
        d["plan"] = plan_section
    return d


def mean_attainment(data: dict, overrides: list[str], seeds: list[int]) -> float:
    vals = [simulate(data, overrides + [f"seed={s}"]).summary["slo"]["attainment"]
            for s in seeds]
    return float(np.mean(vals))


# ------------------------------------------------------------------------------- schema
@pytest.mark.parametrize("section,msg", [
    ({}, "at least one of max_rate, min_cost or pareto"),
    ({"max_rate": {"low_per_s": 5, "high_per_s": 4}}, "high_per_s must be above low_per_s"),
    ({"min_cost": {"candidates": {"a..b": [1]}}}, "not a dotted scenario key"),
    ({"min_cost": {"candidates": {"seed": []}}}, "lists no values"),
    ({"max_rates": {}}, "Did you mean 'max_rate'"),
    ({"max_rate": {}, "attainment_target": 1.5}, "attainment_target"),
    ({"pareto": {"rates_per_s": [0]}}, "rates_per_s"),
])
def test_plan_section_is_validated(section, msg):
    with pytest.raises(InputError) as e:
        load_scenario(base_scenario(plan_section=section))
    assert msg in str(e.value)


def test_plan_section_defaults_and_round_trip():
    scn = load_scenario(base_scenario(plan_section={"max_rate": {}}))
    p = scn.plan
    assert p.attainment_target == 0.9 and p.seeds == 1 and p.max_rate.rel_tol == 0.05
    assert load_scenario(scn.to_dict()).plan == p
    assert load_scenario(base_scenario()).plan is None


def test_rate_key_detection():
    data = load_scenario(base_scenario()).to_dict()
    assert find_rate_key(data, None) == ("workload.arrival.rate_per_s", 12.0)
    assert find_rate_key(data, "workload.arrival.rate_per_s")[1] == 12.0
    with pytest.raises(InputError, match="rate key must name a number"):
        find_rate_key(data, "model")
    with pytest.raises(InputError, match="Did you mean"):
        find_rate_key(data, "workload.arrival.rate_per_z")
    d2 = base_scenario()
    d2["workload"]["arrival"] = {"process": "on_off", "on_rate_per_s": 5, "on_s": 1, "off_s": 1}
    with pytest.raises(InputError, match="give plan.rate_key"):
        find_rate_key(load_scenario(d2).to_dict(), None)


# ------------------------------------------------------------------------------- bounds
def constant_lengths(prompt: int, output: int, **kw) -> dict:
    d = base_scenario(**kw)
    d["workload"]["prompt_tokens"] = {"dist": "constant", "value": prompt}
    d["workload"]["output_tokens"] = {"dist": "constant", "value": output}
    return d


def test_pool_capacity_by_hand():
    scn = load_scenario(constant_lengths(512, 64, slo={"ttft_s": 1.0}))
    pool = scn.cluster.pools[0]
    shape = workload_shape(scn)
    assert shape.mean_prompt_tokens == 512 and shape.mean_output_tokens == 64
    cm = CostModel(scn.resolved_model(), pool.resolved_hardware(), pool.parallel_config(),
                   pool.quant_config())
    kv = scn.memory_plans()["gpu"].kv_capacity_tokens
    per_tok = cm.step_time_s(BatchAggregates.from_pairs([(512, 0)])) / 512
    b = min(128, kv // (512 + 32 + 1))
    step = cm.step_time_s(BatchAggregates(decode_seqs=b, decode_ctx_sum=b * 544, num_sampled=b))
    expect = 1.0 / (512 * per_tok + 64 * step / b)
    pb = pool_bound(scn, pool, shape)
    assert pb.decode_batch == b and pb.decode_tpot_s == pytest.approx(step)
    assert pb.capacity_per_s == pytest.approx(expect, rel=1e-12)
    # two replicas: twice the capacity
    scn2 = load_scenario(constant_lengths(512, 64, slo={"ttft_s": 1.0}),
                         ["cluster.pools.0.replicas=2"])
    assert cluster_bound(scn2, shape).rate_per_s == pytest.approx(2 * expect, rel=1e-12)
    # a TPOT target below the full-batch step shrinks the decode batch until it fits
    tight = 0.5 * (step + cm.step_time_s(BatchAggregates(decode_seqs=1, decode_ctx_sum=544,
                                                         num_sampled=1)))
    scn3 = load_scenario(constant_lengths(512, 64, slo={"tpot_s": tight}))
    pb3 = pool_bound(scn3, scn3.cluster.pools[0], shape)
    assert 1 <= pb3.decode_batch < b and pb3.decode_tpot_s <= tight
    nxt = pb3.decode_batch + 1
    assert cm.step_time_s(BatchAggregates(decode_seqs=nxt, decode_ctx_sum=nxt * 544,
                                          num_sampled=nxt)) > tight


def test_latency_floors_bound_attainment_and_hold_in_simulation():
    d = constant_lengths(1024, 32, num_requests=60, rate=2.0)
    scn = load_scenario(d)
    pool = scn.cluster.pools[0]
    cm = CostModel(scn.resolved_model(), pool.resolved_hardware(), pool.parallel_config(),
                   pool.quant_config())
    ttft_floor = cm.step_time_s(BatchAggregates.from_pairs([(1024, 0)]))
    tpot_floor = cm.step_time_s(BatchAggregates(decode_seqs=1, decode_ctx_sum=1024,
                                                num_sampled=1))
    shape = workload_shape(scn)
    below = load_scenario(d, [f"slo={{ttft_s: {ttft_floor * 0.99!r}}}"])
    above = load_scenario(d, [f"slo={{ttft_s: {ttft_floor * 1.01!r}}}"])
    b_below, b_above = cluster_bound(below, shape), cluster_bound(above, shape)
    assert b_below.attainment_bound == 0.0 and b_below.floor_miss == {"ttft_s": 1.0}
    assert b_above.attainment_bound == 1.0
    tpot_below = load_scenario(d, [f"slo={{tpot_s: {tpot_floor * 0.99!r}}}"])
    assert cluster_bound(tpot_below, shape).attainment_bound == 0.0
    # the floors are real: no simulated request beats them
    res = simulate(d, ["simulation.check_invariants=false"])
    fin = res.requests[res.requests["status"] == "finished"]
    assert (fin["ttft_s"] >= ttft_floor * (1 - 1e-9)).all()
    assert (fin["tpot_s"] >= tpot_floor * (1 - 1e-9)).all()
    assert simulate(below).summary["slo"]["attainment"] == 0.0


def test_tokens_per_gpu_bound_is_monotone_in_interactivity():
    scn = load_scenario(base_scenario())
    shape = workload_shape(scn)
    ys = [tokens_per_s_per_gpu_bound(scn, shape, u) for u in (20.0, 50.0, 90.0)]
    assert ys[0] >= ys[1] >= ys[2] > 0
    assert math.isnan(tokens_per_s_per_gpu_bound(scn, shape, 1e6))   # faster than batch 1


def test_pareto_mask_by_hand():
    x = np.array([1.0, 2.0, 3.0, 2.0, 1.0, np.nan])
    y = np.array([5.0, 4.0, 1.0, 3.0, 5.0, 9.0])
    # (2,3) is beaten by (2,4); the two (1,5) tie and are both kept; NaN never on the front
    assert pareto_mask(x, y).tolist() == [True, True, True, False, True, False]


# ------------------------------------------------------------------------------- planner
def test_max_rate_holds_at_the_answer_and_fails_just_above():
    section = {"seeds": 2, "attainment_target": 0.9,
               "max_rate": {"rel_tol": 0.1, "max_evaluations": 16}}
    data = base_scenario(num_requests=250, plan_section=section)
    res = plan(data, jobs=2)
    a = res.max_rate
    assert a is not None and a.converged
    assert a.rate_key == "workload.arrival.rate_per_s" and len(a.seeds) == 2
    lo, hi = a.rate_per_s, a.fail_rate_per_s
    assert lo is not None and hi is not None and lo < hi <= lo * 1.1 + 1e-12
    assert a.attainment >= 0.9 > a.fail_attainment
    # re-simulate both rates with the plan's seeds
    key = a.rate_key
    assert mean_attainment(data, [f"{key}={lo!r}"], a.seeds) >= 0.9
    assert mean_attainment(data, [f"{key}={hi!r}"], a.seeds) < 0.9
    # bound printed next to the answer; rates tried are in the table
    assert a.bound_rate_per_s > 0 and math.isfinite(a.bound_rate_per_s)
    assert set(a.evaluations["rate_per_s"]) >= {lo, hi}
    assert "roofline" in res.format() and f"{lo:.4g} req/s" in res.format()


def test_min_cost_never_returns_a_configuration_that_fails():
    section = {"seeds": 2, "min_cost": {
        "target_rate_per_s": 14,
        "candidates": {"cluster.pools.0.hardware": ["h100-sxm", "a100-80gb", "l40s"],
                       "cluster.pools.0.replicas": [1, 2, 3],
                       "cluster.pools.0.parallel.tp": [1, 3]}}}
    data = base_scenario(num_requests=250, plan_section=section)
    res = plan(data, jobs=2)
    a = res.min_cost
    best = a.best
    assert best is not None and best.status == "passed"
    ov = [f"workload.arrival.rate_per_s={a.target_rate_per_s!r}"] + \
        [f"{k}={json.dumps(v)}" for k, v in best.point.items()]
    assert mean_attainment(data, ov, a.seeds) >= 0.9
    df = a.candidates
    assert len(df) == 18
    invalid = df[df["cluster.pools.0.parallel.tp"] == 3]
    assert (invalid["status"] == "invalid").all()            # tp=3 does not divide 32 heads
    # nothing cheaper passed: cheaper candidates were pruned or failed when simulated
    cheaper = df[(df["status"] != "invalid") & (df["usd_per_hour"] < best.usd_per_hour)]
    assert set(cheaper["status"]) <= {"pruned", "failed"}
    for r in cheaper[cheaper["status"] == "failed"].to_dict("records"):
        ovc = [f"workload.arrival.rate_per_s={a.target_rate_per_s!r}",
               f"cluster.pools.0.hardware={r['cluster.pools.0.hardware']}",
               f"cluster.pools.0.replicas={r['cluster.pools.0.replicas']}"]
        assert mean_attainment(data, ovc, a.seeds) < 0.9
    pruned = df[df["status"] == "pruned"]
    assert len(pruned) and all(r["bound_rate_per_s"] * 1.25 < 14
                               or r["attainment_bound"] < 0.9
                               for r in pruned.to_dict("records"))
    assert (df[df["usd_per_hour"] > best.usd_per_hour]["status"]
            .isin(["skipped", "pruned", "failed", "passed"])).all()
    text = res.format()
    assert "Min cost at 14 req/s" in text and "roofline" in text


def test_min_cost_prunes_everything_when_the_floors_rule_it_out():
    section = {"min_cost": {"target_rate_per_s": 5,
                            "candidates": {"cluster.pools.0.hardware": ["h100-sxm", "l40s"]}}}
    data = base_scenario(num_requests=50, slo={"ttft_s": 0.001}, plan_section=section)
    res = plan(data, jobs=1)
    a = res.min_cost
    assert a.best is None and a.simulated == 0 and a.roofline_usd_per_hour is None
    assert (a.candidates["status"] == "pruned").all()
    assert all("latency floors" in r for r in a.candidates["reason"])


def test_min_cost_over_the_prefill_decode_split():
    disagg = ROOT / "scenarios" / "disaggregated.yaml"
    ov = ["workload.num_requests=150", "plan={seeds: 1, min_cost: {target_rate_per_s: 10, "
          "candidates: {cluster.pools.0.replicas: [1, 2], cluster.pools.1.replicas: [1, 2]}}}"]
    scn = load_scenario(disagg, ov)
    b = cluster_bound(scn, workload_shape(scn))
    pre = [p for p in b.pools if p.role == "prefill"][0]
    dec = [p for p in b.pools if p.role == "decode"][0]
    # a disaggregated pair serves what its slower side serves
    assert b.rate_per_s == pytest.approx(min(pre.capacity_per_s, dec.capacity_per_s))
    assert pre.capacity_per_s == pytest.approx(pre.prefill_capacity_per_s)
    res = plan(disagg, ov, jobs=2)
    a = res.min_cost
    assert a.best is not None and a.best.label.startswith("0.replicas=")
    assert a.best.gpus == sum(a.best.point.values())
    rerun = [f"workload.arrival.rate_per_s={a.target_rate_per_s!r}"] + \
        [f"{k}={v}" for k, v in a.best.point.items()]
    assert mean_attainment(str(disagg), ov + rerun, a.seeds) >= 0.9


def test_pareto_front_and_bounds():
    section = {"pareto": {"candidates": {"cluster.pools.0.scheduler.max_num_seqs": [4, 64]},
                          "rates_per_s": [4, 12]}}
    res = plan(base_scenario(num_requests=150, plan_section=section), jobs=2)
    a = res.pareto
    assert len(a.points) == 4 and len(a.front) >= 1
    pts = a.points
    assert pts["on_front"].tolist() == pareto_mask(pts["tokens_per_s_per_user"],
                                                   pts["output_tokens_per_s_per_gpu"]).tolist()
    # the simulated decode never beats the roofline at the same per-user speed
    assert (pts["output_tokens_per_s_per_gpu"] <= pts["bound_tokens_per_s_per_gpu"]).all()
    # a batch cap of 4 keeps users fast at high load
    hi = pts[pts["rate_per_s"] == 12].set_index("cluster.pools.0.scheduler.max_num_seqs")
    assert hi.loc[4, "tokens_per_s_per_user"] > hi.loc[64, "tokens_per_s_per_user"]
    assert set(a.curves) == {"max_num_seqs=4", "max_num_seqs=64"}


def test_plan_input_errors():
    with pytest.raises(InputError, match="no plan: section"):
        plan(base_scenario(), jobs=1)
    with pytest.raises(InputError, match="need SLO targets"):
        plan(base_scenario(slo={}, plan_section={"max_rate": {}}), jobs=1)
    bad = {"min_cost": {"target_rate_per_s": 5,
                        "candidates": {"cluster.pools.0.hardwar": ["h100-sxm"]}}}
    with pytest.raises(InputError, match="Did you mean 'hardware'"):
        plan(base_scenario(plan_section=bad), jobs=1)
    allbad = {"min_cost": {"target_rate_per_s": 5,
                           "candidates": {"cluster.pools.0.parallel.tp": [3, 5]}}}
    with pytest.raises(InputError, match="no candidate is a valid scenario"):
        plan(base_scenario(plan_section=allbad), jobs=1)


def test_llmsim_plan_is_callable_after_importing_the_module():
    import llmsim.plan  # noqa: F401
    res = llmsim.plan(base_scenario(num_requests=40, plan_section={
        "pareto": {"rates_per_s": [2]}}), jobs=1)
    assert len(res.pareto.points) == 1


# ------------------------------------------------------------------------------- CLI
def test_cli_plan_json_and_out(tmp_path, capsys):
    import yaml
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(base_scenario(num_requests=120, plan_section={
        "max_rate": {"rel_tol": 0.2, "max_evaluations": 6},
        "pareto": {"rates_per_s": [4]}})))
    out = tmp_path / "out"
    rc = main(["plan", str(path), "--json", "--jobs", "2", "--no-progress", "--out", str(out),
               "--format", "csv"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    doc = json.loads(cap.out)
    assert doc["max_rate"]["bound_rate_per_s"] > 0 and doc["min_cost"] is None
    assert len(doc["pareto"]["points"]) == 1
    for name in ("plan.json", "max_rate.csv", "pareto.csv", "report.html"):
        assert (out / name).exists(), name
    html = (out / "report.html").read_text()
    assert "Max rate" in html and "Pareto front" in html and "fig-0" in html
    rc = main(["plan", str(path), "--no-progress", "--jobs", "1",
               "--set", "plan.max_rate.rel_tol=2"])
    assert rc == 2 and "rel_tol" in capsys.readouterr().err


def test_shipped_plan_example_validates():
    scn = load_scenario(ROOT / "scenarios" / "plan_chat.yaml")
    assert scn.plan.max_rate is not None and scn.plan.min_cost is not None
    assert scn.plan.pareto is not None
    assert isinstance(workload_shape(scn, 100), WorkloadShape)
