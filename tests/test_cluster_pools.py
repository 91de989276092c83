"""Heterogeneous pools and routers; decentralized pipelines (cost, memory, WAN hops);
scenario checks of the cluster sections."""
import pytest

from llmsim.api import simulate
from llmsim.cost import CostModel
from llmsim.cost.types import BatchAggregates, ParallelConfig, QuantConfig
from llmsim.engine.network import Topology
from llmsim.engine.pipeline import (PipelineCostModel, StageSpec, hop_link_coeffs,
                                    stage_memory_plan, stage_sizes)
from llmsim.errors import InputError
from llmsim.hardware.catalog import load_hardware
from llmsim.models.catalog import load_model
from llmsim.scenario import load_scenario

WORKLOAD = {"num_requests": 300, "arrival": {"process": "poisson", "rate_per_s": 6},
            "prompt_tokens": {"dist": "lognormal", "mean": 600, "sigma": 0.6, "max": 3000},
            "output_tokens": {"dist": "lognormal", "mean": 150, "sigma": 0.6, "max": 600}}


def hetero(router, n=300):
    return {"name": "h", "seed": 2, "model": "llama-3.1-8b",
            "cluster": {"router": router, "pools": [
                {"name": "fast", "hardware": "h100-sxm", "replicas": 1},
                {"name": "slow", "hardware": "l4", "replicas": 1}]},
            "workload": dict(WORKLOAD, num_requests=n)}


def test_capacity_weighted_router_sends_more_to_the_faster_pool():
    cw = simulate(hetero("capacity_weighted"))
    rr = simulate(hetero("round_robin"))
    share_cw = (cw.requests.pool == "fast").mean()
    share_rr = (rr.requests.pool == "fast").mean()
    assert share_rr == pytest.approx(0.5, abs=0.01)
    assert share_cw > 0.75
    pools = cw.summary["pools"]
    # weights come from the pools' roofline decode capacity: the H100 is several times the L4
    assert pools["fast"]["decode_capacity"] > 3 * pools["slow"]["decode_capacity"]
    # and the faster pool serves its share faster: lower mean E2E than round robin overall
    assert cw.summary["e2e_s"]["mean"] < rr.summary["e2e_s"]["mean"]


@pytest.mark.parametrize("router", ["least_kv", "power_of_two", "prefix_affinity", "random",
                                    "least_outstanding"])
def test_every_router_serves_heterogeneous_pools(router):
    res = simulate(hetero(router, n=150))
    assert res.summary["requests"]["finished"] == 150
    assert set(res.requests.pool) == {"fast", "slow"}
    for name in ("fast", "slow"):
        p = res.summary["pools"][name]
        assert p["utilization"] > 0 and p["usd"] > 0


def test_least_kv_prefers_the_emptier_cache():
    from llmsim.engine.router import make_router

    class R:
        def __init__(self, kv, out):
            self.kv_usage, self.num_outstanding = kv, out
            self.capacity_weight = 1.0
    rs = [R(0.5, 0), R(0.1, 9), R(0.1, 3)]
    assert make_router("least_kv", None).choose(None, rs) is rs[2]
    rs = [R(0.0, 4), R(0.0, 1)]
    assert make_router("capacity_weighted", None).choose(None, rs) is rs[1]
    rs[0].capacity_weight, rs[1].capacity_weight = 1.0, 0.25
    # (4+1)/1 = 5 vs (1+1)/0.25 = 8: the faster replica wins despite more work
    assert make_router("capacity_weighted", None).choose(None, rs) is rs[0]


# --------------------------------------------------------------------------- pipelines
class _Link:
    def __init__(self, src, dst, gbps, ms):
        self.src, self.dst = src, dst
        self.bandwidth_bytes_per_s = gbps * 1e9 / 8
        self.latency_s = ms / 1e3


def test_pipeline_step_time_by_hand():
    model = load_model("llama-3.1-8b")
    h100, a100 = load_hardware("h100-sxm"), load_hardware("a100-80gb")
    q = QuantConfig()
    stages = [StageSpec(h100, 1, "eu", 16), StageSpec(a100, 1, "us", 16)]
    topo = Topology([_Link("eu", "us", 1.0, 40.0)])
    hops = [hop_link_coeffs(topo, stages, j) for j in range(2)]
    pc = PipelineCostModel(model, stages, q, hops)
    agg = BatchAggregates(decode_seqs=8, decode_ctx_sum=8 * 500, num_sampled=8)
    ch = CostModel(model, h100, ParallelConfig(), q)
    ca = CostModel(model, a100, ParallelConfig(), q)
    oh, oa = h100.efficiency.step_overhead_s, a100.efficiency.step_overhead_s
    act = 8 * 2 * model.hidden_size * 2                     # 8 tokens, hidden + residual, bf16
    want = (0.5 * (ch.step_time_s(agg) - oh) + oh + 0.5 * (ca.step_time_s(agg) - oa) + oa
            + 0.040 + act / 0.125e9                          # eu -> us with the activations
            + 0.040)                                         # us -> eu: the sampled token
    assert pc.step_time_s(agg) == pytest.approx(want, rel=1e-12)
    assert pc.stage_time_s(agg) == pytest.approx(
        max(0.5 * (ch.step_time_s(agg) - oh) + oh, 0.5 * (ca.step_time_s(agg) - oa) + oa))
    assert pc.step_time_s(BatchAggregates()) == 0.0


def test_stage_memory_plan_is_the_most_constrained_stage():
    model = load_model("llama-3.1-8b")
    h100, l4 = load_hardware("h100-sxm"), load_hardware("l4")
    stages = [StageSpec(h100, 1, "a", 16), StageSpec(l4, 1, "a", 16)]
    plan = stage_memory_plan(model, stages, QuantConfig(), gpu_memory_utilization=0.9,
                             block_size=16, max_num_batched_tokens=2048, max_num_seqs=64)
    assert plan.memory_bytes_per_gpu == l4.memory_bytes        # the L4 limits the cache
    only_l4 = stage_memory_plan(model, [StageSpec(l4, 1, "a", 16), StageSpec(l4, 1, "a", 16)],
                                QuantConfig(), gpu_memory_utilization=0.9, block_size=16,
                                max_num_batched_tokens=2048, max_num_seqs=64)
    assert plan.num_gpu_blocks <= only_l4.num_gpu_blocks + 1
    assert plan.num_gpus == 2
    big = load_model("llama-3.1-70b")
    with pytest.raises(InputError, match="stage 1"):
        stage_memory_plan(big, [StageSpec(h100, 1, "a", 60), StageSpec(l4, 1, "a", 20)],
                          QuantConfig(), gpu_memory_utilization=0.9, block_size=16,
                          max_num_batched_tokens=2048, max_num_seqs=64)
    assert stage_sizes(80, 3) == [27, 27, 26]


def swarm(regions, link_ms=60.0, churn=None):
    scn = {"name": "swarm", "seed": 5, "model": "llama-3.1-8b",
           "cluster": {"pools": [{"name": "swarm", "hardware": "rtx-4090", "replicas": 1,
                                  "region": regions[0],
                                  "scheduler": {"max_num_seqs": 8,
                                                "max_num_batched_tokens": 2048},
                                  "stages": [{"region": r} for r in regions]}],
                       "network": {"links": [{"src": "eu", "dst": "us",
                                              "bandwidth_gbps": 1.0,
                                              "latency_ms": link_ms}]
                                   if "us" in regions else []}},
           "workload": {"num_requests": 20, "arrival": {"process": "poisson", "rate_per_s": 1},
                        "prompt_tokens": {"dist": "constant", "value": 300},
                        "output_tokens": {"dist": "constant", "value": 40}}}
    if churn:
        scn["cluster"]["faults"] = {"churn": churn, "provisioning_s": 5}
    return scn


def test_decentralized_steps_pay_the_wan_hops():
    local = simulate(swarm(["eu", "eu"]))
    wan = simulate(swarm(["eu", "us"]))
    assert local.summary["requests"]["finished"] == wan.summary["requests"]["finished"] == 20
    # each decode step crosses the ocean twice (activations there, the token back)
    d = wan.summary["itl_s"]["p50"] - local.summary["itl_s"]["p50"]
    assert d == pytest.approx(2 * 0.060, rel=0.05)
    pool = wan.summary["pools"]["swarm"]
    assert pool["gpus_per_replica"] == 2 and pool["hardware"] == "rtx-4090"
    assert [s["region"] for s in pool["stages"]] == ["eu", "us"]


def test_decentralized_churn_trace_breaks_a_pipeline(tmp_path):
    tr = tmp_path / "churn.csv"
    tr.write_text("time_s,pool,count\n5,swarm,1\n")
    res = simulate(swarm(["eu", "us"], churn={"trace": str(tr), "on_failure": "resume"}))
    assert res.summary["requests"]["finished"] == 20
    p = res.summary["pools"]["swarm"]
    assert p["replicas_lost"] == 1 and p["replicas_added"] == 1 and p["resumes"] > 0
    # the resumed requests waited for the pipeline to come back (the only replica)
    assert res.requests.finish_s.max() > 5 + 5


# --------------------------------------------------------------------------- checks
def problems(data):
    with pytest.raises(InputError) as e:
        load_scenario(data)
    return {p.key: p.message for p in e.value.problems}


def test_checks_refuse_static_batching_in_disaggregated_pools():
    data = hetero("round_robin")
    data["cluster"]["pools"][0].update(role="prefill", scheduler={"policy": "static"})
    data["cluster"]["pools"][1].update(role="decode")
    keys = problems(data)
    assert "request-level batching" in keys["cluster.pools.0.scheduler.policy"]


def test_checks_require_a_link_between_regions_that_talk():
    data = hetero("round_robin")
    data["cluster"]["pools"][0].update(role="prefill", region="eu")
    data["cluster"]["pools"][1].update(role="decode", region="us")
    keys = problems(data)
    assert "no link joins them" in keys["cluster.pools.0.region"]
    data["cluster"]["network"] = {"cross_region": {"bandwidth_gbps": 10, "latency_ms": 30}}
    load_scenario(data)            # a default cross-region link is enough
    keys = problems(swarm(["eu", "asia"]))
    assert "exchange activations" in keys["cluster.pools.0.stages.0"]


def test_checks_on_stages_and_churn():
    data = swarm(["eu", "us"])
    data["cluster"]["pools"][0]["parallel"] = {"pp": 3}
    data["cluster"]["pools"][0]["stages"][1]["hardware"] = "no-such-gpu"
    data["cluster"]["faults"] = {"churn": {"rate_per_hour": 1, "pools": ["swarn"]}}
    keys = problems(data)
    assert "number of stages" in keys["cluster.pools.0.parallel.pp"]
    assert "cluster.pools.0.stages.1.hardware" in keys
    assert "Did you mean 'swarm'" in keys["cluster.faults.churn.pools.0"]


def test_checks_read_the_fault_trace(tmp_path):
    tr = tmp_path / "spot.csv"
    tr.write_text("time_s,pool,count\n3,fast,1\nsoon,fast,1\n")
    data = hetero("round_robin")
    data["cluster"]["faults"] = {"spot": {"trace": str(tr)}}
    with pytest.raises(InputError) as e:
        load_scenario(data)
    (p,) = e.value.problems
    assert p.line == 3 and p.key == "time_s" and p.where == str(tr)
