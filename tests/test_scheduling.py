"""Schedulers driven step by step with a fake cost model (1 s per step)."""
import numpy as np
import pytest

from llmsim.memory import ContiguousKVCacheManager, PagedKVCacheManager
from llmsim.scheduling import OrcaScheduler, SarathiScheduler, StaticScheduler, VllmScheduler
from sched_driver import drive, make_requests, new_itl


def test_static_never_admits_mid_batch():
    kv = ContiguousKVCacheManager(num_blocks=1000, block_size=1)
    s = StaticScheduler(kv, max_num_seqs=2, max_num_batched_tokens=1000)
    reqs = make_requests([(0, 10, 5), (0, 10, 2), (0.5, 10, 1)])
    trace = []
    drive(s, reqs, trace=trace)
    # step 0: prefill of 0 and 1 together; request 2 arrives at 0.5 but must wait until the
    # longest of the batch (request 0: 5 tokens → 1 prefill + 4 decode steps) is done
    assert trace[0][2] == [0, 1]
    admitted_at = [t for t, out, pre, nd in trace if 2 in pre]
    assert admitted_at == [5.0]
    # padding: request 1 finished after 2 tokens but the batch still decodes 2 sequences
    assert [nd for _, _, _, nd in trace[1:5]] == [2, 2, 2, 2]
    assert reqs[1].finish_s == 2.0 and reqs[0].finish_s == 5.0
    assert all(r.status == "finished" and r.num_output_tokens == r.max_tokens for r in reqs)
    assert kv.num_free_blocks == kv.num_blocks


def test_orca_admits_at_next_step():
    kv = ContiguousKVCacheManager(num_blocks=1000, block_size=1)
    s = OrcaScheduler(kv, max_num_seqs=8, max_num_batched_tokens=1000)
    reqs = make_requests([(0, 10, 6), (0.5, 10, 3)])
    trace = []
    drive(s, reqs, trace=trace)
    # request 1 arrives during step [0,1) and joins the mixed step starting at 1.0
    t_join = [t for t, out, pre, nd in trace if 1 in pre]
    assert t_join == [1.0]
    step = [x for x in trace if x[0] == 1.0][0]
    assert step[3] == 1  # request 0 decodes in the same step
    assert reqs[1].first_token_s == 2.0
    assert reqs[1].finish_s == 4.0 and reqs[0].finish_s == 6.0
    assert kv.num_free_blocks == kv.num_blocks


def test_contiguous_reserves_prompt_plus_output():
    kv = ContiguousKVCacheManager(num_blocks=30, block_size=1)
    s = OrcaScheduler(kv, max_num_seqs=8, max_num_batched_tokens=1000)
    # each needs 10 + 10 = 20 tokens: only one fits at a time
    reqs = make_requests([(0, 10, 10), (0, 10, 10)])
    trace = []
    drive(s, reqs, trace=trace)
    assert reqs[1].first_scheduled_s == reqs[0].finish_s == 10.0


def test_vllm_prefill_first_then_decode():
    kv = PagedKVCacheManager(num_blocks=100, block_size=4)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=100)
    reqs = make_requests([(0, 8, 4), (1.5, 8, 2)])
    trace = []
    drive(s, reqs, trace=trace)
    kinds = [("P" if pre else "D") for _, _, pre, _ in trace]
    # P(r0) D D P(r1) D D  (r1 arrives at 1.5, its prefill pre-empts the decode step at 2.0)
    assert kinds == ["P", "D", "P", "D", "D"]
    assert reqs[0].finish_s == 5.0
    assert reqs[1].first_token_s == 3.0 and reqs[1].finish_s == 4.0


def test_vllm_preempts_when_blocks_run_out():
    # 2 requests of 8-token prompts and 24 outputs need 8 blocks of 4 each; only 10 blocks
    kv = PagedKVCacheManager(num_blocks=10, block_size=4)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=100)
    reqs = make_requests([(0, 8, 24), (0, 8, 24)])
    drive(s, reqs)
    assert all(r.status == "finished" for r in reqs)
    assert reqs[1].num_preemptions > 0 and reqs[0].num_preemptions == 0
    assert reqs[1].finish_s > reqs[0].finish_s
    assert all(r.num_output_tokens == 24 for r in reqs)
    assert s.num_preemptions == sum(r.num_preemptions for r in reqs)
    assert kv.num_free_blocks == kv.num_blocks


def test_request_too_large_is_rejected_not_stuck():
    kv = PagedKVCacheManager(num_blocks=4, block_size=4)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=100)
    reqs = make_requests([(0, 10, 10), (0, 4, 4)])
    drive(s, reqs)
    assert reqs[0].status == "rejected" and "KV" in reqs[0].reason
    assert reqs[1].status == "finished"


def test_ttft_tpot_itl_two_requests():
    itl = new_itl()
    kv = PagedKVCacheManager(num_blocks=100, block_size=4)
    s = VllmScheduler(kv, max_num_seqs=8, max_num_batched_tokens=100, itl=itl)
    reqs = make_requests([(0, 8, 3), (0.5, 8, 2)])
    drive(s, reqs)
    # steps: [0,1) P r0 → r0 token 1 @1; [1,2) P r1 (prefill first) → r1 token 1 @2;
    # [2,3) D r0,r1 → r0 token 2, r1 token 2 (r1 done) @3; [3,4) D r0 → token 3 @4
    r0, r1 = reqs
    assert (r0.first_token_s, r0.finish_s) == (1.0, 4.0)
    assert (r1.first_token_s, r1.finish_s) == (2.0, 3.0)
    ttft = [r.first_token_s - r.arrival_s for r in reqs]
    assert ttft == [1.0, 1.5]
    tpot0 = (r0.finish_s - r0.first_token_s) / (3 - 1)
    assert tpot0 == 1.5
    gaps, w = itl.arrays()
    sample = sorted(np.repeat(gaps, w).tolist())
    # r0 gaps: 1→3 (2 s), 3→4 (1 s); r1 gap: 2→3 (1 s)
    assert sample == [1.0, 1.0, 2.0]


def test_sarathi_decodes_first_and_chunks():
    kv = PagedKVCacheManager(num_blocks=1000, block_size=16)
    s = SarathiScheduler(kv, max_num_seqs=8, max_num_batched_tokens=64)
    reqs = make_requests([(0, 10, 20), (0.5, 200, 2)])
    trace = []
    drive(s, reqs, trace=trace)
    # after r1 arrives, each step has r0's decode plus a chunk of at most 63 tokens of r1
    chunks = [sum(n for st, n in out.prefills if st.req.request_id == 1)
              for _, out, _, _ in trace]
    assert [c for c in chunks if c] == [63, 63, 63, 11]
    assert all(out.num_tokens <= 64 for _, out, _, _ in trace)
    assert reqs[1].num_computed_tokens >= 200
    assert kv.num_free_blocks == kv.num_blocks


@pytest.mark.parametrize("cls", [VllmScheduler, SarathiScheduler, OrcaScheduler])
def test_random_workloads_conserve_requests_and_blocks(cls):
    rng = np.random.default_rng(7)
    for trial in range(5):
        n = 40
        arr = np.sort(rng.uniform(0, 20, n))
        specs = [(float(a), int(rng.integers(1, 60)), int(rng.integers(1, 40))) for a in arr]
        kv = PagedKVCacheManager(num_blocks=40, block_size=4) if cls is not OrcaScheduler \
            else ContiguousKVCacheManager(num_blocks=160, block_size=1)
        s = cls(kv, max_num_seqs=6, max_num_batched_tokens=64)
        reqs = make_requests(specs)
        drive(s, reqs, step_time=lambda out: 0.1 + 0.01 * out.num_tokens)
        for r in reqs:
            assert r.status in ("finished", "rejected")
            if r.status == "finished":
                assert r.num_output_tokens == r.max_tokens
                assert r.first_token_s <= r.finish_s
        assert kv.num_free_blocks == kv.num_blocks
        assert not s.running and not s.waiting
