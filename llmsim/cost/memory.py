"""GPU memory plan of one replica: weights, activation reserve, KV-cache capacity (DESIGN §5).

Contract: ``memory_plan(...)`` mirrors how vLLM sizes its KV cache. Each GPU may use
``memory_bytes · gpu_memory_utilization``; from that it subtracts the weights it stores (from the
cost model's per-operator inventory: its tp shard of its pipeline stage, replicated KV heads /
MLA latents / routers included), and an activation reserve; the rest holds KV-cache blocks of
``block_size`` tokens. Capacity per replica is set by the GPU that fills first (every stage must
hold the KV of every token for its own layers), as vLLM takes the minimum over workers.

Activation reserve (our estimate of the peak vLLM measures in its profiling forward pass of
``max_num_batched_tokens`` tokens, per GPU):

    max_num_batched_tokens · act_bytes · (4·hidden + widest per-layer intermediate)
    + logits of ``max_num_seqs`` sampled tokens, fp32 logits and probabilities (8·vocab bytes
      each; last stage only)
    + NON_TORCH_BYTES (CUDA context, cuBLAS workspace, NCCL buffers)

where ``4·hidden`` counts the hidden state, residual, normed input and layer output, and the
widest intermediate is the larger of the attention projections (q + k + v + attention output of
the tp shard) and the MLP (gate/up output + activation output, or for MoE the top-k + shared
expert intermediates of every token). For Llama-3.1-8B at 8192 batched tokens this gives about
1.0 GB + 0.26 GB logits, close to the ~1.2 GiB "activation peak" vLLM reports.

Sliding-window models are sized like full-attention ones (capacity is in tokens; the scheduler
may free blocks that fall out of the window).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

from llmsim.cost.roofline import CostModel, kv_bytes_per_token_per_layer
from llmsim.cost.types import BatchAggregates, ParallelConfig, QuantConfig
from llmsim.errors import InputError, Problem, input_problem
from llmsim.hardware.spec import HardwareSpec
from llmsim.models.spec import ModelSpec

__all__ = ["MemoryPlan", "memory_plan", "kv_bytes_per_token", "kv_transfer_bytes",
           "activation_reserve_bytes", "DecodeCapacity", "decode_capacity",
           "max_throughput_tokens_per_s", "request_capacity_per_s", "NON_TORCH_BYTES"]

NON_TORCH_BYTES = 0.5e9
"""Per-GPU memory outside PyTorch's allocator (CUDA context, cuBLAS workspace, NCCL buffers);
vLLM's startup log reports 0.2–1 GB here. Our assumption, not fitted."""

GB = 1e9


@dataclass(frozen=True)
class MemoryPlan:
    """Memory of one replica. ``*_per_gpu`` figures are for the GPU that limits KV capacity
    (the most loaded pipeline stage); ``kv_bytes_per_token`` is the whole model (all layers, one
    copy: ``2·layers·kv_heads·head_dim·kv_bytes``, or ``layers·(kv_lora_rank + rope)·kv_bytes``
    for MLA). ``kv_capacity_tokens = num_gpu_blocks · block_size`` is per replica."""

    num_gpus: int
    memory_bytes_per_gpu: float
    gpu_memory_utilization: float
    usable_bytes_per_gpu: float
    weights_bytes_per_gpu: float
    weights_bytes_per_replica: float
    activation_reserve_bytes: float
    free_kv_bytes_per_gpu: float
    kv_bytes_per_token: float
    kv_bytes_per_token_per_gpu: float
    block_size: int
    block_bytes_per_gpu: float
    num_gpu_blocks: int
    kv_capacity_tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


def kv_bytes_per_token(model: ModelSpec, quant: QuantConfig = QuantConfig()) -> float:
    """KV-cache bytes of one token across all layers of the model (one copy)."""
    return model.num_layers * kv_bytes_per_token_per_layer(model, quant, 1)


def kv_transfer_bytes(model: ModelSpec, quant: QuantConfig, num_tokens: int) -> float:
    """Bytes to move the KV cache of ``num_tokens`` tokens between replicas (disaggregated
    prefill/decode, migration): one copy of every layer's KV at the KV dtype. The caller caps
    ``num_tokens`` at the sliding window if out-of-window blocks were freed."""
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0 (got {num_tokens})")
    return num_tokens * kv_bytes_per_token(model, quant)


def activation_reserve_bytes(model: ModelSpec, parallel: ParallelConfig, quant: QuantConfig,
                             max_num_batched_tokens: int = 8192, max_num_seqs: int = 256,
                             last_stage: bool = True) -> float:
    """Per-GPU activation reserve (see the module docstring for the formula)."""
    tp = parallel.tp
    h, ab = model.hidden_size, quant.activation_bytes
    if model.is_mla:
        heads = model.num_attention_heads / tp
        attn_w = heads * (model.qk_nope_head_dim + model.qk_rope_head_dim) \
            + heads * (model.qk_nope_head_dim + 2 * model.v_head_dim)
    else:
        kvh = -(-model.num_kv_heads // tp)
        attn_w = (2 * model.num_attention_heads / tp + 2 * kvh) * model.head_dim
    mats = 3 if model.gated_mlp else 2
    has_dense_mlp = not model.is_moe or model.num_dense_layers > 0
    mlp_w = mats * model.intermediate_size / tp if has_dense_mlp else 0.0
    if model.is_moe:
        moe_w = (model.num_experts_per_tok + model.num_shared_experts) * \
            (h + mats * model.moe_intermediate_size / tp)
        mlp_w = max(mlp_w, moe_w)
    act = max_num_batched_tokens * ab * (4 * h + max(attn_w, mlp_w))
    logits = 8.0 * model.vocab_size * max_num_seqs if last_stage else 0.0
    return act + logits + NON_TORCH_BYTES


def _fmt_gb(x: float) -> str:
    return f"{x / GB:.0f}" if x >= 10 * GB else f"{x / GB:.1f}"


def memory_plan(model: ModelSpec, hardware: HardwareSpec,
                parallel: ParallelConfig = ParallelConfig(), quant: QuantConfig = QuantConfig(),
                gpu_memory_utilization: float = 0.9, block_size: int = 16,
                max_num_batched_tokens: int = 8192, max_num_seqs: int = 256,
                max_model_len: int | None = None) -> MemoryPlan:
    """Weights, activation reserve and KV capacity of one replica.

    Raises :class:`InputError` for settings out of range, when a GPU cannot hold its weights
    plus the activation reserve (message with the GB figures), when no KV block fits, and, when
    ``max_model_len`` is given, when the cache cannot hold one sequence of that length (as vLLM
    refuses to start)."""
    problems: list[Problem] = []
    if not 0 < gpu_memory_utilization <= 1:
        problems.append(input_problem("must be in (0, 1]", key="gpu_memory_utilization",
                                      value=gpu_memory_utilization))
    for key, v in (("block_size", block_size), ("max_num_batched_tokens", max_num_batched_tokens),
                   ("max_num_seqs", max_num_seqs)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            problems.append(input_problem("must be an integer >= 1", key=key, value=v))
    if problems:
        raise InputError(problems)
    cm = CostModel(model, hardware, parallel, quant)
    tp, pp = parallel.tp, parallel.pp
    mem = hardware.memory_bytes
    usable = mem * gpu_memory_utilization

    best = None      # (capacity tokens, stage)
    worst_fit = None
    for j in range(pp):
        last = j == pp - 1
        reserve = activation_reserve_bytes(model, parallel, quant, max_num_batched_tokens,
                                           max_num_seqs, last_stage=last)
        weights = cm.stage_weight_bytes[j]
        free = usable - weights - reserve
        if free <= 0:
            if worst_fit is None or free < worst_fit[0]:
                worst_fit = (free, weights, reserve)
            continue
        kv_tok = cm.stage_kv_bytes_per_token[j]
        blocks = int(free // (kv_tok * block_size))
        if best is None or blocks < best[0]:
            best = (blocks, j, weights, reserve, free, kv_tok)
    gpus = tp * pp
    if worst_fit is not None:
        _, weights, reserve = worst_fit
        raise InputError(input_problem(
            f"{model.name} {quant.weight_dtype} needs {_fmt_gb(cm.weights_bytes_per_replica)} GB "
            f"of weights per replica ({_fmt_gb(weights)} GB per GPU at tp={tp}, pp={pp}) plus "
            f"{_fmt_gb(reserve)} GB of activation reserve per GPU; {gpus}×{hardware.name} has "
            f"{_fmt_gb(mem)} GB per GPU ({_fmt_gb(usable)} GB usable at gpu_memory_utilization="
            f"{gpu_memory_utilization:g}). Use more GPUs (tp/pp), narrower weights "
            f"(weight dtype fp8/int4) or a GPU with more memory", key="parallel"))
    blocks, j, weights, reserve, free, kv_tok = best
    if blocks < 1 or (max_model_len is not None and blocks * block_size < max_model_len):
        need = max_model_len if max_model_len is not None else block_size
        raise InputError(input_problem(
            f"{model.name} on {gpus}×{hardware.name} (tp={tp}, pp={pp}) leaves "
            f"{_fmt_gb(free)} GB per GPU for the KV cache after {_fmt_gb(weights)} GB of weights "
            f"and {_fmt_gb(reserve)} GB of activation reserve: room for {blocks * block_size} "
            f"tokens at {kv_tok / 1e3:.1f} kB per token, fewer than the {need} needed. Use more "
            f"GPUs, a higher gpu_memory_utilization, a narrower KV dtype or a smaller "
            f"max_model_len", key="max_model_len" if max_model_len is not None else "parallel"))
    return MemoryPlan(
        num_gpus=gpus, memory_bytes_per_gpu=mem, gpu_memory_utilization=gpu_memory_utilization,
        usable_bytes_per_gpu=usable, weights_bytes_per_gpu=weights,
        weights_bytes_per_replica=cm.weights_bytes_per_replica,
        activation_reserve_bytes=reserve, free_kv_bytes_per_gpu=free,
        kv_bytes_per_token=cm.kv_bytes_per_token, kv_bytes_per_token_per_gpu=kv_tok,
        block_size=block_size, block_bytes_per_gpu=kv_tok * block_size,
        num_gpu_blocks=blocks, kv_capacity_tokens=blocks * block_size)


# --- roofline capacity helpers ------------------------------------------------------------------
class DecodeCapacity(NamedTuple):
    """Steady decode of ``batch_size`` sequences at ``context_tokens`` each: one step takes
    ``step_time_s``; the replica emits ``tokens_per_s``."""

    batch_size: int
    context_tokens: int
    step_time_s: float
    tokens_per_s: float


def _decode_rate(cm: CostModel, batch: int, context_tokens: int) -> tuple[float, float]:
    """(step seconds, tokens/s) for ``batch`` decodes, with up to pp micro-batches in flight."""
    pp = cm.parallel.pp
    mb = -(-batch // pp)
    agg = BatchAggregates(decode_seqs=mb, decode_ctx_sum=mb * context_tokens, num_sampled=mb)
    step = cm.step_time_s(agg)
    interval = max(cm.stage_time_s(agg), step / pp)
    return step, mb / interval


def decode_capacity(model: ModelSpec, hardware: HardwareSpec,
                    parallel: ParallelConfig = ParallelConfig(),
                    quant: QuantConfig = QuantConfig(), *, context_tokens: int = 1024,
                    max_num_seqs: int = 256, plan: MemoryPlan | None = None,
                    **plan_kw) -> DecodeCapacity:
    """Roofline decode capacity of one replica: the largest batch that fits both
    ``max_num_seqs`` and the KV cache at ``context_tokens`` per sequence, and the tokens/s it
    yields (pp > 1: the batch is split into pp micro-batches kept in flight). ``plan`` (or
    ``plan_kw`` for :func:`memory_plan`) gives the KV capacity."""
    if plan is None:
        plan = memory_plan(model, hardware, parallel, quant, max_num_seqs=max_num_seqs,
                           **plan_kw)
    cm = CostModel(model, hardware, parallel, quant)
    batch = max(1, min(max_num_seqs, plan.kv_capacity_tokens // (context_tokens + 1)))
    step, rate = _decode_rate(cm, batch, context_tokens)
    return DecodeCapacity(batch, context_tokens, step, rate)


def max_throughput_tokens_per_s(model: ModelSpec, hardware: HardwareSpec,
                                parallel: ParallelConfig = ParallelConfig(),
                                quant: QuantConfig = QuantConfig(), **kw) -> float:
    """Decode tokens/s of one replica at its memory-limited batch (see :func:`decode_capacity`)
    — a roofline figure for capacity-weighted routing and planning."""
    return decode_capacity(model, hardware, parallel, quant, **kw).tokens_per_s


def request_capacity_per_s(model: ModelSpec, hardware: HardwareSpec,
                           parallel: ParallelConfig = ParallelConfig(),
                           quant: QuantConfig = QuantConfig(), *, prompt_tokens: int,
                           output_tokens: int, max_num_seqs: int = 256,
                           max_num_batched_tokens: int = 8192, **plan_kw) -> float:
    """Rough sustainable request rate of one replica for requests of ``prompt_tokens`` in and
    ``output_tokens`` out: 1 / (prefill seconds per request + decode seconds per request),
    with prefill at the per-token rate of a full ``max_num_batched_tokens`` chunk and decode at
    the memory-limited batch at the mean context ``prompt + output/2``. An upper-bound style
    estimate for planners (ignores queueing and prefill/decode interference)."""
    plan = memory_plan(model, hardware, parallel, quant, max_num_seqs=max_num_seqs,
                       max_num_batched_tokens=max_num_batched_tokens, **plan_kw)
    cm = CostModel(model, hardware, parallel, quant)
    chunk = min(max_num_batched_tokens, max(prompt_tokens, 1))
    agg = BatchAggregates.from_pairs([(chunk, 0)] if chunk > 1 else [(1, 0)])
    per_tok = max(cm.stage_time_s(agg), cm.step_time_s(agg) / parallel.pp) / chunk
    prefill_s = per_tok * prompt_tokens
    ctx = prompt_tokens + output_tokens // 2
    cap = decode_capacity(model, hardware, parallel, quant, context_tokens=ctx,
                          max_num_seqs=max_num_seqs, plan=plan)
    decode_s = output_tokens / cap.tokens_per_s if output_tokens else 0.0
    return 1.0 / (prefill_s + decode_s)
