"""Roofline cost model: FLOP/byte counts against hand calculation, parallel splits,
quantization, MoE, MLA, sliding window, fast path == breakdown, decode_run_s == repeated steps."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.cost import comm
from llmsim.cost.roofline import CostModel, gemm_efficiency, step_time
from llmsim.cost.types import BatchAggregates, ParallelConfig, QuantConfig
from llmsim.errors import InputError
from llmsim.hardware.spec import Efficiency, HardwareSpec, LinkSpec
from llmsim.models.params import weight_bytes
from llmsim.models.spec import ModelSpec

# --- fixtures built by hand ------------------------------------------------------------------
# Unit efficiencies: every op costs exactly max(flops/peak, bytes/bw), no launch or overhead.
UNIT_EFF = Efficiency(gemm_eff_max=1.0, gemm_half_tokens=0.0, mem_eff=1.0,
                      elementwise_mem_eff=1.0, attn_prefill_eff=1.0, attn_decode_mem_eff=1.0,
                      attn_decode_floor_s=0.0, kernel_launch_s=0.0, step_overhead_s=0.0,
                      comm_bw_eff=1.0, comm_latency_s=0.0, source="test")


def make_hw(bw=1e9, peak=1e12, eff=UNIT_EFF, gpus_per_node=8, memory=80e9, name="unit"):
    return HardwareSpec(
        name=name, display_name=name, vendor="test",
        peak_flops_per_s={"bf16": peak, "fp16": peak, "fp8": 2 * peak, "int8": 2 * peak},
        memory_bytes=memory, memory_bandwidth_bytes_per_s=bw,
        intra_node=LinkSpec("nvlink", 100e9, 1e-6), gpus_per_node=gpus_per_node,
        host_link=LinkSpec("pcie", 32e9, 2e-6), inter_node=LinkSpec("infiniband", 25e9, 5e-6),
        power_w=100.0, price_on_demand_usd_per_h=1.0, price_spot_usd_per_h=0.5, price_note="",
        efficiency=eff)


def h100_like():
    """Datasheet-like H100 SXM numbers with the default (assumed) efficiencies."""
    return HardwareSpec(
        name="h100-like", display_name="H100-like", vendor="test",
        peak_flops_per_s={"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12, "int8": 1979e12},
        memory_bytes=80e9, memory_bandwidth_bytes_per_s=3.35e12,
        intra_node=LinkSpec("nvlink", 450e9, 1e-6), gpus_per_node=8,
        host_link=LinkSpec("pcie", 64e9, 2e-6), inter_node=LinkSpec("infiniband", 50e9, 5e-6),
        power_w=700.0, price_on_demand_usd_per_h=4.0, price_spot_usd_per_h=2.0, price_note="")


TINY = ModelSpec(name="tiny", num_layers=2, hidden_size=64, num_attention_heads=4,
                 num_kv_heads=2, head_dim=16, intermediate_size=128, vocab_size=1000,
                 max_model_len=4096)
TINY_MOE = ModelSpec(name="tiny-moe", num_layers=2, hidden_size=64, num_attention_heads=4,
                     num_kv_heads=2, head_dim=16, intermediate_size=128, vocab_size=1000,
                     max_model_len=4096, num_experts=8, num_experts_per_tok=2,
                     moe_intermediate_size=32, num_shared_experts=1, num_dense_layers=1)
TINY_MLA = ModelSpec(name="tiny-mla", num_layers=2, hidden_size=64, num_attention_heads=4,
                     num_kv_heads=4, head_dim=24, intermediate_size=128, vocab_size=1000,
                     max_model_len=4096, q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8,
                     qk_nope_head_dim=16, v_head_dim=16)
LLAMA8 = ModelSpec(name="llama-8b-like", num_layers=32, hidden_size=4096,
                   num_attention_heads=32, num_kv_heads=8, head_dim=128,
                   intermediate_size=14336, vocab_size=128256, max_model_len=131072)
LLAMA70 = ModelSpec(name="Llama-3.1-70B", num_layers=80, hidden_size=8192,
                    num_attention_heads=64, num_kv_heads=8, head_dim=128,
                    intermediate_size=28672, vocab_size=128256, max_model_len=131072)
MOE_BIG = ModelSpec(name="moe-like", num_layers=8, hidden_size=2048, num_attention_heads=16,
                    num_kv_heads=4, head_dim=128, intermediate_size=8192, vocab_size=32000,
                    max_model_len=32768, num_experts=16, num_experts_per_tok=2,
                    moe_intermediate_size=1408, num_shared_experts=2, num_dense_layers=1)


def ops_by_name(cm, agg):
    return {o.name: o for o in cm.breakdown(agg)}


# A mixed batch: one prefill chunk (n=10 on c=6) and two decodes at contexts 20 and 30.
MIXED = BatchAggregates.from_pairs([(10, 6), (1, 20), (1, 30)])


def test_mixed_aggregates_are_what_the_hand_calculation_assumes():
    assert MIXED == BatchAggregates(prefill_seqs=1, prefill_tokens=10, prefill_nc_sum=60,
                                    prefill_n2_sum=100, prefill_ctx_sum=6, decode_seqs=2,
                                    decode_ctx_sum=50, num_sampled=3)


def test_dense_flops_and_bytes_match_hand_calculation():
    cm = CostModel(TINY, make_hw())
    ops = ops_by_name(cm, MIXED)
    T, L = 12, 2
    # qkv: 64 -> (4 + 2*2)*16 = 128 wide; bf16 (2 bytes) weights and activations
    assert ops["qkv_proj"].flops == L * 2 * T * 64 * 128 == 393216
    assert ops["qkv_proj"].bytes == L * (64 * 128 * 2 + T * (64 + 128) * 2) == 41984
    assert ops["o_proj"].flops == L * 2 * T * 64 * 64
    assert ops["o_proj"].bytes == L * (64 * 64 * 2 + T * 128 * 2)
    # gated MLP: gate+up 64 -> 256, down 128 -> 64
    assert ops["gate_up_proj"].flops == L * 2 * T * 64 * 256
    assert ops["gate_up_proj"].bytes == L * (64 * 256 * 2 + T * 320 * 2)
    assert ops["down_proj"].bytes == L * (128 * 64 * 2 + T * 192 * 2)
    # prefill attention: 4 * n(c + n/2) * H * d, KV of c+n tokens (2*Hkv*d*2 B) + Q and O
    assert ops["attn_prefill"].flops == L * 4 * (10 * 6 + 10 * 10 / 2) * 4 * 16 == 56320
    assert ops["attn_prefill"].bytes == L * (16 * 2 * 2 * 16 * 2 + 10 * 2 * 4 * 16 * 2)
    # decode attention: 4 * sum(c+1) * H * d, KV of all c+1 tokens + Q and O
    assert ops["attn_decode"].flops == L * 4 * (21 + 31) * 4 * 16
    assert ops["attn_decode"].bytes == L * ((21 + 31) * 128 + 2 * 2 * 4 * 16 * 2) == 14336
    # lm_head only for the 3 sampled tokens
    assert ops["lm_head"].flops == 2 * 3 * 64 * 1000
    assert ops["lm_head"].bytes == 64 * 1000 * 2 + 3 * (64 + 1000) * 2
    # norms: 2 per layer (read + write T*h) + final norm, weights h each
    assert ops["norms"].bytes == L * (2 * 2 * T * 64 * 2 + 2 * 64 * 2) + 2 * T * 64 * 2 + 64 * 2
    assert ops["norms"].count == 5
    assert ops["qkv_proj"].count == 2 and ops["residual"].count == 4
    assert ops["qkv_proj"].intensity == pytest.approx(393216 / 41984)
    assert "tp_allreduce" not in ops and "pp_send" not in ops


def test_memory_bound_step_time_is_total_bytes_over_bandwidth():
    # With unit efficiencies and a 1 GB/s memory every op here is memory-bound, so the step
    # time is exactly all bytes / 1e9.
    cm = CostModel(TINY, make_hw(bw=1e9, peak=1e12))
    ops = cm.breakdown(MIXED)
    assert all(o.bound == "memory" for o in ops if o.name != "step_overhead")
    assert cm.step_time_s(MIXED) == pytest.approx(sum(o.bytes for o in ops) / 1e9, rel=1e-12)


def test_compute_bound_step_time_is_flops_over_peak_plus_elementwise_bytes():
    cm = CostModel(TINY, make_hw(bw=1e18, peak=1e9))
    ops = cm.breakdown(MIXED)
    gemm_like = [o for o in ops if o.bound == "compute"]
    assert {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "attn_prefill", "attn_decode",
            "lm_head"} <= {o.name for o in gemm_like}
    expected = sum(o.flops for o in gemm_like) / 1e9 + \
        sum(o.bytes for o in ops if o.bound != "compute") / 1e18
    assert cm.step_time_s(MIXED) == pytest.approx(expected, rel=1e-12)


def test_shape_aware_gemm_efficiency_and_launch_are_applied():
    hw = h100_like()
    eff = hw.efficiency
    cm = CostModel(LLAMA8, hw)
    agg = BatchAggregates.from_pairs([(4096, 0)])
    qkv = ops_by_name(cm, agg)["qkv_proj"]
    assert gemm_efficiency(hw, 4096) == pytest.approx(0.75 * 4096 / (4096 + 32))
    flops = 32 * 2 * 4096 * 4096 * (32 + 16) * 128
    assert qkv.flops == flops
    expected = 32 * (eff.kernel_launch_s + flops / 32 / (989e12 * gemm_efficiency(hw, 4096)))
    assert qkv.bound == "compute"
    assert qkv.time_s == pytest.approx(expected, rel=1e-12)


def test_decode_is_memory_bound_and_long_prefill_compute_bound_on_h100():
    cm = CostModel(LLAMA8, h100_like())
    dec = ops_by_name(cm, BatchAggregates(decode_seqs=8, decode_ctx_sum=8 * 1000,
                                          num_sampled=8))
    for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "attn_decode", "lm_head"):
        assert dec[name].bound == "memory", name
    pre = ops_by_name(cm, BatchAggregates.from_pairs([(8192, 0)]))
    for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "attn_prefill"):
        assert pre[name].bound == "compute", name
    # ... and a tiny decode sits on the decode-attention floor / launch overhead
    tiny = ops_by_name(cm, BatchAggregates(decode_seqs=1, decode_ctx_sum=10, num_sampled=1))
    assert tiny["attn_decode"].bound == "overhead"


def test_llama8b_like_decode_time_is_near_weight_streaming_time():
    # A batch-1 decode of an 8B bf16 model on 3.35 TB/s at mem_eff 0.8 streams ~16 GB of
    # weights: ~6 ms, plus 2 ms step overhead and ~0.3 ms of launches.
    cm = CostModel(LLAMA8, h100_like())
    t = cm.step_time_s(BatchAggregates(decode_seqs=1, decode_ctx_sum=100, num_sampled=1))
    stream = cm.weights_bytes_per_gpu / (3.35e12 * 0.8)
    assert 16.0e9 < cm.weights_bytes_per_gpu < 16.1e9
    assert stream + 2e-3 < t < stream + 2e-3 + 1.5e-3


def test_tp2_halves_per_gpu_weights_and_splits_gemms():
    cm1 = CostModel(TINY, make_hw())
    cm2 = CostModel(TINY, make_hw(), ParallelConfig(tp=2))
    norms = (2 * TINY.num_layers + 1) * 64 * 2      # replicated on every rank
    assert cm2.weights_bytes_per_gpu == (cm1.weights_bytes_per_gpu - norms) / 2 + norms
    agg = BatchAggregates(decode_seqs=1, decode_ctx_sum=5, num_sampled=1)
    o1, o2 = ops_by_name(cm1, agg), ops_by_name(cm2, agg)
    # qkv weights halve: 64x128 -> 64x64 per GPU (H: 4 -> 2, KV heads 2 -> 1)
    assert o2["qkv_proj"].flops == o1["qkv_proj"].flops / 2
    assert o2["qkv_proj"].bytes == 2 * (64 * 64 * 2 + (64 + 64) * 2)
    assert o2["gate_up_proj"].flops == o1["gate_up_proj"].flops / 2
    # two all-reduces of T*h*2 bytes per layer + one after the embedding, ring over NVLink
    ar = ops_by_name(cm2, agg)["tp_allreduce"]
    assert ar.count == 2 * 2 + 1
    hw = make_hw()
    assert ar.time_s == pytest.approx(
        5 * comm.allreduce_time_s(64 * 2, 2, hw.intra_node, hw.efficiency), rel=1e-12)
    assert ar.bound == "comm"
    # the per-GPU KV cache halves too
    assert cm2.stage_kv_bytes_per_token[0] == cm1.stage_kv_bytes_per_token[0] / 2


def test_kv_heads_are_replicated_when_tp_exceeds_them():
    cm = CostModel(TINY, make_hw(), ParallelConfig(tp=4))     # 2 KV heads, tp 4
    assert cm.stage_kv_bytes_per_token[0] == 2 * (2 * 1 * 16 * 2)    # 1 KV head per GPU
    assert cm.kv_bytes_per_token == 2 * (2 * 2 * 16 * 2)              # the model's own figure


def test_tp_beyond_a_node_uses_the_inter_node_link():
    hw = make_hw(gpus_per_node=2)
    cm = CostModel(TINY, hw, ParallelConfig(tp=4))
    agg = BatchAggregates(decode_seqs=3, decode_ctx_sum=30, num_sampled=3)
    ar = ops_by_name(cm, agg)["tp_allreduce"]
    assert ar.time_s == pytest.approx(
        5 * comm.allreduce_time_s(3 * 64 * 2, 4, hw.inter_node, hw.efficiency), rel=1e-12)


def test_fp8_weights_halve_weight_bytes():
    q8 = QuantConfig(weight_dtype="fp8", activation_dtype="bf16", kv_cache_dtype="bf16")
    cm16 = CostModel(TINY, make_hw())
    cm8 = CostModel(TINY, make_hw(), quant=q8)
    agg = BatchAggregates(decode_seqs=1, decode_ctx_sum=5, num_sampled=1)
    o16, o8 = ops_by_name(cm16, agg), ops_by_name(cm8, agg)
    act = 2 * (64 + 128) * 2       # activations unchanged (bf16)
    assert o8["qkv_proj"].bytes - act == (o16["qkv_proj"].bytes - act) / 2
    # embeddings, lm_head and norms stay 16-bit; every other weight halves
    kept = 2 * 1000 * 64 * 2 + 5 * 64 * 2
    assert cm8.weights_bytes_per_gpu == (cm16.weights_bytes_per_gpu - kept) / 2 + kept
    # the replica total agrees with the model-card parameter count
    assert cm16.weights_bytes_per_replica == weight_bytes(TINY, 16)
    # fp8 activations use the fp8 peak (twice bf16 here) for GEMMs
    w8a8 = CostModel(TINY, make_hw(bw=1e18, peak=1e9),
                     quant=QuantConfig("fp8", "fp8", "bf16"))
    bf = CostModel(TINY, make_hw(bw=1e18, peak=1e9))
    big = BatchAggregates.from_pairs([(512, 0)])
    assert ops_by_name(w8a8, big)["gate_up_proj"].time_s == pytest.approx(
        ops_by_name(bf, big)["gate_up_proj"].time_s / 2, rel=1e-6)


def test_tied_embeddings_are_stored_once_unless_pipelined():
    tied = ModelSpec(**{**TINY.__dict__, "name": "tiny-tied", "tie_word_embeddings": True})
    cm = CostModel(tied, make_hw())
    assert cm.weights_bytes_per_replica == weight_bytes(tied, 16)
    assert CostModel(TINY, make_hw()).weights_bytes_per_replica - \
        cm.weights_bytes_per_replica == 1000 * 64 * 2
    # with pp=2 the first stage holds the embedding and the last the lm_head: two copies
    cm2 = CostModel(tied, make_hw(), ParallelConfig(pp=2))
    assert cm2.weights_bytes_per_replica == CostModel(TINY, make_hw()).weights_bytes_per_replica


def test_fp8_kv_cache_halves_kv_bytes_and_decode_attention_bytes():
    q = QuantConfig(kv_cache_dtype="fp8")
    cm, cm8 = CostModel(TINY, make_hw()), CostModel(TINY, make_hw(), quant=q)
    assert cm8.kv_bytes_per_token == cm.kv_bytes_per_token / 2
    agg = BatchAggregates(decode_seqs=1, decode_ctx_sum=99, num_sampled=1)
    qo = 2 * (2 * 4 * 16 * 2)
    assert ops_by_name(cm8, agg)["attn_decode"].bytes - qo == \
        (ops_by_name(cm, agg)["attn_decode"].bytes - qo) / 2


def test_moe_flops_bytes_and_expected_distinct_experts():
    cm = CostModel(TINY_MOE, make_hw())
    agg = BatchAggregates(decode_seqs=3, decode_ctx_sum=30, num_sampled=3)
    ops = ops_by_name(cm, agg)
    D = 8 * (1 - (1 - 2 / 8) ** 3)
    assert D == 4.625
    # one MoE layer (the first layer is dense); T=3 tokens, top-2 -> 6 token-expert rows
    assert ops["expert_gate_up"].flops == 2 * 6 * 64 * (2 * 32)
    assert ops["expert_gate_up"].bytes == D * 64 * 64 * 2 + 6 * (64 + 64) * 2 == 39424
    assert ops["expert_down"].flops == 2 * 6 * 32 * 64
    assert ops["expert_down"].bytes == D * 32 * 64 * 2 + 6 * (32 + 64) * 2
    assert ops["expert_gate_up"].count == 1
    assert ops["router"].flops == 2 * 3 * 64 * 8 and ops["router"].count == 1
    assert ops["shared_gate_up_proj"].flops == 2 * 3 * 64 * 64
    assert ops["gate_up_proj"].flops == 2 * 3 * 64 * 256 and ops["gate_up_proj"].count == 1
    assert cm.weights_bytes_per_replica == weight_bytes(TINY_MOE, 16)


def test_expected_distinct_experts_formula_matches_monte_carlo():
    E, k, T = 8, 2, 5
    rng = np.random.default_rng(1234)
    picks = np.argsort(rng.random((20000, T, E)), axis=2)[:, :, :k].reshape(20000, -1)
    distinct = np.array([len(np.unique(row)) for row in picks])
    formula = E * (1 - (1 - k / E) ** T)
    assert distinct.mean() == pytest.approx(formula, abs=0.03)
    # and the cost model streams exactly that many experts' weights
    cm = CostModel(TINY_MOE, make_hw())
    gu = ops_by_name(cm, BatchAggregates(decode_seqs=T, decode_ctx_sum=T, num_sampled=T))
    act = T * k * (64 + 64) * 2
    assert (gu["expert_gate_up"].bytes - act) / (64 * 64 * 2) == pytest.approx(formula)


def test_moe_expert_gemm_efficiency_uses_rows_per_expert():
    hw = h100_like()
    cm = CostModel(TINY_MOE, hw)
    T = 40
    ops = ops_by_name(cm, BatchAggregates.from_pairs([(T, 0)]))
    D = 8 * (1 - 0.75 ** T)
    rows = T * 2 / D
    assert ops["expert_gate_up"].compute_s == pytest.approx(
        ops["expert_gate_up"].flops / (989e12 * gemm_efficiency(hw, rows)), rel=1e-12)


def test_expert_parallel_adds_alltoall():
    hw = make_hw()
    cm = CostModel(TINY_MOE, hw, ParallelConfig(tp=2, ep=2))
    agg = BatchAggregates(decode_seqs=4, decode_ctx_sum=40, num_sampled=4)
    a2a = ops_by_name(cm, agg)["ep_alltoall"]
    per_gpu = 4 / 2 * 2 * 64 * 2            # T/ep tokens x top-2 x hidden x 2 bytes
    assert a2a.count == 2
    assert a2a.time_s == pytest.approx(
        2 * comm.alltoall_time_s(per_gpu, 2, hw.intra_node, hw.efficiency), rel=1e-12)
    assert "ep_alltoall" not in ops_by_name(CostModel(TINY_MOE, hw, ParallelConfig(tp=2)), agg)


def test_mla_latent_kv_cache_and_absorbed_decode():
    cm = CostModel(TINY_MLA, make_hw())
    assert cm.kv_bytes_per_token == 2 * (16 + 8) * 2          # layers x (kv_lora + rope) x 2 B
    cm2 = CostModel(TINY_MLA, make_hw(), ParallelConfig(tp=2))
    assert cm2.stage_kv_bytes_per_token == cm.stage_kv_bytes_per_token   # replicated latent
    ops = ops_by_name(cm, BatchAggregates(decode_seqs=1, decode_ctx_sum=9, num_sampled=1))
    # absorbed: d_qk = kv_lora + rope = 24, d_v = kv_lora = 16; latent read once per token
    assert ops["attn_decode"].flops == 2 * 2 * 10 * 4 * (24 + 16)
    assert ops["attn_decode"].bytes == 2 * (10 * 48 + 4 * (24 + 16) * 2)
    assert ops["kv_b_proj"].flops == 2 * 2 * 1 * 16 * 4 * (16 + 16)
    assert cm.weights_bytes_per_replica == weight_bytes(TINY_MLA, 16)
    pre = ops_by_name(cm, BatchAggregates.from_pairs([(8, 0)]))
    # prefill materialises per-head K/V: d_qk = nope + rope = 24, d_v = 16
    assert pre["attn_prefill"].flops == 2 * 2 * (8 * 8 / 2) * 4 * (24 + 16)


def test_sliding_window_caps_context():
    win = TINY.__class__(**{**TINY.__dict__, "name": "tiny-swa", "sliding_window": 64})
    hw = make_hw()
    far = step_time(win, hw, [(1, 5000), (10, 3000)])
    near = step_time(win, hw, [(1, 64), (10, 64)])
    assert far.time_s == near.time_s
    full = step_time(TINY, hw, [(1, 5000), (10, 3000)])
    assert full.time_s > far.time_s
    assert {o.name: o.bytes for o in far.ops} == {o.name: o.bytes for o in near.ops}


def test_step_time_accepts_pairs_and_aggregates():
    hw = make_hw()
    by_pairs = step_time(TINY, hw, [(10, 6), (1, 20), (1, 30)])
    by_agg = step_time(TINY, hw, MIXED)
    assert by_pairs.time_s == by_agg.time_s
    assert sum(o.time_s for o in by_pairs.ops) == pytest.approx(by_pairs.time_s, rel=1e-12)
    with pytest.raises(InputError):
        step_time(TINY, hw, [(0, 5)])


def test_pipeline_stages_sends_and_bottleneck():
    hw = h100_like()
    m = ModelSpec(**{**LLAMA8.__dict__, "name": "l10", "num_layers": 10})
    cm = CostModel(m, hw, ParallelConfig(tp=4, pp=4))
    assert cm.stage_layers == (3, 3, 2, 2)
    T = 100
    agg = BatchAggregates.from_pairs([(T, 0)])
    send = ops_by_name(cm, agg)["pp_send"]
    # stage s owns GPUs [4s, 4s+4): only the 1->2 boundary crosses the 8-GPU node
    per = 2 * T * 4096 * 2
    expected = 2 * comm.send_time_s(per, hw.intra_node, hw.efficiency) + \
        comm.send_time_s(per, hw.inter_node, hw.efficiency)
    assert send.count == 3
    assert send.time_s == pytest.approx(expected, rel=1e-12)
    step, stage = cm.step_time_s(agg), cm.stage_time_s(agg)
    assert stage < step
    # the busiest stage does 3 of the 10 layers (+ the overhead, its share of the rest)
    overhead = hw.efficiency.step_overhead_s
    layers_s = step - overhead - send.time_s
    assert stage > overhead + 0.3 * layers_s * 0.9
    assert stage < overhead + 0.3 * layers_s + ops_by_name(cm, agg)["lm_head"].time_s + 1e-4


def test_stage_time_equals_step_time_without_pipeline():
    cm = CostModel(LLAMA8, h100_like(), ParallelConfig(tp=2))
    for agg in (MIXED, BatchAggregates.from_pairs([(2048, 0)])):
        assert cm.stage_time_s(agg) == cm.step_time_s(agg)


def test_empty_step_costs_nothing():
    cm = CostModel(TINY, make_hw())
    assert cm.step_time_s(BatchAggregates()) == 0.0
    assert cm.breakdown(BatchAggregates()) == []
    assert cm.decode_run_s(0, 0, 3).tolist() == [0.0, 0.0, 0.0]


# --- fast path vs breakdown vs decode runs ---------------------------------------------------
CONFIGS = [
    (LLAMA8, ParallelConfig()),
    (LLAMA8, ParallelConfig(tp=4)),
    (ModelSpec(**{**LLAMA8.__dict__, "name": "l31", "num_layers": 31}), ParallelConfig(tp=4, pp=3)),
    (MOE_BIG, ParallelConfig(tp=2, ep=2)),
    (MOE_BIG, ParallelConfig(tp=2, pp=2)),
    (TINY_MLA, ParallelConfig(tp=2)),
    (LLAMA70, ParallelConfig(tp=16)),        # beyond one node
]
MODELS = [CostModel(m, h100_like(), p, q) for m, p in CONFIGS
          for q in (QuantConfig(), QuantConfig("int4", "bf16", "fp8"))]

pairs_st = st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 20000)), min_size=1,
                    max_size=30)


@settings(max_examples=60, deadline=None)
@given(pairs=pairs_st, idx=st.integers(0, len(MODELS) - 1), sampled=st.floats(0, 1))
def test_step_time_equals_sum_of_breakdown(pairs, idx, sampled):
    cm = MODELS[idx]
    agg = BatchAggregates.from_pairs(pairs, num_sampled=int(round(sampled * len(pairs))))
    total = sum(o.time_s for o in cm.breakdown(agg))
    assert cm.step_time_s(agg) == pytest.approx(total, rel=1e-9)
    assert cm.stage_time_s(agg) <= cm.step_time_s(agg) * (1 + 1e-12)


@pytest.mark.parametrize("cm", MODELS, ids=[f"{c.model.name}-tp{c.parallel.tp}-pp"
                                            f"{c.parallel.pp}-{c.quant.weight_dtype}"
                                            for c in MODELS])
def test_decode_run_equals_repeated_step_time(cm):
    for seqs, ctx_sum, k in ((1, 7, 40), (37, 37 * 900, 300), (256, 256 * 3000, 64)):
        run = cm.decode_run_s(seqs, ctx_sum, k)
        assert run.shape == (k,)
        one_by_one = np.array([cm.step_time_s(BatchAggregates(
            decode_seqs=seqs, decode_ctx_sum=ctx_sum + i * seqs, num_sampled=seqs))
            for i in range(k)])
        np.testing.assert_allclose(run, one_by_one, rtol=1e-12, atol=0)
        assert np.all(np.diff(run) >= 0)      # contexts grow, steps never get cheaper


@pytest.mark.parametrize("cm", MODELS, ids=[f"{c.model.name}-tp{c.parallel.tp}-pp"
                                            f"{c.parallel.pp}-{c.quant.weight_dtype}"
                                            for c in MODELS])
def test_decode_step_line_equals_step_time(cm):
    for seqs in (1, 2, 37, 256, 1024):
        a1, b1, a2, b2, g, q = cm.decode_step_line(seqs)
        for ctx in (seqs, seqs * 17, seqs * 900, seqs * 3000, seqs * 128_000):
            want = cm.step_time_s(BatchAggregates(decode_seqs=seqs, decode_ctx_sum=ctx,
                                                  num_sampled=seqs))
            got = max(a1 + b1 * ctx, a2 + b2 * ctx, g) + q
            assert got == pytest.approx(want, rel=1e-12, abs=0)
            assert cm.decode_step_s(seqs, ctx) == got
    with pytest.raises(ValueError):
        cm.decode_step_line(0)


@pytest.mark.parametrize("cm", MODELS, ids=[f"{c.model.name}-tp{c.parallel.tp}-pp"
                                            f"{c.parallel.pp}-{c.quant.weight_dtype}"
                                            for c in MODELS])
def test_decode_step_pieces_equal_step_time(cm):
    """The pieces cover every context sum with the line that is the step time there,
    including both sides of every breakpoint."""
    for seqs in (1, 2, 37, 256, 1024):
        pieces = cm.decode_step_pieces(seqs)
        assert pieces[0][0] == 0.0
        assert all(a[0] < b[0] for a, b in zip(pieces, pieces[1:]))
        ctxs = [seqs, seqs * 17, seqs * 900, seqs * 3000, seqs * 128_000]
        for c_start, _, _ in pieces[1:]:
            ctxs += [int(c_start), int(c_start) + 1]
        for ctx in ctxs:
            want = cm.step_time_s(BatchAggregates(decode_seqs=seqs, decode_ctx_sum=ctx,
                                                  num_sampled=seqs))
            _, A, B = [p for p in pieces if p[0] <= ctx][-1]
            assert A + B * ctx == pytest.approx(want, rel=1e-12, abs=0)


def test_upper_envelope_matches_the_maximum():
    from llmsim.cost.roofline import upper_envelope
    rng = np.random.default_rng(3)
    for _ in range(2000):
        lines = [(rng.uniform(0, 1), rng.uniform(0, 1e-3)), (rng.uniform(0, 1),
                 rng.uniform(0, 1e-3)), (rng.uniform(0, 1), 0.0)]
        if rng.random() < 0.2:
            lines[1] = (lines[0][0], lines[1][1])      # equal at c = 0
        pieces = upper_envelope(lines)
        assert pieces[0][0] == 0.0 and len(pieces) <= 3
        for c in list(rng.uniform(0, 5000, 20)) + [p[0] for p in pieces]:
            _, A, B = [p for p in pieces if p[0] <= c][-1]
            assert A + B * c == pytest.approx(max(a + b * c for a, b in lines), rel=1e-12)


def test_breakdown_rows_are_well_formed():
    cm = MODELS[4]      # MoE with pp
    ops = cm.breakdown(MIXED)
    for o in ops:
        assert o.bound in ("compute", "memory", "overhead", "comm")
        assert o.time_s >= 0 and o.count >= 1
        assert o.time_s == pytest.approx(o.launch_s + max(o.compute_s, o.memory_s), rel=1e-9) \
            or o.name == "attn_decode"
    names = [o.name for o in ops]
    assert names[-1] == "step_overhead" and len(names) == len(set(names))


# --- bad plans ---------------------------------------------------------------------------------
@pytest.mark.parametrize("parallel, quant, words", [
    (ParallelConfig(tp=3), QuantConfig(), ["tp=3", "32 attention heads"]),
    (ParallelConfig(pp=40), QuantConfig(), ["32 layers"]),
    (ParallelConfig(ep=2), QuantConfig(), ["dense"]),
    (ParallelConfig(tp=0), QuantConfig(), ["parallel.tp"]),
    (ParallelConfig(), QuantConfig(weight_dtype="fp7"), ["fp7", "allowed"]),
])
def test_impossible_parallel_plans_raise_input_error(parallel, quant, words):
    with pytest.raises(InputError) as exc:
        CostModel(LLAMA8, h100_like(), parallel, quant)
    for w in words:
        assert w in str(exc.value)


def test_ep_must_divide_tp_and_experts():
    with pytest.raises(InputError, match="must divide"):
        CostModel(MOE_BIG, h100_like(), ParallelConfig(tp=2, ep=4))


def test_cost_model_hot_path_is_cheap():
    # Not a benchmark: a generous bound that catches an accidental O(layers) Python loop.
    import timeit
    cm = CostModel(MOE_BIG, h100_like(), ParallelConfig(tp=2, pp=2))
    agg = BatchAggregates.from_pairs([(512, 100)] + [(1, 1000)] * 64)
    per_call = min(timeit.repeat(lambda: cm.step_time_s(agg), number=2000, repeat=3)) / 2000
    assert per_call < 50e-6
    assert math.isfinite(cm.step_time_s(agg))
