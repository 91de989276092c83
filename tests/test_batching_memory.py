"""KV memory for issue 6: prefix-cache block keys, ref counts and LRU, the host tier, and block
accounting invariants of every paged scheduler under random workloads (hypothesis)."""
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim.memory import HostKVTier, PagedKVCacheManager, PrefixCachingKVCacheManager
from llmsim.memory import prefix_block_keys
from llmsim.scheduling import SarathiScheduler, VllmScheduler, VllmV1Scheduler
from llmsim.scheduling.base import DECODE
from llmsim.workload.request import Request


def req(rid, prompt, out, ids=None, H=0, t=0.0, prio=0):
    return Request(rid, t, prompt, out, hash_ids=ids, hash_block_tokens=H, priority=prio)


# ------------------------------------------------------------------ block keys -----------
def test_keys_map_512_token_ids_to_16_token_blocks():
    # 1,100 tokens with Mooncake-style 512-token ids [7, 8, 9]: 68 full 16-token blocks
    a = prefix_block_keys([7, 8, 9], 512, 1100, 16)
    assert len(a) == 1100 // 16 == 68
    b = prefix_block_keys([7, 8, 5], 512, 1100, 16)
    # blocks 0..63 lie in the first two ids (tokens < 1024): same keys; block 64 on differ
    assert a[:64] == b[:64] and all(x != y for x, y in zip(a[64:], b[64:]))
    c = prefix_block_keys([7, 4, 9], 512, 1100, 16)
    assert a[:32] == c[:32] and a[32] != c[32]
    # ids cover the prompt only: a 600-token prompt with one id has 32 keyed blocks
    assert len(prefix_block_keys([7], 512, 600, 16)) == 32
    # blocks larger than an id: block j is keyed by the id holding its last token
    d = prefix_block_keys([1, 2, 3, 4], 16, 64, 32)
    e = prefix_block_keys([1, 2, 3, 9], 16, 64, 32)
    assert len(d) == 2 and d[0] == e[0] and d[1] != e[1]
    assert prefix_block_keys(None, 0, 100, 16) == []


# ------------------------------------------------------------------ prefix manager ---------
def test_hits_refcounts_and_lru_eviction():
    kv = PrefixCachingKVCacheManager(num_blocks=10, block_size=4)
    a = req(0, 16, 4, ids=[1, 2, 3, 4], H=4)
    assert kv.get_computed_blocks(a) == 0
    assert kv.allocate_slots(a, 0, 16)               # 4 blocks, all registered
    assert kv.num_free_blocks == 6 and kv.num_cached_blocks == 4
    b = req(1, 14, 4, ids=[1, 2, 5, 6], H=4)          # shares the first two blocks
    assert kv.get_computed_blocks(b) == 8
    assert kv.can_allocate(b, 8, 14)
    assert kv.allocate_slots(b, 8, 14)                # 2 new blocks (3rd full, 4th partial)
    assert kv.num_free_blocks == 4
    kv.check()
    kv.free(a, 16)            # a's blocks 2,3 unreferenced → cached & free; 0,1 still held by b
    assert kv.num_free_blocks == 6
    kv.free(b, 14)
    assert kv.num_free_blocks == 10 and kv.num_cached_blocks == 5
    kv.check()
    # a new request of the first family hits a's blocks (evictable → referenced again)
    c = req(2, 17, 1, ids=[1, 2, 3, 4, 9], H=4)
    assert kv.get_computed_blocks(c) == 16
    assert kv.allocate_slots(c, 16, 17)
    assert kv.num_free_blocks == 10 - 4 - 1
    kv.free(c, 17)
    # fill the cache with unrelated blocks: the least recently released go first
    d = req(3, 40, 1, ids=list(range(100, 110)), H=4)
    assert kv.get_computed_blocks(d) == 0
    assert kv.allocate_slots(d, 0, 40)                # 10 blocks: every cached block evicted
    kv.check()
    assert kv.num_free_blocks == 0 and kv.evicted_blocks == 5
    kv.free(d, 40)
    assert kv.num_free_blocks == 10
    assert kv.get_computed_blocks(c) == 0


def test_hit_never_reaches_the_last_token():
    kv = PrefixCachingKVCacheManager(num_blocks=10, block_size=4)
    a = req(0, 16, 1, ids=[1, 2, 3, 4], H=4)
    kv.allocate_slots(a, 0, 16)
    same = req(1, 16, 1, ids=[1, 2, 3, 4], H=4)
    assert kv.get_computed_blocks(same) == 12         # 16 - 1 → 3 full blocks
    assert kv.get_computed_blocks(req(2, 13, 1, ids=[1, 2, 3, 4], H=4)) == 12


def test_eviction_order_tail_blocks_first():
    kv = PrefixCachingKVCacheManager(num_blocks=4, block_size=2)
    a = req(0, 8, 1, ids=[1, 2, 3, 4], H=2)
    kv.allocate_slots(a, 0, 8)
    kv.free(a, 8)
    b = req(1, 4, 1, ids=[9, 9], H=2)
    kv.allocate_slots(b, 0, 4)                        # evicts 2 of a's 4 cached blocks
    kv.check()
    # the request's tail was released first, so its head survives
    assert kv.get_computed_blocks(req(2, 8, 1, ids=[1, 2, 3, 4], H=2)) == 4


# ------------------------------------------------------------------ host tier -----------
def test_host_tier_transfer_time_and_capacity():
    h = HostKVTier(num_blocks=10, block_size=16, block_transfer_s=2e-5, latency_s=1e-5)
    assert h.transfer_time_s(0) == 0.0
    assert h.transfer_time_s(4) == pytest.approx(1e-5 + 4 * 2e-5)
    r1, r2 = object(), object()
    assert h.offload("k1") and h.offload("k2")
    assert h.can_swap_out(10) and not h.can_swap_out(11)
    assert h.swap_out(r1, 9) == pytest.approx(1e-5 + 9 * 2e-5)
    assert not h.has("k1") and h.has("k2")            # LRU prefix block made room
    assert not h.can_swap_out(2)
    assert not h.offload("k3") or h.num_free_blocks == 0
    h.check()
    assert h.swap_in(r1) == pytest.approx(1e-5 + 9 * 2e-5)
    assert h.swap_out(r2, 1) > 0
    h.check()
    assert h.blocks_swapped_out == 10 and h.blocks_swapped_in == 9


def test_host_tier_from_hardware_card():
    from llmsim.hardware.catalog import load_hardware
    from llmsim.memory import host_tier_for
    hw = load_hardware("h100-sxm")
    # 16-token blocks of Llama-3.1-8B bf16 at tp=1: 16 · 131,072 B = 2 MiB per GPU
    blk = 16 * 131072.0
    t = host_tier_for(4e9, blk, 1, hw.host_link, 16)
    assert t.num_blocks == int(4e9 // blk)
    assert t.block_transfer_s == pytest.approx(blk / hw.host_link.bandwidth_bytes_per_s)
    # two GPUs (tp=2) hold half a block each: same per-GPU bytes here, twice the host bytes
    t2 = host_tier_for(4e9, blk / 2, 2, hw.host_link, 16, num_engines=1)
    assert t2.num_blocks == t.num_blocks
    assert host_tier_for(0.0, blk, 1, hw.host_link, 16) is None


# ------------------------------------------------------------------ scheduler accounting ----
def expected_used_blocks(s) -> int:
    """Blocks the running requests must hold, from scheduler state alone."""
    kv = s.kv
    shared_held = 0
    total = 0
    for r, stt in s.running.items():
        if stt.phase == DECODE and getattr(s, "spec_k", None) is not None:
            n = stt.nblocks           # context + k + 1 verify slots, tracked per request
        elif stt.phase == DECODE:
            n = kv.blocks_for(stt.c0 + (s.D - stt.d0) + s._decode_reserved)
        else:
            n = kv.blocks_for(r.num_computed_tokens + stt.scheduled)
        if isinstance(kv, PrefixCachingKVCacheManager):
            n -= kv._shared.get(r, 0)
        total += n
    if isinstance(kv, PrefixCachingKVCacheManager):
        shared_held = sum(1 for v in kv._ref.values() if v > 0)
    return total + shared_held


def run_checked(s, reqs, step_time=lambda out: 0.05 + 1e-4 * out.num_tokens + out.extra_s,
                max_steps=200000):
    """Drive ``s``; after every schedule and every update check the KV invariants."""
    pending = sorted(reqs, key=lambda r: r.arrival_s)
    now = 0.0
    steps = 0
    trace = []
    while pending or s.has_work():
        while pending and pending[0].arrival_s <= now:
            s.add_request(pending.pop(0), now)
        if not s.has_work():
            if not pending:
                break
            now = pending[0].arrival_s
            continue
        out = s.schedule(now)
        s.kv.check()
        assert s.kv.num_used_blocks == expected_used_blocks(s)
        assert not out.is_empty, "stalled"
        trace.append((now, out))
        now += step_time(out)
        s.update_from_output(out, now)
        s.kv.check()
        assert 0 <= s.kv.num_free_blocks <= s.kv.num_blocks
        assert s.kv.num_used_blocks == expected_used_blocks(s)
        steps += 1
        assert steps < max_steps
    return now, trace


def family_requests(draw_specs, H):
    """(arrival, family, shared ids, prompt, output) → requests sharing per-family prefixes."""
    out = []
    for i, (t, fam, shared, prompt, output, prio) in enumerate(draw_specs):
        n_ids = math.ceil(prompt / H)
        ids = [fam * 1000 + j for j in range(min(shared, n_ids))]
        ids += [10 ** 6 + i * 1000 + j for j in range(n_ids - len(ids))]
        out.append(req(i, prompt, output, ids=ids, H=H, t=t, prio=prio))
    return out


spec_strategy = st.lists(
    st.tuples(st.floats(0, 10), st.integers(0, 2), st.integers(0, 6), st.integers(1, 50),
              st.integers(1, 30), st.integers(0, 2)),
    min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=spec_strategy,
       cls=st.sampled_from([VllmScheduler, VllmV1Scheduler, SarathiScheduler]),
       prefix=st.booleans(), swap=st.booleans(), chunked=st.booleans(),
       policy=st.sampled_from(["fcfs", "priority", "sjf"]),
       num_blocks=st.integers(8, 40), host_blocks=st.integers(0, 30))
def test_block_accounting_random_workloads(specs, cls, prefix, swap, chunked, policy,
                                           num_blocks, host_blocks):
    bs = 4
    host = HostKVTier(host_blocks, bs, 1e-3, 1e-4) if swap else None
    if prefix:
        kv = PrefixCachingKVCacheManager(num_blocks, bs, watermark=0.05, host=host,
                                         offload=swap and host_blocks % 2 == 0)
    else:
        kv = PagedKVCacheManager(num_blocks, bs, watermark=0.05)
        kv.host = host
    kw = dict(max_num_seqs=6, max_num_batched_tokens=24, scheduling_policy=policy,
              preemption_mode="swap" if swap else "recompute")
    if cls is VllmScheduler or cls is VllmV1Scheduler:
        kw["enable_chunked_prefill"] = chunked or cls is VllmV1Scheduler and chunked
    s = cls(kv, **kw)
    reqs = family_requests(specs, H=8)
    run_checked(s, reqs)
    for r in reqs:
        assert r.status in ("finished", "rejected")
        if r.status == "finished":
            assert r.num_output_tokens == r.max_tokens
            assert 0 <= r.num_cached_tokens < r.num_prompt_tokens
            assert r.num_cached_tokens % bs == 0
            assert r.first_token_s <= r.finish_s
    assert s.num_preemptions == sum(r.num_preemptions for r in reqs)
    assert kv.num_free_blocks == kv.num_blocks          # everything back (cached = free)
    assert not s.running and not s.waiting and not s.swapped
    if prefix:
        assert all(v == 0 for v in kv._ref.values()) and not kv._tables
        assert s.prefix_hit_tokens == sum(r.num_cached_tokens for r in reqs)
    if host is not None:
        assert not host.swapped
        host.check()


def test_block_accounting_seeded_sweep():
    """A seeded sweep that reaches swap fallbacks and host-tier prefix hits (rare cases for
    hypothesis' small examples); every step is checked by ``run_checked``."""
    import numpy as np
    rng = np.random.default_rng(0)
    totals = dict(preempted=0, swapped=0, fallbacks=0, hits=0, host_hits=0)
    for trial in range(120):
        specs = [(float(rng.uniform(0, 10)), int(rng.integers(0, 3)), int(rng.integers(0, 7)),
                  int(rng.integers(1, 51)), int(rng.integers(1, 31)), int(rng.integers(0, 3)))
                 for _ in range(int(rng.integers(1, 31)))]
        cls = (VllmScheduler, VllmV1Scheduler, SarathiScheduler)[trial % 3]
        prefix, swap = bool(rng.integers(2)), bool(rng.integers(2))
        nb, hb = int(rng.integers(8, 41)), int(rng.integers(0, 31))
        host = HostKVTier(hb, 4, 1e-3, 1e-4) if swap else None
        if prefix:
            kv = PrefixCachingKVCacheManager(nb, 4, watermark=0.05, host=host,
                                             offload=swap and hb % 2 == 0)
        else:
            kv = PagedKVCacheManager(nb, 4, watermark=0.05)
            kv.host = host
        s = cls(kv, max_num_seqs=6, max_num_batched_tokens=24,
                scheduling_policy=("fcfs", "priority", "sjf")[int(rng.integers(3))],
                preemption_mode="swap" if swap else "recompute")
        reqs = family_requests(specs, H=8)
        run_checked(s, reqs)
        assert kv.num_free_blocks == kv.num_blocks
        assert all(r.status in ("finished", "rejected") for r in reqs)
        assert all(r.num_output_tokens == r.max_tokens for r in reqs if r.status == "finished")
        totals["preempted"] += s.num_preemptions
        totals["swapped"] += s.num_swapped_out
        totals["fallbacks"] += s.num_swap_fallbacks
        totals["hits"] += s.prefix_hit_tokens
        if prefix:
            totals["host_hits"] += kv.host_hit_blocks
        if host is not None:
            assert not host.swapped
    assert all(v > 0 for v in totals.values()), totals
