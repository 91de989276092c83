"""Memory plan (weights, activation reserve, KV capacity), fit errors, KV transfer bytes and
roofline capacity helpers, checked against hand calculation."""
from __future__ import annotations

import math

import pytest

from llmsim.cost.memory import (NON_TORCH_BYTES, activation_reserve_bytes, decode_capacity,
                                kv_bytes_per_token, kv_transfer_bytes,
                                max_throughput_tokens_per_s, memory_plan,
                                request_capacity_per_s)
from llmsim.cost.roofline import CostModel
from llmsim.cost.types import BatchAggregates, ParallelConfig, QuantConfig
from llmsim.errors import InputError
from test_cost_roofline import LLAMA8, LLAMA70, TINY, TINY_MLA, TINY_MOE, h100_like, make_hw


def test_activation_reserve_matches_hand_calculation():
    # 8192 tokens x 2 B x (4*64 hidden buffers + widest intermediate = 3*128 gated MLP)
    # + logits of 256 sampled tokens (8 B per vocab entry) + non-torch memory
    got = activation_reserve_bytes(TINY, ParallelConfig(), QuantConfig(), 8192, 256)
    assert got == 8192 * 2 * (4 * 64 + 3 * 128) + 8 * 1000 * 256 + NON_TORCH_BYTES
    no_logits = activation_reserve_bytes(TINY, ParallelConfig(), QuantConfig(), 8192, 256,
                                         last_stage=False)
    assert got - no_logits == 8 * 1000 * 256


def test_memory_plan_numbers_by_hand():
    hw = make_hw(memory=10e9)
    plan = memory_plan(TINY, hw, gpu_memory_utilization=0.5, block_size=16,
                       max_num_batched_tokens=8192)
    weights = 2 * 1000 * 64 * 2 + 2 * (64 * 128 + 64 * 64 + 3 * 64 * 128) * 2 + 5 * 64 * 2
    assert plan.weights_bytes_per_gpu == weights
    reserve = activation_reserve_bytes(TINY, ParallelConfig(), QuantConfig(), 8192, 256)
    assert plan.activation_reserve_bytes == reserve
    free = 5e9 - weights - reserve
    assert plan.free_kv_bytes_per_gpu == pytest.approx(free)
    kv_tok = 2 * 2 * 2 * 16 * 2           # layers x (K,V) x kv heads x head_dim x 2 B
    assert plan.kv_bytes_per_token == plan.kv_bytes_per_token_per_gpu == kv_tok
    assert plan.num_gpu_blocks == math.floor(free / (16 * kv_tok))
    assert plan.kv_capacity_tokens == plan.num_gpu_blocks * 16
    assert plan.block_bytes_per_gpu == 16 * kv_tok


def test_llama8b_like_on_h100_like_kv_capacity():
    plan = memory_plan(LLAMA8, h100_like())
    assert plan.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072
    assert 16.0e9 < plan.weights_bytes_per_gpu < 16.1e9
    # ~54 GB left for the cache -> ~410k tokens (vLLM reports ~4e5 for this setup)
    assert 380_000 < plan.kv_capacity_tokens < 430_000


def test_tensor_parallel_grows_capacity_per_replica():
    one = memory_plan(LLAMA8, h100_like())
    two = memory_plan(LLAMA8, h100_like(), ParallelConfig(tp=2))
    assert two.weights_bytes_per_gpu < one.weights_bytes_per_gpu * 0.51
    assert two.kv_bytes_per_token_per_gpu == one.kv_bytes_per_token_per_gpu / 2
    assert two.kv_capacity_tokens > 2 * one.kv_capacity_tokens


def test_pipeline_capacity_is_set_by_the_fullest_stage():
    plan = memory_plan(LLAMA8, h100_like(), ParallelConfig(pp=3))     # stages 11, 11, 10 layers
    cm = CostModel(LLAMA8, h100_like(), ParallelConfig(pp=3))
    assert cm.stage_layers == (11, 11, 10)
    caps = []
    for j in range(3):
        reserve = activation_reserve_bytes(LLAMA8, ParallelConfig(pp=3), QuantConfig(),
                                           last_stage=j == 2)
        free = 72e9 - cm.stage_weight_bytes[j] - reserve
        caps.append(int(free // (16 * cm.stage_kv_bytes_per_token[j])))
    assert plan.num_gpu_blocks == min(caps)


def test_weights_that_do_not_fit_raise_with_gb_figures():
    with pytest.raises(InputError) as exc:
        memory_plan(LLAMA70, h100_like())
    msg = str(exc.value)
    for part in ("Llama-3.1-70B bf16 needs 141 GB of weights per replica",
                 "141 GB per GPU at tp=1, pp=1", "80 GB per GPU",
                 "72 GB usable at gpu_memory_utilization=0.9"):
        assert part in msg, msg
    # fits at tp=2 (70 GB per GPU) only with a higher utilization; tp=4 fits comfortably
    with pytest.raises(InputError):
        memory_plan(LLAMA70, h100_like(), ParallelConfig(tp=2))
    assert memory_plan(LLAMA70, h100_like(), ParallelConfig(tp=4)).kv_capacity_tokens > 0


def test_max_model_len_that_does_not_fit_raises():
    hw = make_hw(memory=1.2e9)
    with pytest.raises(InputError, match="fewer than the"):
        memory_plan(TINY, hw, max_model_len=10**9)
    assert memory_plan(TINY, hw, max_model_len=4096).kv_capacity_tokens >= 4096


@pytest.mark.parametrize("kw", [{"gpu_memory_utilization": 0.0},
                                {"gpu_memory_utilization": 1.5}, {"block_size": 0},
                                {"max_num_batched_tokens": -1}])
def test_bad_memory_settings_raise(kw):
    with pytest.raises(InputError):
        memory_plan(TINY, make_hw(), **kw)


def test_kv_bytes_and_transfer_bytes():
    assert kv_bytes_per_token(LLAMA8) == 131072
    assert kv_bytes_per_token(LLAMA8, QuantConfig(kv_cache_dtype="fp8")) == 65536
    assert kv_transfer_bytes(LLAMA8, QuantConfig(), 1000) == 1000 * 131072
    assert kv_bytes_per_token(TINY_MLA) == 2 * (16 + 8) * 2
    assert kv_bytes_per_token(TINY_MOE) == kv_bytes_per_token(TINY)
    with pytest.raises(ValueError):
        kv_transfer_bytes(LLAMA8, QuantConfig(), -1)


def test_decode_capacity_is_memory_or_seq_limited():
    hw = h100_like()
    cap = decode_capacity(LLAMA8, hw, context_tokens=1024, max_num_seqs=256)
    assert cap.batch_size == 256
    cm = CostModel(LLAMA8, hw)
    step = cm.step_time_s(BatchAggregates(decode_seqs=256, decode_ctx_sum=256 * 1024,
                                          num_sampled=256))
    assert cap.step_time_s == step and cap.tokens_per_s == pytest.approx(256 / step)
    long = decode_capacity(LLAMA8, hw, context_tokens=100_000, max_num_seqs=256)
    plan = memory_plan(LLAMA8, hw)
    assert long.batch_size == plan.kv_capacity_tokens // 100_001
    assert max_throughput_tokens_per_s(LLAMA8, hw, context_tokens=1024) == cap.tokens_per_s


def test_request_capacity_is_positive_and_falls_with_longer_requests():
    hw = h100_like()
    short = request_capacity_per_s(LLAMA8, hw, prompt_tokens=500, output_tokens=100)
    long = request_capacity_per_s(LLAMA8, hw, prompt_tokens=4000, output_tokens=800)
    assert short > long > 0
