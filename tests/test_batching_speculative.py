"""Speculative decoding: the acceptance model, implicit progress, costs and accounting."""
import numpy as np
import pytest

from llmsim.api import simulate
from llmsim.cost import BatchAggregates, CostModel
from llmsim.hardware.catalog import load_hardware
from llmsim.memory import PagedKVCacheManager
from llmsim.metrics.recorder import ItlRecorder
from llmsim.models.catalog import load_model
from llmsim.scheduling import (SarathiScheduler, VllmScheduler, expected_tokens_per_step,
                               speculative_class)
from llmsim.workload.request import Request
from test_batching_memory import run_checked


def test_expected_tokens_per_verify_step():
    assert expected_tokens_per_step(4, 0.0) == 1.0
    assert expected_tokens_per_step(4, 1.0) == 5.0
    assert expected_tokens_per_step(4, 0.8) == pytest.approx((1 - 0.8 ** 5) / 0.2)
    assert expected_tokens_per_step(1, 0.5) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        expected_tokens_per_step(0, 0.5)


def spec_sched(k, alpha, cls=SarathiScheduler, num_blocks=1000, bs=4, **kw):
    kv = PagedKVCacheManager(num_blocks=num_blocks, block_size=bs)
    return speculative_class(cls)(kv, num_speculative_tokens=k, acceptance_rate=alpha,
                                  max_num_seqs=8, max_num_batched_tokens=256, **kw)


@pytest.mark.parametrize("k,alpha,steps,zero_gaps", [(1, 0.5, 6, 3), (3, 1.0, 3, 6),
                                                     (4, 0.0, 9, 0)])
def test_finish_after_ceil_of_remaining_over_expected(k, alpha, steps, zero_gaps):
    itl = ItlRecorder()
    s = spec_sched(k, alpha, itl=itl)
    r = Request(0, 0.0, 8, 10)
    _, trace = run_checked(s, [r], step_time=lambda out: 1.0)
    # one prefill step (first token), then ceil(9 / E) verify steps
    assert r.status == "finished" and r.num_output_tokens == 10
    assert r.first_token_s == 1.0 and r.finish_s == 1.0 + steps
    gaps, w = itl.arrays()
    assert w.sum() == 9
    assert w[gaps == 0.0].sum() == zero_gaps and w[gaps == 1.0].sum() == steps
    assert s.tokens_out == 10
    assert s.kv.num_free_blocks == s.kv.num_blocks


def test_verify_step_aggregates_are_chunks_of_k_plus_one():
    s = spec_sched(3, 0.7)
    reqs = [Request(0, 0.0, 8, 50), Request(1, 0.0, 12, 50)]
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0)
    E = expected_tokens_per_step(3, 0.7)
    t, out = trace[2]         # second verify step: both decode, one step done
    a = out.agg
    C = 8 + 12 + round(2 * E * 1)
    assert (a.decode_seqs, a.prefill_seqs, a.prefill_tokens) == (0, 2, 8)
    assert (a.prefill_ctx_sum, a.prefill_nc_sum, a.prefill_n2_sum, a.num_sampled) == \
        (C, 4 * C, 2 * 16, 8)
    assert out.num_tokens == 8


def test_draft_cost_and_verify_floor_in_extra_time():
    hw = load_hardware("h100-sxm")
    target = CostModel(load_model("llama-3.1-8b"), hw)
    draft = CostModel(load_model("phi-2"), hw)
    kv = PagedKVCacheManager(num_blocks=1000, block_size=16)
    k = 4
    s = speculative_class(VllmScheduler)(kv, num_speculative_tokens=k, acceptance_rate=0.6,
                                         draft_cost=draft, target_cost=target,
                                         max_num_seqs=8, max_num_batched_tokens=4096)
    reqs = [Request(i, 0.0, 100 * (i + 1), 40) for i in range(3)]
    s.add_request(reqs[0], 0.0)
    s.add_request(reqs[1], 0.0)
    s.add_request(reqs[2], 0.0)
    out = s.schedule(0.0)                     # prefill-only step: the draft prefills too
    assert out.extra_s == pytest.approx(draft.step_time_s(out.agg))
    s.update_from_output(out, out.extra_s + target.step_time_s(out.agg))
    out = s.schedule(1.0)                     # verify step of 3 decoders
    C = 100 + 200 + 300
    assert out.num_decodes == 3
    want = draft.step_time_s(BatchAggregates(0, 0, 0, 0, 0, 3, C, 3))
    want += sum(draft.step_time_s(BatchAggregates(0, 0, 0, 0, 0, 3, C + 3 * i, 3))
                for i in range(1, k))
    plain = target.step_time_s(BatchAggregates(0, 0, 0, 0, 0, 3, C, 3))
    want += max(0.0, plain - target.step_time_s(out.agg))
    assert out.extra_s == pytest.approx(want, rel=1e-12)
    assert out.extra_s + target.step_time_s(out.agg) >= plain


def test_kv_accounting_under_pressure_with_lookahead_slots():
    from llmsim.memory import HostKVTier, PrefixCachingKVCacheManager
    rng = np.random.default_rng(4)
    swapped = 0
    for trial in range(40):
        cls = (VllmScheduler, SarathiScheduler)[trial % 2]
        nb = int(rng.integers(12, 40))
        swap = trial % 4 >= 2
        host = HostKVTier(int(rng.integers(0, 30)), 4, 1e-3) if swap else None
        if trial % 3 == 0:
            kv = PrefixCachingKVCacheManager(nb, 4, host=host, offload=swap)
        else:
            kv = PagedKVCacheManager(nb, 4)
            kv.host = host
        s = speculative_class(cls)(kv, num_speculative_tokens=int(rng.integers(1, 6)),
                                   acceptance_rate=float(rng.uniform(0, 1)), max_num_seqs=8,
                                   max_num_batched_tokens=64,
                                   preemption_mode="swap" if swap else "recompute")
        reqs = [Request(i, float(rng.uniform(0, 5)), int(rng.integers(1, 40)),
                        int(rng.integers(1, 40)), hash_ids=[i % 3, 7, i], hash_block_tokens=8)
                for i in range(25)]
        reqs.sort(key=lambda r: r.arrival_s)
        run_checked(s, reqs)
        swapped += s.num_swapped_in
        done = [r for r in reqs if r.status == "finished"]
        assert all(r.num_output_tokens == r.max_tokens for r in done)
        assert all(r.status in ("finished", "rejected") for r in reqs)
        assert s.tokens_out == sum(r.num_output_tokens for r in reqs)
        assert s.kv.num_free_blocks == s.kv.num_blocks
    assert swapped > 0


def scenario(spec=None, policy="vllm", n=150):
    sched = {"policy": policy, "max_num_seqs": 64}
    if spec:
        sched["speculative"] = spec
    return {"name": "spec", "seed": 3, "model": "llama-3.1-8b",
            "cluster": {"pools": [{"name": "p", "hardware": "h100-sxm", "replicas": 1,
                                   "scheduler": sched}]},
            "workload": {"num_requests": n,
                         "arrival": {"process": "poisson", "rate_per_s": 6.0},
                         "prompt_tokens": {"dist": "lognormal", "mean": 800, "sigma": 0.8,
                                           "max": 6000},
                         "output_tokens": {"dist": "lognormal", "mean": 200, "sigma": 0.8,
                                           "max": 1500}},
            "simulation": {"check_invariants": True}}


@pytest.mark.parametrize("method", ["ngram", "draft"])
def test_acceptance_zero_is_never_faster(method):
    base = simulate(scenario()).summary
    spec = {"method": method, "num_speculative_tokens": 3, "acceptance_rate": 0.0}
    if method == "draft":
        spec["draft_model"] = "phi-2"
    s = simulate(scenario(spec)).summary
    assert s["requests"]["finished"] == base["requests"]["finished"] == 150
    for m in ("tpot_s", "e2e_s"):
        assert s[m]["mean"] >= base[m]["mean"]
    assert s["pools"]["p"]["busy_replica_s"] >= base["pools"]["p"]["busy_replica_s"]


def test_good_acceptance_speeds_decoding_up():
    base = simulate(scenario()).summary
    s = simulate(scenario({"method": "ngram", "num_speculative_tokens": 4,
                           "acceptance_rate": 0.8})).summary
    # E = 3.36 tokens per verify step of about a decode step's cost
    assert s["tpot_s"]["mean"] < 0.5 * base["tpot_s"]["mean"]


def test_draft_model_takes_kv_capacity():
    from llmsim.cost.memory import memory_plan
    from llmsim.scenario import load_scenario
    from llmsim.scheduling.factory import speculative_setup
    scn = load_scenario(scenario({"method": "draft", "draft_model": "phi-2",
                                  "num_speculative_tokens": 3, "acceptance_rate": 0.7}))
    pool = scn.cluster.pools[0]
    model = scn.resolved_model()
    plan = memory_plan(model, pool.resolved_hardware(), max_num_batched_tokens=8192)
    kw, blocks = speculative_setup(pool, model, plan)
    d = kw["draft_cost"]
    want = int((plan.free_kv_bytes_per_gpu - d.weights_bytes_per_gpu)
               // ((plan.kv_bytes_per_token_per_gpu + d.kv_bytes_per_token) * 16))
    assert blocks == want < plan.num_gpu_blocks
