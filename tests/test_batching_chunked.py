"""Chunked prefill (Sarathi-Serve): the work a chunked prompt pays, and the ITL-tail effect."""
import pytest

from llmsim.api import simulate
from llmsim.cost import BatchAggregates, CostModel
from llmsim.cost.roofline import kv_bytes_per_token_per_layer
from llmsim.cost.types import QuantConfig
from llmsim.hardware.catalog import load_hardware
from llmsim.memory import PagedKVCacheManager
from llmsim.models.catalog import load_model
from llmsim.scheduling import SarathiScheduler, VllmScheduler
from llmsim.workload.request import Request
from test_batching_memory import run_checked


def chunk_aggs(P, budget):
    kv = PagedKVCacheManager(num_blocks=10000, block_size=16)
    s = SarathiScheduler(kv, max_num_seqs=8, max_num_batched_tokens=budget)
    r = Request(0, 0.0, P, 1)
    _, trace = run_checked(s, [r], step_time=lambda out: 1.0)
    return [out.agg for _, out in trace]


def op(cm, agg, name):
    return next(o for o in cm.breakdown(agg) if o.name == name)


def test_chunked_prompt_pays_unchunked_work_plus_kv_rereads():
    P, budget = 3000, 512
    aggs = chunk_aggs(P, budget)
    assert [a.prefill_tokens for a in aggs] == [512] * 5 + [440]
    whole = BatchAggregates.from_pairs([(P, 0)])
    # chunk i attends to the c_i = 512·i tokens of earlier chunks: Σ n(c + n/2) = P²/2
    assert sum(a.prefill_tokens for a in aggs) == P
    assert sum(a.prefill_nc_sum + a.prefill_n2_sum / 2 for a in aggs) == P * P / 2
    extra_ctx = sum(a.prefill_ctx_sum for a in aggs)
    assert extra_ctx == sum(512 * i for i in range(6))
    assert aggs[-1].num_sampled == 1 and all(a.num_sampled == 0 for a in aggs[:-1])

    model = load_model("llama-3.1-8b")
    cm = CostModel(model, load_hardware("h100-sxm"))
    # attention FLOPs are the same; attention bytes grow by the KV of the earlier chunks,
    # read again by every later chunk (all layers)
    fl = sum(op(cm, a, "attn_prefill").flops for a in aggs)
    assert fl == pytest.approx(op(cm, whole, "attn_prefill").flops, rel=1e-12)
    by = sum(op(cm, a, "attn_prefill").bytes for a in aggs)
    kv_layer = kv_bytes_per_token_per_layer(model, QuantConfig(), 1)
    assert by - op(cm, whole, "attn_prefill").bytes == pytest.approx(
        model.num_layers * extra_ctx * kv_layer, rel=1e-12)
    # linear layers see the same tokens: same FLOPs
    g = sum(op(cm, a, "qkv_proj").flops for a in aggs)
    assert g == pytest.approx(op(cm, whole, "qkv_proj").flops, rel=1e-12)
    # so the chunked prompt costs more in total (extra reads, per-step overheads)
    assert sum(cm.step_time_s(a) for a in aggs) > cm.step_time_s(whole)


def scenario(policy, rate=12.0, n=300):
    return {"name": "itl-tail", "seed": 7, "model": "llama-3.1-8b",
            "cluster": {"pools": [{"name": "p", "hardware": "h100-sxm", "replicas": 1,
                                   "scheduler": {"policy": policy, "max_num_seqs": 128}}]},
            "workload": {"num_requests": n,
                         "arrival": {"process": "poisson", "rate_per_s": rate},
                         "prompt_tokens": {"dist": "lognormal", "mean": 1200, "sigma": 0.9,
                                           "max": 8000},
                         "output_tokens": {"dist": "lognormal", "mean": 220, "sigma": 0.9,
                                           "max": 2000}}}


def test_sarathi_cuts_the_itl_tail_at_a_ttft_cost():
    """Sarathi-Serve (Agrawal et al., OSDI 2024, §3–§5): at equal load, stall-free batching
    gives a much lower inter-token tail than prefill-first batching, paying for it with a
    slightly higher time to first token (prompts are spread over several steps)."""
    v = simulate(scenario("vllm")).summary
    s = simulate(scenario("sarathi")).summary
    assert v["requests"]["finished"] == s["requests"]["finished"] == 300
    assert s["itl_s"]["p99"] < 0.5 * v["itl_s"]["p99"]
    assert s["tpot_s"]["mean"] < v["tpot_s"]["mean"]
    assert s["ttft_s"]["mean"] > v["ttft_s"]["mean"]
    assert s["ttft_s"]["p50"] > v["ttft_s"]["p50"]


def test_vllm_v1_with_sarathi_budget_schedules_like_sarathi():
    a = simulate(scenario("sarathi", n=120)).requests
    scn = scenario("vllm_v1", n=120)
    scn["cluster"]["pools"][0]["scheduler"]["max_num_batched_tokens"] = 2048
    b = simulate(scn).requests
    assert (a["finish_s"].to_numpy() == b["finish_s"].to_numpy()).all()


def test_vllm_chunked_prefill_flag_uses_the_token_budget():
    kv = PagedKVCacheManager(num_blocks=1000, block_size=16)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=64,
                      enable_chunked_prefill=True)
    reqs = [Request(0, 0.0, 10, 20), Request(1, 0.5, 200, 2)]
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0)
    chunks = [n for _, out in trace for st, n in out.prefills if st.req.request_id == 1]
    assert chunks == [63, 63, 63, 11]
