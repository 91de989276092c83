"""The roofline terms calibration added (all default to "no effect"): GEMM fixed cost,
per-family element-wise bandwidth, prefill context efficiency, attention fixed and per-sequence
costs, collective base latency, point-to-point bandwidth, and the host side (kernel issue that
can bound a step, first-token and per-decode overheads) — each against a hand calculation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmsim.cost import comm
from llmsim.cost.roofline import CostModel
from llmsim.cost.types import BatchAggregates, ParallelConfig
from llmsim.hardware.spec import Efficiency, HardwareSpec, LinkSpec
from llmsim.models.spec import ModelSpec

UNIT = Efficiency(gemm_eff_max=1.0, gemm_half_tokens=0.0, mem_eff=1.0, elementwise_mem_eff=1.0,
                  attn_prefill_eff=1.0, attn_decode_mem_eff=1.0, attn_decode_floor_s=0.0,
                  kernel_launch_s=0.0, step_overhead_s=0.0, comm_bw_eff=1.0,
                  comm_latency_s=0.0, source="test")
TINY = ModelSpec(name="tiny", num_layers=2, hidden_size=64, num_attention_heads=4,
                 num_kv_heads=2, head_dim=16, intermediate_size=128, vocab_size=1000,
                 max_model_len=4096)
LLAMA8 = ModelSpec(name="llama-8b-like", num_layers=32, hidden_size=4096,
                   num_attention_heads=32, num_kv_heads=8, head_dim=128,
                   intermediate_size=14336, vocab_size=128256, max_model_len=131072)


def hw(bw=1e9, peak=1e12, **eff):
    return HardwareSpec(
        name="unit", display_name="unit", vendor="test",
        peak_flops_per_s={"bf16": peak, "fp16": peak}, memory_bytes=80e9,
        memory_bandwidth_bytes_per_s=bw, intra_node=LinkSpec("nvlink", 100e9, 1e-6),
        gpus_per_node=8, host_link=LinkSpec("pcie", 32e9, 2e-6),
        inter_node=LinkSpec("infiniband", 25e9, 5e-6), power_w=100.0,
        price_on_demand_usd_per_h=1.0, price_spot_usd_per_h=0.5, price_note="",
        efficiency=dataclasses.replace(UNIT, **eff))


def ops(cm, agg):
    return {o.name: o for o in cm.breakdown(agg)}


DECODE = BatchAggregates(decode_seqs=3, decode_ctx_sum=3 * 100, num_sampled=3)
PREFILL = BatchAggregates.from_pairs([(10, 6)])        # one chunk, completes (sampled)


def test_defaults_of_the_new_fields_change_nothing():
    base = CostModel(LLAMA8, hw(bw=3e12, peak=1e15))
    explicit = CostModel(LLAMA8, hw(bw=3e12, peak=1e15, gemm_fixed_s=0.0, norm_mem_eff=None,
                                    attn_context_eff=None, host_kernel_s=0.0,
                                    comm_base_latency_s=0.0, p2p_bw_eff=None))
    for agg in (DECODE, PREFILL):
        assert base.step_time_s(agg) == explicit.step_time_s(agg)


def test_gemm_fixed_cost_adds_to_every_gemm_kernel():
    a = ops(CostModel(TINY, hw()), DECODE)
    b = ops(CostModel(TINY, hw(kernel_launch_s=1e-6, gemm_fixed_s=4e-6)), DECODE)
    for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
        assert b[name].time_s == pytest.approx(a[name].time_s + 2 * 5e-6, rel=1e-12)  # 2 layers
        assert b[name].launch_s == pytest.approx(2 * 5e-6)
    assert b["lm_head"].time_s == pytest.approx(a["lm_head"].time_s + 5e-6, rel=1e-12)
    assert b["norms"].time_s == pytest.approx(a["norms"].time_s + 5 * 1e-6, rel=1e-12)


def test_elementwise_families_use_their_own_bandwidth_fraction():
    a = ops(CostModel(TINY, hw()), DECODE)
    b = ops(CostModel(TINY, hw(norm_mem_eff=0.25, residual_mem_eff=0.5,
                               elementwise_mem_eff=0.8)), DECODE)
    assert b["norms"].time_s == pytest.approx(a["norms"].time_s / 0.25, rel=1e-12)
    assert b["residual"].time_s == pytest.approx(a["residual"].time_s / 0.5, rel=1e-12)
    # families left at None fall back to elementwise_mem_eff
    for name in ("rotary", "activation", "kv_cache_write", "embedding"):
        assert b[name].time_s == pytest.approx(a[name].time_s / 0.8, rel=1e-12), name


def test_prefill_context_part_runs_at_its_own_efficiency():
    # compute-bound: peak 1e9 FLOP/s; flops per query-key pair 2*Hg*(d+d) = 256
    cm = CostModel(TINY, hw(bw=1e18, peak=1e9, attn_prefill_eff=0.2, attn_context_eff=0.5,
                            attn_prefill_fixed_s=7e-6))
    o = ops(cm, PREFILL)["attn_prefill"]
    per_layer = (10 * 6 * 256 / (1e9 * 0.5) + 0.5 * 100 * 256 / (1e9 * 0.2)) + 7e-6
    assert o.time_s == pytest.approx(2 * per_layer, rel=1e-12)
    assert o.flops == 2 * (10 * 6 + 50) * 256      # FLOP count unchanged


def test_decode_attention_fixed_and_per_sequence_costs():
    cm0 = CostModel(TINY, hw())
    cm = CostModel(TINY, hw(attn_decode_fixed_s=9e-6, attn_decode_seq_s=2e-7))
    a, b = ops(cm0, DECODE)["attn_decode"], ops(cm, DECODE)["attn_decode"]
    assert b.time_s == pytest.approx(a.time_s + 2 * (9e-6 + 3 * 2e-7), rel=1e-12)
    run = cm.decode_run_s(3, 300, 5)
    assert run[0] == pytest.approx(cm.step_time_s(DECODE), rel=1e-12)


def test_collective_base_latency_and_p2p_bandwidth():
    link = LinkSpec("nvlink", 100e9, 1e-6)
    eff = dataclasses.replace(UNIT, comm_bw_eff=0.5, comm_latency_s=2e-6,
                              comm_base_latency_s=30e-6, p2p_bw_eff=0.8)
    assert comm.allreduce_time_s(1e6, 4, link, eff) == pytest.approx(
        30e-6 + 6 * 2e-6 + 1.5 * 1e6 / 50e9, rel=1e-12)
    assert comm.allgather_time_s(1e6, 4, link, eff) == pytest.approx(
        30e-6 + 3 * 2e-6 + 0.75 * 1e6 / 50e9, rel=1e-12)
    assert comm.send_time_s(1e6, link, eff) == pytest.approx(2e-6 + 1e6 / 80e9, rel=1e-12)
    no_p2p = dataclasses.replace(eff, p2p_bw_eff=None)
    assert comm.send_time_s(1e6, link, no_p2p) == pytest.approx(2e-6 + 1e6 / 50e9, rel=1e-12)


def tiny_kernels_decode() -> int:
    # embedding 1; per layer: 2 norms, qkv, rotary, kv write, attn, o, 2 adds, gate_up, act,
    # down = 12 (x2 layers); final norm 1; lm_head 1
    return 1 + 2 * 12 + 1 + 1


def test_host_bound_step_is_kernels_times_issue_time():
    cm0 = CostModel(TINY, hw(step_overhead_s=1e-3))
    gpu = cm0.step_time_s(DECODE) - 1e-3
    hk = 1e-3                                          # far above any GPU kernel here
    cm = CostModel(TINY, hw(step_overhead_s=1e-3, host_kernel_s=hk))
    assert cm.step_time_s(DECODE) == pytest.approx(tiny_kernels_decode() * hk + 1e-3, rel=1e-12)
    rows = ops(cm, DECODE)
    assert rows["host_issue"].time_s == pytest.approx(tiny_kernels_decode() * hk - gpu,
                                                      rel=1e-9)
    assert rows["host_issue"].count == tiny_kernels_decode()
    assert sum(o.time_s for o in rows.values()) == pytest.approx(cm.step_time_s(DECODE),
                                                                 rel=1e-12)
    # a tiny issue time never binds: the step is the GPU time
    cm_small = CostModel(TINY, hw(step_overhead_s=1e-3, host_kernel_s=1e-12))
    assert cm_small.step_time_s(DECODE) == pytest.approx(cm0.step_time_s(DECODE), rel=1e-12)


def test_first_token_and_decode_sequence_overheads():
    cm = CostModel(TINY, hw(first_token_overhead_s=5e-3, decode_seq_overhead_s=1e-4))
    cm0 = CostModel(TINY, hw())
    mixed = BatchAggregates.from_pairs([(10, 6), (1, 20), (1, 30)])   # 1 first token, 2 decodes
    assert cm.step_time_s(mixed) == pytest.approx(cm0.step_time_s(mixed) + 5e-3 + 2e-4,
                                                  rel=1e-12)
    # a chunk that does not complete its prompt (not sampled) pays no first-token overhead
    chunk = BatchAggregates.from_pairs([(10, 6)], num_sampled=0)
    assert cm.step_time_s(chunk) == pytest.approx(cm0.step_time_s(chunk), rel=1e-12)
    assert ops(cm, mixed)["seq_overhead"].time_s == pytest.approx(5e-3 + 2e-4)


@pytest.mark.parametrize("parallel", [ParallelConfig(), ParallelConfig(tp=2, pp=2)])
def test_fast_paths_agree_with_breakdown_when_every_new_term_is_on(parallel):
    cm = CostModel(LLAMA8, hw(bw=3e12, peak=1e15, kernel_launch_s=2e-6, gemm_fixed_s=4e-6,
                              norm_mem_eff=0.4, attn_context_eff=0.5, attn_prefill_fixed_s=2e-5,
                              attn_decode_fixed_s=1e-5, attn_decode_seq_s=3e-7,
                              comm_base_latency_s=4e-5, host_kernel_s=3e-5,
                              first_token_overhead_s=1e-2, decode_seq_overhead_s=4e-4,
                              step_overhead_s=2e-3), parallel)
    rng = np.random.default_rng(0)
    for _ in range(50):
        pairs = [(int(rng.choice([1, 1, rng.integers(2, 3000)])), int(rng.integers(0, 8000)))
                 for _ in range(int(rng.integers(1, 40)))]
        agg = BatchAggregates.from_pairs(pairs, num_sampled=int(rng.integers(0, len(pairs) + 1)))
        total = sum(o.time_s for o in cm.breakdown(agg))
        assert cm.step_time_s(agg) == pytest.approx(total, rel=1e-9)
        assert cm.stage_time_s(agg) <= cm.step_time_s(agg) * (1 + 1e-12)
    run = cm.decode_run_s(64, 64 * 500, 20)
    one = [cm.step_time_s(BatchAggregates(decode_seqs=64, decode_ctx_sum=64 * 500 + i * 64,
                                          num_sampled=64)) for i in range(20)]
    np.testing.assert_allclose(run, one, rtol=1e-12)
