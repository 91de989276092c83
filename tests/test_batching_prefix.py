"""Prefix caching end to end on a Mooncake-format trace: the simulated hit rate against an
independent oracle (an unbounded cache replayed in arrival order)."""
import json
from pathlib import Path

import pytest

from llmsim.api import simulate
from llmsim.scenario import load_scenario
from llmsim.scheduling.factory import build_schedulers

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "traces" / "synthetic_sessions_mooncake.jsonl"
END_S = 200.0


def oracle_hit_rate(path, end_s, block_size=16, H=512):
    """Hit tokens / prompt tokens of an unbounded prefix cache: a request hits the longest run
    of leading ids whose chain was seen before (full blocks, never its last token)."""
    seen = set()
    hit = total = 0
    t0 = None
    for line in open(path):
        o = json.loads(line)
        t0 = o["timestamp"] if t0 is None else t0
        if (o["timestamp"] - t0) / 1000 >= end_s:      # the window counts from the first row
            break
        ids, P = o["hash_ids"], o["input_length"]
        j = 0
        while j < len(ids) and tuple(ids[:j + 1]) in seen:
            j += 1
        seen.update(tuple(ids[:k + 1]) for k in range(len(ids)))
        hit += min(j * H, (P - 1) // block_size * block_size)
        total += P
    return hit / total


def scenario(prefix=True, util=0.9, host_gb=0.0, offload=False):
    mem = {"enable_prefix_caching": prefix, "gpu_memory_utilization": util}
    if host_gb:
        mem.update(swap_space_gb=host_gb, kv_offload=offload)
    return {"name": "prefix", "seed": 1, "model": "llama-3.1-8b",
            "cluster": {"pools": [{"name": "p", "hardware": "h100-sxm", "replicas": 1,
                                   "scheduler": {"policy": "vllm_v1"}, "memory": mem}]},
            "workload": {"trace": {"path": str(TRACE), "format": "mooncake",
                                   "window": {"start_s": 0, "end_s": END_S}}},
            "simulation": {"check_invariants": False}}   # post-run checks still on


def hit_rate(res):
    df = res.requests
    assert (df["num_cached_tokens"] < df["num_prompt_tokens"]).all()
    assert (df["num_cached_tokens"] % 16 == 0).all()
    return df["num_cached_tokens"].sum() / df["num_prompt_tokens"].sum()


def test_hit_rate_matches_unbounded_oracle_and_shrinks_with_the_cache():
    want = oracle_hit_rate(TRACE, END_S)
    assert want > 0.5                              # multi-turn sessions share most tokens
    big = simulate(scenario())
    assert hit_rate(big) == pytest.approx(want, abs=1e-12)
    # a small GPU cache evicts histories between turns; a host tier brings them back
    small = hit_rate(simulate(scenario(util=0.24)))
    tier = hit_rate(simulate(scenario(util=0.24, host_gb=200.0, offload=True)))
    assert small < tier <= want + 1e-12
    assert tier == pytest.approx(want, abs=1e-12)
    off = simulate(scenario(prefix=False))
    assert hit_rate(off) == 0
    # hits shorten prefill: mean TTFT drops
    assert big.summary["ttft_s"]["mean"] < off.summary["ttft_s"]["mean"]


def test_scheduler_counters_add_up_to_the_request_table():
    from llmsim.engine.simulation import Simulation
    scn = load_scenario(scenario(util=0.24, host_gb=200.0, offload=True))
    sim = Simulation(scn, progress=False)
    run = sim.run()
    scheds = [ve.scheduler for r in sim.replicas for ve in r.engines]
    df = run.requests
    assert sum(s.prefix_hit_tokens for s in scheds) == df["num_cached_tokens"].sum()
    assert sum(s.prefix_query_tokens for s in scheds) == df["num_prompt_tokens"].sum()
    kv = scheds[0].kv
    assert kv.host_hit_blocks > 0 and kv.evicted_blocks > 0
    assert kv.host.blocks_loaded == kv.host_hit_blocks


def test_prefix_caching_scenario_builds_a_host_tier():
    scn = load_scenario(ROOT / "scenarios" / "prefix_caching.yaml")
    pool = scn.cluster.pools[0]
    plans = scn.memory_plans()
    [s] = build_schedulers(pool, scn.resolved_model(), plans[pool.name], scn.simulation, None)
    assert s.kv.enable_prefix_caching and s.kv.host is not None
    hw = pool.resolved_hardware()
    plan = plans[pool.name]
    assert s.kv.host.num_blocks == int(512e9 // plan.block_bytes_per_gpu)
    assert s.kv.host.block_transfer_s == pytest.approx(
        plan.block_bytes_per_gpu / hw.host_link.bandwidth_bytes_per_s)
