"""Schedulers of issue 6 driven by hand: vLLM v1 token budget, swap vs recompute preemption,
prefix-cache hits, priority and shortest-job-first ordering, the output-length predictor."""
import numpy as np
import pytest

from llmsim.memory import HostKVTier, PagedKVCacheManager, PrefixCachingKVCacheManager
from llmsim.scheduling import (OutputLengthPredictor, SarathiScheduler, VllmScheduler,
                               VllmV1Scheduler, sjf_length_key)
from llmsim.scheduling.predictor import standard_normal
from llmsim.workload.request import Request
from test_batching_memory import run_checked


def reqs_from(specs):
    """specs: (arrival_s, prompt, output[, priority])."""
    return [Request(i, s[0], s[1], s[2], priority=s[3] if len(s) > 3 else 0)
            for i, s in enumerate(specs)]


def prefill_tokens(trace, rid):
    return sum(n for _, out in trace for st, n in out.prefills if st.req.request_id == rid)


# ------------------------------------------------------------------ vllm_v1 --------------
def test_vllm_v1_mixes_whole_prompts_with_decodes_when_not_chunked():
    kv = PagedKVCacheManager(num_blocks=100, block_size=4)
    s = VllmV1Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=100,
                        enable_chunked_prefill=False)
    reqs = reqs_from([(0, 8, 4), (1.5, 30, 2), (1.5, 80, 2)])
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0)
    # step at t=2: r0 decodes (1 token) next to r1's whole prompt; r2 (80) no longer fits
    t2 = [out for t, out in trace if t == 2.0][0]
    assert t2.num_decodes == 1 and [(st.req.request_id, n) for st, n in t2.prefills] == [(1, 30)]
    t3 = [out for t, out in trace if t == 3.0][0]
    assert [(st.req.request_id, n) for st, n in t3.prefills] == [(2, 80)]
    assert all(r.status == "finished" for r in reqs)


def test_vllm_v1_chunks_by_default_with_threshold():
    kv = PagedKVCacheManager(num_blocks=1000, block_size=16)
    s = VllmV1Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64,
                        long_prefill_token_threshold=40)
    reqs = reqs_from([(0, 100, 2)])
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0)
    assert [n for _, out in trace for _, n in out.prefills] == [40, 40, 20]


# ------------------------------------------------------------------ preemption -----------
@pytest.mark.parametrize("cls", [VllmScheduler, SarathiScheduler, VllmV1Scheduler])
def test_recompute_preemption_recomputes_and_finishes(cls):
    kv = PagedKVCacheManager(num_blocks=10, block_size=4)
    s = cls(kv, max_num_seqs=8, max_num_batched_tokens=64)
    reqs = reqs_from([(0, 8, 24), (0, 8, 24)])
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0)
    r0, r1 = reqs
    assert r1.num_preemptions > 0 and r0.num_preemptions == 0
    assert all(r.status == "finished" and r.num_output_tokens == 24 for r in reqs)
    # r1 recomputed its prompt and the tokens generated before each preemption
    assert prefill_tokens(trace, 1) > 8 and prefill_tokens(trace, 0) == 8
    assert kv.num_free_blocks == kv.num_blocks


@pytest.mark.parametrize("cls", [VllmScheduler, SarathiScheduler, VllmV1Scheduler])
def test_swap_preemption_resumes_without_recompute(cls):
    kv = PagedKVCacheManager(num_blocks=10, block_size=4)
    kv.host = host = HostKVTier(num_blocks=20, block_size=4, block_transfer_s=0.01,
                                latency_s=0.001)
    s = cls(kv, max_num_seqs=8, max_num_batched_tokens=64, preemption_mode="swap")
    reqs = reqs_from([(0, 8, 24), (0, 8, 24)])
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0 + out.extra_s)
    r0, r1 = reqs
    assert r1.num_preemptions > 0 and s.num_swapped_out == s.num_swapped_in == r1.num_preemptions
    assert s.num_swap_fallbacks == 0
    assert all(r.status == "finished" and r.num_output_tokens == 24 for r in reqs)
    # no recompute: each prompt is prefilled exactly once
    assert prefill_tokens(trace, 0) == 8 and prefill_tokens(trace, 1) == 8
    # the swap time reached the steps: out + in per preemption, latency + blocks · 10 ms
    blocks = host.blocks_swapped_out
    assert blocks == host.blocks_swapped_in > 0
    want = 2 * (r1.num_preemptions * 0.001 + blocks * 0.01)
    assert sum(out.extra_s for _, out in trace) == pytest.approx(want)
    assert s.swap_s == pytest.approx(want)
    assert kv.num_free_blocks == kv.num_blocks and host.num_free_blocks == host.num_blocks


def test_swap_falls_back_to_recompute_when_host_is_full():
    kv = PagedKVCacheManager(num_blocks=10, block_size=4)
    kv.host = HostKVTier(num_blocks=1, block_size=4, block_transfer_s=0.01)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=64, preemption_mode="swap")
    reqs = reqs_from([(0, 8, 24), (0, 8, 24)])
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0 + out.extra_s)
    assert s.num_swap_fallbacks > 0 and s.num_swapped_out == 0
    assert reqs[1].num_preemptions > 0 and prefill_tokens(trace, 1) > 8
    assert all(r.status == "finished" and r.num_output_tokens == 24 for r in reqs)


def test_swapped_decoder_itl_gap_spans_the_swap():
    from llmsim.metrics.recorder import ItlRecorder
    itl = ItlRecorder()
    kv = PagedKVCacheManager(num_blocks=10, block_size=4)
    kv.host = HostKVTier(num_blocks=20, block_size=4, block_transfer_s=0.0)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=64, preemption_mode="swap",
                      itl=itl)
    reqs = reqs_from([(0, 8, 24), (0, 8, 24)])
    run_checked(s, reqs, step_time=lambda out: 1.0)
    gaps, w = itl.arrays()
    # one gap per token after the first, and the gaps add up to each request's decode time
    assert w.sum() == sum(r.num_output_tokens - 1 for r in reqs)
    assert (gaps * w).sum() == pytest.approx(sum(r.finish_s - r.first_token_s for r in reqs))


# ------------------------------------------------------------------ prefix caching -------
def test_prefix_hits_reduce_prefill_and_are_reported():
    kv = PrefixCachingKVCacheManager(num_blocks=100, block_size=4)
    s = VllmV1Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64)
    a = Request(0, 0.0, 30, 2, hash_ids=[1, 2, 3, 4], hash_block_tokens=8)
    b = Request(1, 5.0, 30, 2, hash_ids=[1, 2, 3, 9], hash_block_tokens=8)
    c = Request(2, 10.0, 30, 2, hash_ids=[1, 2, 3, 4], hash_block_tokens=8)
    _, trace = run_checked(s, [a, b, c], step_time=lambda out: 1.0)
    # b shares 24 tokens (3 ids of 8 tokens) with a; c shares 28 = 7 full blocks (its last
    # block is partial) with a
    assert (a.num_cached_tokens, b.num_cached_tokens, c.num_cached_tokens) == (0, 24, 28)
    assert prefill_tokens(trace, 1) == 30 - 24 and prefill_tokens(trace, 2) == 30 - 28
    assert s.prefix_hit_tokens == 52 and s.prefix_query_tokens == 90
    # the hit is context of the chunk in the cost aggregates
    out_b = [out for _, out in trace for st, n in out.prefills if st.req is b][0]
    assert out_b.agg.prefill_ctx_sum == 24 and out_b.agg.prefill_nc_sum == 6 * 24


def test_prefix_hit_makes_recompute_preemption_cheap():
    kv = PrefixCachingKVCacheManager(num_blocks=10, block_size=4)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=64)
    reqs = [Request(i, 0.0, 8, 24, hash_ids=[10 * i, 10 * i + 1], hash_block_tokens=4)
            for i in range(2)]
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0)
    r1 = reqs[1]
    assert r1.num_preemptions > 0 and r1.num_cached_tokens == 0   # first admission only
    assert all(r.status == "finished" for r in reqs)


# ------------------------------------------------------------------ priority / sjf -------
def test_priority_orders_waiting_and_preempts_lowest_priority():
    kv = PagedKVCacheManager(num_blocks=100, block_size=4)
    s = VllmScheduler(kv, max_num_seqs=1, max_num_batched_tokens=100,
                      scheduling_policy="priority")
    reqs = reqs_from([(0, 8, 2, 5), (0.5, 8, 2, 3), (0.6, 8, 2, 1), (0.7, 8, 2, 3)])
    run_checked(s, reqs, step_time=lambda out: 1.0)
    order = [r.request_id for r in sorted(reqs, key=lambda r: r.first_scheduled_s)]
    assert order == [0, 2, 1, 3]
    # preemption victim: the running request with the largest priority value
    kv = PagedKVCacheManager(num_blocks=10, block_size=4)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=64,
                      scheduling_policy="priority")
    reqs = reqs_from([(0, 8, 24, 0), (0, 8, 24, 7), (0, 8, 24, 3)])
    run_checked(s, reqs, step_time=lambda out: 1.0)
    assert reqs[0].num_preemptions == 0 and reqs[1].num_preemptions > 0
    assert reqs[0].finish_s < reqs[2].finish_s < reqs[1].finish_s


def mixed_workload(seed=3, n=120):
    rng = np.random.default_rng(seed)
    arr = np.sort(rng.uniform(0, 20, n))
    long = rng.random(n) < 0.3
    prompts = np.where(long, rng.integers(600, 1000, n), rng.integers(20, 100, n))
    outs = np.where(long, rng.integers(100, 200, n), rng.integers(5, 40, n))
    return [(float(a), int(p), int(o)) for a, p, o in zip(arr, prompts, outs)]


def mean_latency(policy, specs, sjf_key="prompt_tokens", sigma=0.0):
    kv = PagedKVCacheManager(num_blocks=2000, block_size=16)
    key = sjf_length_key(sjf_key, OutputLengthPredictor(sigma, 1)) if policy == "sjf" else None
    s = VllmScheduler(kv, max_num_seqs=4, max_num_batched_tokens=2048,
                      scheduling_policy=policy, length_key=key)
    reqs = reqs_from(specs)
    run_checked(s, reqs, step_time=lambda out: 0.01 + 2e-4 * out.num_tokens)
    assert all(r.status == "finished" for r in reqs)
    return float(np.mean([r.finish_s - r.arrival_s for r in reqs]))


def test_sjf_beats_fcfs_on_mean_latency():
    specs = mixed_workload()
    fcfs = mean_latency("fcfs", specs)
    sjf = mean_latency("sjf", specs)
    oracle = mean_latency("sjf", specs, "total_tokens")
    noisy = mean_latency("sjf", specs, "total_tokens", sigma=1.0)
    assert sjf < 0.8 * fcfs
    assert oracle < fcfs and noisy < fcfs
    assert oracle <= noisy * 1.05


def test_output_length_predictor_is_seeded_and_unbiased_in_log():
    p = OutputLengthPredictor(0.5, seed=7)
    r = Request(12, 0.0, 10, 200)
    assert p(r) == p(Request(12, 5.0, 99, 200))        # depends on (seed, id) only
    assert OutputLengthPredictor(0.5, seed=8)(r) != p(r)
    assert OutputLengthPredictor(0.0, seed=7)(r) == 200.0
    z = np.array([standard_normal(7, i) for i in range(20000)])
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    logs = np.log([p(Request(i, 0.0, 1, 100)) / 100 for i in range(5000)])
    assert abs(np.median(logs)) < 0.03 and abs(logs.std() - 0.5) < 0.03
    assert standard_normal(1, "req-a") == standard_normal(1, "req-a")


@pytest.mark.parametrize("prefix", [False, True])
def test_static_with_paged_kv_reserves_the_batch_growth(prefix):
    from llmsim.scheduling import StaticScheduler
    kv = (PrefixCachingKVCacheManager if prefix else PagedKVCacheManager)(num_blocks=29,
                                                                         block_size=4)
    s = StaticScheduler(kv, max_num_seqs=4, max_num_batched_tokens=1000)
    reqs = [Request(i, 0.0, 10, out, hash_ids=[1, 2, 3] if prefix else None,
                    hash_block_tokens=4 if prefix else 0) for i, out in enumerate([2, 30, 4])]
    _, trace = run_checked(s, reqs, step_time=lambda out: 1.0)
    # every member grows to 10 + 30 tokens (10 blocks, padding included): r0 and r1 fit in 29
    # blocks, r2 would need 30 and waits for the next batch
    batch = [st.req.request_id for st, _ in trace[0][1].prefills]
    if prefix:   # r1 and r2 share r0's first two blocks: the room that frees lets r2 in
        assert batch == [0, 1, 2] and reqs[2].num_cached_tokens == 8
    else:
        assert batch == [0, 1] and reqs[2].first_scheduled_s == reqs[1].finish_s
    assert all(r.status == "finished" for r in reqs)
    assert kv.num_free_blocks == kv.num_blocks
