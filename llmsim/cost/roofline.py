"""Roofline cost model: the latency of one engine step from per-operator FLOPs and bytes.

Contract (DESIGN §4). A step is a batch of ``(n_new_tokens, n_context_tokens)`` pairs, summarised
by :class:`~llmsim.cost.types.BatchAggregates`. Every operator (kernel) costs

    kernel_launch_s + max(flops / (peak[dtype] · eff_compute), bytes / (mem_bw · eff_mem))

and a step is the sum over operators and layers, plus tensor-parallel all-reduces, pipeline
sends and a fixed ``step_overhead_s``. All numbers are per GPU: with tensor parallelism each GPU
runs its shard and the shards run in parallel. The efficiency parameters are
:class:`~llmsim.hardware.spec.Efficiency` fields, fitted by ``llmsim calibrate``
(:mod:`llmsim.cost.calibrate`); every term added for calibration defaults to "no effect".

Host side: the host issues every kernel (``host_kernel_s`` each) while the GPU runs the earlier
ones, so the GPU part of a step takes ``max(GPU time, kernels · host_kernel_s)``; then
``step_overhead_s``, ``first_token_overhead_s`` per request whose prompt completes in the step
(``num_sampled - decode_seqs``) and ``decode_seq_overhead_s`` per decoding sequence are added.
With ``pp > 1`` the comparison is made per stage in ``stage_time_s`` and for the whole step
(all stages' kernels) in ``step_time_s``.

Operators (``T`` = tokens in the step = Σn, ``S`` = sampled tokens, per layer unless noted):

- GEMMs (qkv_proj, o_proj, gate_up_proj, down_proj, router, shared experts, MLA projections):
  FLOPs ``2·T·d_in·d_out``, bytes = weights + ``T·(d_in + d_out)`` activations. Compute runs at
  the activation dtype's peak (``HardwareSpec.peak_for``) times the shape-aware efficiency
  ``eff(M) = gemm_eff_max·M/(M + gemm_half_tokens)`` with ``M`` = rows of the GEMM; memory at
  ``mem_eff``; each GEMM kernel adds ``gemm_fixed_s`` to ``kernel_launch_s``.
- Attention, prefill pairs: FLOPs ``2·Σ n(c + n/2)·H·(d_qk + d_v)`` (= ``4·Σ n(c+n/2)·H·d``
  for standard heads; causal), bytes = K and V of the ``c + n`` tokens at the KV dtype + Q and
  O; compute: the causal ``n²/2`` part at ``attn_prefill_eff``, the ``n·c`` context part at
  ``attn_context_eff``; plus ``attn_prefill_fixed_s`` per layer. Decode pairs: FLOPs
  ``2·Σ(c+1)·H·(d_qk + d_v)``, bytes = KV of all ``c + 1`` tokens + Q and O at
  ``attn_decode_mem_eff``, never below ``attn_decode_floor_s``; plus ``attn_decode_fixed_s``
  and ``attn_decode_seq_s`` per decoding sequence, per layer. Attention computes in 16-bit
  (the activation dtype when it is 16 or 32 bits wide): FP8 attention kernels are not modelled.
- GQA/MQA through ``num_kv_heads``; KV heads are split by tp and replicated when
  ``tp > num_kv_heads``. MLA (DeepSeek-V2/V3): the cache holds the compressed latent
  (``kv_lora_rank + qk_rope_head_dim`` values per token per layer, not ×2, replicated on every
  tp rank); decode uses the absorbed form (``d_qk = kv_lora_rank + rope``, ``d_v =
  kv_lora_rank``, the latent read once for all heads); prefill materialises per-head K and V
  (``d_qk = nope + rope``, ``d_v = v_head_dim``) as vLLM and DeepSeek do. ``kv_b_proj`` runs on
  the latents of the prefill context + new tokens, and as the absorbed q/o transforms of the
  decode tokens (rows ``M = Σc_prefill + Σn_prefill + decodes``).
- Element-wise, memory-bound at a per-family fraction of the bandwidth
  (``Efficiency.elementwise_eff``): norms (2 per layer + the final norm, + MLA's latent norms;
  ``norm_mem_eff``), rotary (``rotary_mem_eff``), residual adds (2 per layer;
  ``residual_mem_eff``), activation (SiLU·mul; ``activation_mem_eff``), embedding lookup
  (``embedding_mem_eff``), KV-cache write (``elementwise_mem_eff``, also the fallback of the
  others).
- MoE layers (the last ``num_layers - num_dense_layers``): router GEMM (replicated); routed
  experts: FLOPs for ``T·top_k`` token-expert rows, weight bytes for the expected distinct
  experts ``D = E·(1 − (1 − k/E)^T)``, GEMM efficiency at ``M = T·k/D`` rows per expert;
  shared experts as dense GEMMs. With ``ep > 1`` experts are split over ``ep`` ranks of the tp
  group (per-GPU work and bytes unchanged in expectation) and each MoE layer adds a dispatch and a
  combine all-to-all of ``T/ep·k·hidden`` activations per GPU.
- lm_head (vocab split by tp) only for the ``S`` sampled tokens, then a gather of the logits
  across tp (all-gather cost). Embeddings, lm_head, router and norms are stored at
  ``max(weight width, 16 bits)`` (quantized checkpoints keep them unquantized).
- Tensor parallel: two all-reduces of ``T·hidden`` activations per layer (+1 after the
  vocab-parallel embedding), ring cost from :mod:`llmsim.cost.comm` over
  ``hardware.intra_node`` (``inter_node`` when tp > gpus_per_node).
- Pipeline parallel: layers split into ``pp`` stages, the first ``num_layers % pp`` stages get
  one extra layer (so the bottleneck stage has ``ceil(L/pp)``); between stages a send of the
  hidden state and the residual (``2·T·hidden`` activations) over ``intra_node``, or
  ``inter_node`` when the two stages' GPUs are on different nodes (stage ``s`` owns GPUs
  ``[s·tp, (s+1)·tp)`` of ``gpus_per_node``-GPU nodes).

``step_time_s`` is the full latency of one (micro-)batch through all stages;
``stage_time_s`` is how long the busiest stage is occupied by it (+ the step overhead; the sends
overlap the next micro-batch), which bounds the interval between micro-batches when up to ``pp``
are in flight. With ``pp == 1`` the two are equal.

Hot path: ``CostModel.__init__`` folds every operator whose cost depends only on ``T`` (all GEMMs
with ``M = T``, element-wise ops, collectives, overheads), weighted by how many layers run it,
into one convex piecewise-linear function of ``T`` (sorted breakpoints + slope/intercept per
piece). A call does one bisect, a few lines for attention, MoE experts and lm_head, and no
allocation. :meth:`CostModel.breakdown` recomputes every operator independently (the tests
check that both agree).
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from llmsim.cost import comm
from llmsim.cost.types import DTYPE_BITS, BatchAggregates, ParallelConfig, QuantConfig
from llmsim.errors import InputError, Problem, input_problem
from llmsim.hardware.spec import HardwareSpec
from llmsim.models.spec import ModelSpec

__all__ = ["OpCost", "StepCost", "CostModel", "step_time", "kv_bytes_per_token_per_layer",
           "gemm_efficiency", "BOUNDS"]

BOUNDS = ("compute", "memory", "overhead", "comm")

# Operator groups: how many times per step an operator runs (see CostModel._multipliers).
_LAYER, _DENSE, _MOE, _FIRST, _LAST, _STEP, _SEND = (
    "layer", "dense", "moe", "first", "last", "step", "send")

# Element-wise operator name -> Efficiency family with its own bandwidth fraction.
_EW_FAMILY = {"norms": "norm", "rotary": "rotary", "activation": "activation",
              "residual": "residual", "embedding": "embedding"}

# Display order of the breakdown rows.
_ORDER = ("embedding", "norms", "qkv_proj", "qkv_a_proj", "q_proj", "kv_a_proj", "q_b_proj",
          "rotary", "kv_cache_write", "kv_b_proj", "attn_prefill", "attn_decode", "o_proj",
          "residual", "gate_up_proj", "activation", "down_proj", "router", "expert_gate_up",
          "expert_down", "shared_gate_up_proj", "shared_down_proj", "lm_head", "tp_allreduce",
          "ep_alltoall", "logits_gather", "pp_send", "host_issue", "seq_overhead",
          "step_overhead")


@dataclass(frozen=True)
class OpCost:
    """One operator family summed over the layers (and stages) that run it in one step.

    ``flops`` and ``bytes`` are per GPU (one tp shard), ``intensity = flops / bytes`` (FLOP per
    byte; 0 when no bytes), ``time_s`` the summed latency, ``count`` the kernel launches (or
    collectives / sends). ``bound`` is ``compute`` or ``memory`` (the larger roofline term),
    ``overhead`` when launch latency or the decode-attention floor exceeds both, ``comm`` for
    communication. ``compute_s``, ``memory_s`` and ``launch_s`` are the summed terms behind
    ``time_s``.
    """

    name: str
    flops: float
    bytes: float
    intensity: float
    bound: str
    time_s: float
    count: int
    compute_s: float = 0.0
    memory_s: float = 0.0
    launch_s: float = 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "flops": self.flops, "bytes": self.bytes,
                "intensity": self.intensity, "bound": self.bound, "time_s": self.time_s,
                "count": self.count, "compute_s": self.compute_s, "memory_s": self.memory_s,
                "launch_s": self.launch_s}


@dataclass(frozen=True)
class StepCost:
    """Latency of one step and its per-operator breakdown (``sum(op.time_s) == time_s``)."""

    time_s: float
    ops: list[OpCost] = field(default_factory=list)


class _Op(NamedTuple):
    """An operator whose cost is a function of T only (per group instance, per GPU)."""

    name: str
    group: str
    kind: str          # gemm | elementwise | comm | const
    kernels: int       # launches (or collectives) per instance
    flops1: float      # FLOPs per token
    bytes0: float      # bytes independent of T (weights)
    bytes1: float      # bytes per token
    t0: float = 0.0    # comm/const: time = t0 + t1·T
    t1: float = 0.0
    weights: float = 0.0   # stored weight bytes per GPU per instance (memory plan)


def gemm_efficiency(hardware: HardwareSpec, rows: float) -> float:
    """Shape-aware GEMM efficiency ``gemm_eff_max · M / (M + gemm_half_tokens)``."""
    eff = hardware.efficiency
    return eff.gemm_eff_max * rows / (rows + eff.gemm_half_tokens)


def kv_bytes_per_token_per_layer(model: ModelSpec, quant: QuantConfig, tp: int = 1) -> float:
    """KV-cache bytes one token occupies in one layer on one GPU of a tp group:
    ``2·ceil(num_kv_heads/tp)·head_dim·kv_bytes`` (KV heads replicated when tp > num_kv_heads);
    for MLA ``(kv_lora_rank + qk_rope_head_dim)·kv_bytes`` on every rank (the latent is shared
    by all heads and replicated across tp). ``tp=1`` gives the model's own figure."""
    if model.is_mla:
        return (model.kv_lora_rank + model.qk_rope_head_dim) * quant.kv_bytes
    return 2.0 * math.ceil(model.num_kv_heads / tp) * model.head_dim * quant.kv_bytes


def _attention_dtype(quant: QuantConfig) -> str:
    return quant.activation_dtype if DTYPE_BITS[quant.activation_dtype] >= 16 else "bf16"


def _validate(model: ModelSpec, hardware: HardwareSpec, parallel: ParallelConfig,
              quant: QuantConfig) -> None:
    problems: list[Problem] = []
    tp, pp, ep = parallel.tp, parallel.pp, parallel.ep
    for key, v in (("tp", tp), ("pp", pp), ("ep", ep)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            problems.append(input_problem("must be an integer >= 1", key=f"parallel.{key}",
                                          value=v))
    for key in ("weight_dtype", "activation_dtype", "kv_cache_dtype"):
        dv = getattr(quant, key)
        if dv not in DTYPE_BITS:
            problems.append(input_problem(f"unknown dtype; allowed: {', '.join(DTYPE_BITS)}",
                                          key=f"quant.{key}", value=dv))
    if problems:
        raise InputError(problems)
    H, Hkv = model.num_attention_heads, model.num_kv_heads
    if H % tp:
        problems.append(input_problem(
            f"{model.name} has {H} attention heads, which tp={tp} does not divide; use a tp "
            f"that divides {H}", key="parallel.tp", value=tp))
    elif not model.is_mla and Hkv % tp and tp % Hkv:
        problems.append(input_problem(
            f"{model.name} has {Hkv} KV heads; tp must divide it or be a multiple of it",
            key="parallel.tp", value=tp))
    if pp > model.num_layers:
        problems.append(input_problem(
            f"{model.name} has only {model.num_layers} layers to split into pipeline stages",
            key="parallel.pp", value=pp))
    if ep > 1:
        if not model.is_moe:
            problems.append(input_problem(
                f"expert parallelism needs a mixture-of-experts model; {model.name} is dense "
                "(use ep: 1)", key="parallel.ep", value=ep))
        elif tp % ep or model.num_experts % ep:
            problems.append(input_problem(
                f"ep splits the {model.num_experts} experts over ranks of the tp={tp} group: it "
                f"must divide both tp and {model.num_experts}", key="parallel.ep", value=ep))
    for key, dt in (("quant.activation_dtype", quant.activation_dtype),
                    ("quant.activation_dtype", _attention_dtype(quant))):
        try:
            hardware.peak_for(dt)
        except KeyError:
            problems.append(input_problem(
                f"{hardware.name} has no compute peak for {dt} (it has "
                f"{', '.join(sorted(hardware.peak_flops_per_s))})", key=key, value=dt))
            break
    if problems:
        raise InputError(problems)


def _stage_sizes(num_layers: int, pp: int) -> list[int]:
    base, extra = divmod(num_layers, pp)
    return [base + (1 if j < extra else 0) for j in range(pp)]


class CostModel:
    """Step latency of one replica for a fixed (model, hardware, parallel plan, quantization).

    Public attributes (per GPU unless noted): ``stage_layers`` (layers per pipeline stage),
    ``stage_weight_bytes`` (weights stored on each GPU of each stage), ``weights_bytes_per_gpu``
    (the largest), ``weights_bytes_per_replica`` (all GPUs, replicas of small tensors included),
    ``stage_kv_bytes_per_token`` (KV bytes per token on a GPU of each stage),
    ``kv_bytes_per_token`` (whole model, all layers, one copy).
    Raises :class:`InputError` for a plan the model cannot use (tp not dividing the heads,
    pp > layers, ep on a dense model, a dtype the hardware cannot compute in).
    """

    def __init__(self, model: ModelSpec, hardware: HardwareSpec,
                 parallel: ParallelConfig = ParallelConfig(),
                 quant: QuantConfig = QuantConfig()):
        _validate(model, hardware, parallel, quant)
        self.model, self.hardware, self.parallel, self.quant = model, hardware, parallel, quant
        eff = hardware.efficiency
        tp, pp, ep = parallel.tp, parallel.pp, parallel.ep
        h, L, V = model.hidden_size, model.num_layers, model.vocab_size
        wb, ab, kvb = quant.weight_bytes, quant.activation_bytes, quant.kv_bytes
        hb = max(wb, 2.0)
        bw = hardware.memory_bandwidth_bytes_per_s
        self._gemm_peak = hardware.peak_for(quant.activation_dtype)
        self._attn_peak = hardware.peak_for(_attention_dtype(quant))
        self._launch = eff.kernel_launch_s
        self._glaunch = eff.kernel_launch_s + eff.gemm_fixed_s    # per GEMM kernel
        self._half = eff.gemm_half_tokens
        self._gmax = eff.gemm_eff_max
        self._bw = bw
        self._mem_eff = eff.mem_eff
        self._ew_eff = eff.elementwise_mem_eff
        self._ew_effs = {name: eff.elementwise_eff(fam) for name, fam in _EW_FAMILY.items()}
        gemm_c = 1.0 / (self._gemm_peak * eff.gemm_eff_max)    # s per FLOP at eff_max
        mem_c = 1.0 / (bw * eff.mem_eff)                         # s per byte of a GEMM

        # --- layer counts and pipeline stages -------------------------------------------
        self._L = L
        self._L_moe = (L - model.num_dense_layers) if model.is_moe else 0
        self._L_dense = L - self._L_moe
        self.stage_layers = tuple(_stage_sizes(L, pp))
        starts = [sum(self.stage_layers[:j]) for j in range(pp)]
        stage_dense = tuple(max(0, min(s + n, self._L_dense) - s)
                            for s, n in zip(starts, self.stage_layers))

        # --- links --------------------------------------------------------------------------
        g = hardware.gpus_per_node
        tp_link = hardware.intra_node if tp <= g else hardware.inter_node
        ar0, ar_s = comm.allreduce_coeffs(tp, tp_link, eff)

        # --- T-only operators -------------------------------------------------------------
        ops: list[_Op] = []

        def gemm(name, group, d_in, d_out, elem_bytes=wb):
            w = d_in * d_out * elem_bytes
            ops.append(_Op(name, group, "gemm", 1, 2.0 * d_in * d_out, w,
                           (d_in + d_out) * ab, weights=w))

        def elementwise(name, group, bytes1, flops1, kernels=1, weights=0.0, bytes0=None):
            # bytes0: bytes read per call regardless of T (default: all stored weights)
            ops.append(_Op(name, group, "elementwise", kernels, flops1,
                           weights if bytes0 is None else bytes0, bytes1, weights=weights))

        def comm_op(name, group, kernels, t0, t1, bytes1):
            ops.append(_Op(name, group, "comm", kernels, 0.0, 0.0, bytes1, t0, t1))

        H = model.num_attention_heads
        Hg = H // tp
        if model.is_mla:
            nope, rope, vd = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
            ql, kvl = model.q_lora_rank, model.kv_lora_rank
        kv_layer = kv_bytes_per_token_per_layer(model, quant, tp)
        kv_layer_act = kv_layer / kvb * ab          # the same values at the activation width

        elementwise("embedding", _FIRST, h * (hb + ab), 0.0, weights=V / tp * h * hb,
                    bytes0=0.0)      # a lookup reads only the T rows it needs
        if tp > 1:
            comm_op("tp_allreduce", _FIRST, 1, ar0, ar_s * h * ab, h * ab)
        elementwise("norms", _LAYER, 2 * 2 * h * ab, 2 * 4 * h, kernels=2, weights=2 * h * hb)
        if model.is_mla:
            n_lat = 2 if ql else 1
            elementwise("norms", _LAYER, 2 * (ql + kvl) * ab, 4 * (ql + kvl), kernels=n_lat,
                        weights=(ql + kvl) * hb)
            if ql:
                gemm("qkv_a_proj", _LAYER, h, ql + kvl + rope)
                gemm("q_b_proj", _LAYER, ql, Hg * (nope + rope))
            else:
                gemm("q_proj", _LAYER, h, Hg * (nope + rope))
                gemm("kv_a_proj", _LAYER, h, kvl + rope)
            elementwise("rotary", _LAYER, 2 * (Hg + 1) * rope * ab, 3 * (Hg + 1) * rope)
            gemm("o_proj", _LAYER, Hg * vd, h)
        else:
            d = model.head_dim
            Hkv_g = math.ceil(model.num_kv_heads / tp)
            gemm("qkv_proj", _LAYER, h, (Hg + 2 * Hkv_g) * d)
            elementwise("rotary", _LAYER, 2 * (Hg + Hkv_g) * d * ab, 3 * (Hg + Hkv_g) * d)
            gemm("o_proj", _LAYER, Hg * d, h)
        elementwise("kv_cache_write", _LAYER, kv_layer_act + kv_layer, 0.0)
        elementwise("residual", _LAYER, 2 * 3 * h * ab, 2 * h, kernels=2)
        if tp > 1:
            comm_op("tp_allreduce", _LAYER, 2, 2 * ar0, 2 * ar_s * h * ab, 2 * h * ab)

        mats = 3 if model.gated_mlp else 2
        if self._L_dense:
            Ig = model.intermediate_size / tp
            gemm("gate_up_proj", _DENSE, h, (mats - 1) * Ig)
            elementwise("activation", _DENSE, mats * Ig * ab, 4 * Ig)
            gemm("down_proj", _DENSE, Ig, h)
        E, k = model.num_experts, model.num_experts_per_tok
        S_exp = model.num_shared_experts
        if self._L_moe:
            Ieg = model.moe_intermediate_size / tp
            gemm("router", _MOE, h, E, elem_bytes=hb)
            elementwise("activation", _MOE, (k + S_exp) * mats * Ieg * ab, 4 * (k + S_exp) * Ieg)
            if S_exp:
                gemm("shared_gate_up_proj", _MOE, h, (mats - 1) * S_exp * Ieg)
                gemm("shared_down_proj", _MOE, S_exp * Ieg, h)
            if ep > 1:
                a0, a_s = comm.alltoall_coeffs(ep, tp_link, eff)
                per_tok = k * h * ab / ep
                comm_op("ep_alltoall", _MOE, 2, 2 * a0, 2 * a_s * per_tok, 2 * per_tok)
        elementwise("norms", _LAST, 2 * h * ab, 4 * h, weights=h * hb)
        ops.append(_Op("step_overhead", _STEP, "const", 1, 0.0, 0.0, 0.0, eff.step_overhead_s))
        if pp > 1:
            t0 = t1 = 0.0
            per_tok = 2 * h * ab
            for j in range(pp - 1):
                crosses = any((j * tp + r) // g != ((j + 1) * tp + r) // g for r in range(tp))
                s0, s1 = comm.send_coeffs(hardware.inter_node if crosses else hardware.intra_node,
                                          eff)
                t0 += s0
                t1 += s1 * per_tok
            comm_op("pp_send", _SEND, pp - 1, t0, t1, (pp - 1) * per_tok)
        self._ops = tuple(ops)

        # --- operators with their own variables (coefficients in seconds) ----------------
        attn_c = 1.0 / (self._attn_peak * eff.attn_prefill_eff)
        ctx_c = 1.0 / (self._attn_peak * eff.context_eff)
        pre_m = 1.0 / (bw * eff.mem_eff)
        dec_m = 1.0 / (bw * eff.attn_decode_mem_eff)
        if model.is_mla:
            dqk_p, dv_p = nope + rope, vd
            dqk_d, dv_d = kvl + rope, kvl
            kv_pre_tok = (Hg * (nope + vd) + rope) * ab      # materialised K (nope+shared rope), V
        else:
            dqk_p = dv_p = dqk_d = dv_d = model.head_dim
            kv_pre_tok = kv_layer
        # per (query, key) pair FLOPs, per token bytes
        self._ap_flops = 2.0 * Hg * (dqk_p + dv_p)
        self._ap_kv_bytes = kv_pre_tok
        self._ap_qo_bytes = Hg * (dqk_p + dv_p) * ab
        self._ad_flops = 2.0 * Hg * (dqk_d + dv_d)
        self._ad_kv_bytes = kv_layer
        self._ad_qo_bytes = Hg * (dqk_d + dv_d) * ab
        self._ap_c = self._ap_flops * attn_c
        self._ap_cc = self._ap_flops * ctx_c
        self._ap_mk = self._ap_kv_bytes * pre_m
        self._ap_mq = self._ap_qo_bytes * pre_m
        self._ad_c = self._ad_flops * attn_c
        self._ad_mk = self._ad_kv_bytes * dec_m
        self._ad_mq = self._ad_qo_bytes * dec_m
        self._floor = eff.attn_decode_floor_s
        self._attn_c, self._ctx_c, self._pre_m, self._dec_m = attn_c, ctx_c, pre_m, dec_m
        self._pfix = self._launch + eff.attn_prefill_fixed_s
        self._dfix = self._launch + eff.attn_decode_fixed_s
        self._dseq = eff.attn_decode_seq_s

        self._mla = model.is_mla
        layer_special_weights = 0.0
        if self._mla:
            d_out = Hg * (nope + vd)
            self._kvb_flops = 2.0 * kvl * d_out
            self._kvb_w = kvl * d_out * wb
            self._kvb_a = (kvl + d_out) * ab
            self._kvb_c = self._kvb_flops * gemm_c
            self._kvb_m0 = self._kvb_w * mem_c
            self._kvb_m1 = self._kvb_a * mem_c
            layer_special_weights += self._kvb_w

        self._E, self._k = E, k
        moe_special_weights = 0.0
        if self._L_moe:
            Ieg = model.moe_intermediate_size / tp
            self._q_miss = 1.0 - k / E
            # gate_up and down of one routed expert: FLOPs per row, weight bytes, act bytes/row
            self._eu = (2.0 * h * (mats - 1) * Ieg, h * (mats - 1) * Ieg * wb,
                        (h + (mats - 1) * Ieg) * ab)
            self._ed = (2.0 * Ieg * h, Ieg * h * wb, (Ieg + h) * ab)
            self._eu_c = (self._eu[0] * gemm_c, self._eu[1] * mem_c, self._eu[2] * mem_c)
            self._ed_c = (self._ed[0] * gemm_c, self._ed[1] * mem_c, self._ed[2] * mem_c)
            moe_special_weights = E * (self._eu[1] + self._ed[1])

        Vg = V / tp
        self._lm_flops = 2.0 * h * Vg
        self._lm_w = Vg * h * hb
        self._lm_a = (h + Vg) * ab
        self._lm_c = self._lm_flops * gemm_c
        self._lm_m0 = self._lm_w * mem_c
        self._lm_m1 = self._lm_a * mem_c
        self._lg0, lg_s = comm.allgather_coeffs(tp, tp_link, eff)
        self._lg_bytes = V * ab
        self._lg1 = lg_s * self._lg_bytes

        # --- memory inventory --------------------------------------------------------------
        per_group_w = {grp: 0.0 for grp in (_LAYER, _DENSE, _MOE, _FIRST, _LAST)}
        for op in self._ops:
            if op.group in per_group_w:
                per_group_w[op.group] += op.weights
        per_group_w[_LAYER] += layer_special_weights
        per_group_w[_MOE] += moe_special_weights
        lm_stored = 0.0 if (model.tie_word_embeddings and pp == 1) else self._lm_w
        stage_w = []
        for j in range(pp):
            n, nd = self.stage_layers[j], stage_dense[j]
            w = n * per_group_w[_LAYER] + nd * per_group_w[_DENSE] + (n - nd) * per_group_w[_MOE]
            if j == 0:
                w += per_group_w[_FIRST]
            if j == pp - 1:
                w += per_group_w[_LAST] + lm_stored
            stage_w.append(w)
        self.stage_weight_bytes = tuple(stage_w)
        self.weights_bytes_per_gpu = max(stage_w)
        self.weights_bytes_per_replica = tp * sum(stage_w, 0.0)   # a float start: mypyc 2.4 types sum(list[float]) as int
        self.stage_kv_bytes_per_token = tuple(n * kv_layer for n in self.stage_layers)
        self.kv_bytes_per_token = L * kv_bytes_per_token_per_layer(model, quant, 1)
        self.num_gpus = tp * pp

        # --- fast path: piecewise-linear T functions ---------------------------------------
        full = {_LAYER: L, _DENSE: self._L_dense, _MOE: self._L_moe, _FIRST: 1, _LAST: 1,
                _STEP: 1, _SEND: 1}
        self._full_mult = full
        self._bp, self._ic, self._sl = self._piecewise(full)
        stages = {}
        for j in range(pp):
            n, nd = self.stage_layers[j], stage_dense[j]
            mult = {_LAYER: n, _DENSE: nd, _MOE: n - nd, _FIRST: int(j == 0),
                    _LAST: int(j == pp - 1), _STEP: 1, _SEND: 0}
            key = tuple(sorted(mult.items()))
            if key not in stages:
                bp, ic, sl = self._piecewise(mult)
                stages[key] = (n, n - nd, j == pp - 1, bp, ic, sl, self._t_kernels(mult))
        self._stages = tuple(stages.values())
        self._pp = pp

        # --- host side -----------------------------------------------------------------------
        self._ovh = eff.step_overhead_s
        self._fto = eff.first_token_overhead_s
        self._dso = eff.decode_seq_overhead_s
        self._hk = eff.host_kernel_s
        self._host = bool(self._hk or self._fto or self._dso)
        self._k_full = self._t_kernels(full)
        self._k_lm = 1 + (1 if self._lg1 else 0)       # lm_head (+ logits gather)
        # kernels of every step: T-only ops, MLA kv_b_proj per layer, 2 expert GEMMs per MoE layer
        self._k_step0 = self._k_full + (L if self._mla else 0) + 2 * self._L_moe
        self._lines: dict = {}     # decode_seqs -> decode_step_line coefficients
        self._pieces: dict = {}    # decode_seqs -> decode_step_pieces

    # ------------------------------------------------------------------------------------
    def _t_kernels(self, mult: dict) -> int:
        """Kernels (and collectives/sends) launched by the T-only operators under ``mult``."""
        return sum(mult[op.group] * op.kernels for op in self._ops if op.kind != "const")

    def _step_kernels(self, k_t, n_layers, n_moe, last, ps, ds, ns) -> int:
        """Kernels one step launches on a GPU of a stage with ``k_t`` T-only kernels."""
        per_layer = (1 if ps else 0) + (1 if ds else 0) + (1 if self._mla else 0)
        return k_t + n_layers * per_layer + 2 * n_moe + (self._k_lm if last and ns else 0)

    def _host_s(self, t, k_t, n_layers, n_moe, last, ps, ds, ns) -> float:
        """Apply the host side to a GPU-side time ``t`` (which includes step_overhead_s):
        ``max(t - overhead, kernels · host_kernel_s) + overhead + per-sequence overheads``."""
        if self._hk:
            h = self._hk * self._step_kernels(k_t, n_layers, n_moe, last, ps, ds, ns)
            if h > t - self._ovh:
                t = h + self._ovh
        first = ns - ds
        return t + (first * self._fto if first > 0 else 0.0) + ds * self._dso

    def _op_lines(self, op: _Op) -> tuple[float, list[tuple[float, float]]]:
        """(constant launch time, [(slope, intercept) lines whose max is the op's time])."""
        if op.kind == "gemm":
            cs = op.flops1 / (self._gemm_peak * self._gmax)
            m = 1.0 / (self._bw * self._mem_eff)
            return (op.kernels * self._glaunch,
                    [(cs, cs * self._half), (op.bytes1 * m, op.bytes0 * m)])
        if op.kind == "elementwise":
            m = 1.0 / (self._bw * self._ew_effs.get(op.name, self._ew_eff))
            return op.kernels * self._launch, [(op.bytes1 * m, op.bytes0 * m)]
        return 0.0, [(op.t1, op.t0)]          # comm and const: affine in T, no launch

    def _piecewise(self, mult: dict) -> tuple[tuple, tuple, tuple]:
        terms = []
        const = 0.0
        bps: set[float] = set()
        for op in self._ops:
            w = mult[op.group]
            if not w:
                continue
            c, lines = self._op_lines(op)
            const += w * c
            terms.append((w, lines))
            for a in range(len(lines)):
                for b in range(a + 1, len(lines)):
                    (s1, i1), (s2, i2) = lines[a], lines[b]
                    if s1 != s2:
                        x = (i2 - i1) / (s1 - s2)
                        if x > 0:
                            bps.add(x)
        bp = sorted(bps)
        samples = ([bp[0] / 2] if bp else [1.0]) + \
            [(bp[i] + bp[i + 1]) / 2 for i in range(len(bp) - 1)] + ([bp[-1] + 1.0] if bp else [])
        ics, sls = [], []
        for x in samples:
            s_tot, i_tot = 0.0, const
            for w, lines in terms:
                s, i = max(lines, key=lambda ln: ln[0] * x + ln[1])
                s_tot += w * s
                i_tot += w * i
            ics.append(i_tot)
            sls.append(s_tot)
        return tuple(bp), tuple(ics), tuple(sls)

    # --- special operators (per instance) ------------------------------------------------
    def _attn_layer_s(self, ps: float, pt: float, pnc: float, pn2: float, pc: float, ds: float,
                      dc: float) -> float:
        """Attention (+ MLA kv_b_proj) time of one layer."""
        a = 0.0
        if ps:
            c = pnc * self._ap_cc + 0.5 * pn2 * self._ap_c
            m = (pc + pt) * self._ap_mk + pt * self._ap_mq
            a += self._pfix + (c if c > m else m)
        if ds:
            n = dc + ds
            c = n * self._ad_c
            m = n * self._ad_mk + ds * self._ad_mq
            x = c if c > m else m
            if x < self._floor:
                x = self._floor
            a += self._dfix + ds * self._dseq + x
        if self._mla:
            M = pc + pt + ds
            c = (M + self._half) * self._kvb_c
            m = self._kvb_m0 + M * self._kvb_m1
            a += self._glaunch + (c if c > m else m)
        return a

    def _experts_s(self, T) -> float:
        """Routed-expert GEMMs (gate_up + down) of one MoE layer."""
        D = self._E * (1.0 - self._q_miss ** T)
        Tk = T * self._k
        rows = Tk + self._half * D
        fc, wm, am = self._eu_c
        c = fc * rows
        m = wm * D + am * Tk
        t = self._glaunch + (c if c > m else m)
        fc, wm, am = self._ed_c
        c = fc * rows
        m = wm * D + am * Tk
        return t + self._glaunch + (c if c > m else m)

    def _lm_s(self, S: float) -> float:
        """lm_head for S sampled tokens + the logits gather across tp."""
        c = (S + self._half) * self._lm_c
        m = self._lm_m0 + S * self._lm_m1
        t = self._glaunch + (c if c > m else m)
        if self._lg1:
            t += self._lg0 + S * self._lg1
        return t

    # --- public hot path -----------------------------------------------------------------
    def step_time_s(self, agg: BatchAggregates) -> float:
        """Latency of one engine step (all pipeline stages + sends + overhead), in seconds.
        A batch without tokens costs 0."""
        ps, pt, pnc, pn2, pc, ds, dc, ns = agg
        T = pt + ds
        if T <= 0:
            return 0.0
        i = bisect_right(self._bp, T)
        t = self._ic[i] + self._sl[i] * T
        t += self._L * self._attn_layer_s(ps, pt, pnc, pn2, pc, ds, dc)
        if self._L_moe:
            t += self._L_moe * self._experts_s(T)
        if ns:
            t += self._lm_s(ns)
        if self._host:     # inlined _host_s for the whole step (hot path)
            if self._hk:
                k = self._k_step0 + (self._L if ps else 0) + (self._L if ds else 0) \
                    + (self._k_lm if ns else 0)
                h = self._hk * k
                if h > t - self._ovh:
                    t = h + self._ovh
            first = ns - ds
            t += (first * self._fto if first > 0 else 0.0) + ds * self._dso
        return t

    def stage_time_s(self, agg: BatchAggregates) -> float:
        """Time the busiest pipeline stage is occupied by this (micro-)batch, step overhead
        included (sends excluded: they overlap the next micro-batch). Equals
        :meth:`step_time_s` when pp == 1."""
        if self._pp == 1:
            return self.step_time_s(agg)
        ps, pt, pnc, pn2, pc, ds, dc, ns = agg
        T = pt + ds
        if T <= 0:
            return 0.0
        attn = self._attn_layer_s(ps, pt, pnc, pn2, pc, ds, dc)
        ex = self._experts_s(T) if self._L_moe else 0.0
        lm = self._lm_s(ns) if ns else 0.0
        best = 0.0
        for n, nm, last, bp, ic, sl, kt in self._stages:
            i = bisect_right(bp, T)
            t = ic[i] + sl[i] * T + n * attn + nm * ex
            if last:
                t += lm
            if self._host:
                t = self._host_s(t, kt, n, nm, last, ps, ds, ns)
            if t > best:
                best = t
        return best

    def decode_step_line(self, decode_seqs: int) -> tuple:
        """Coefficients ``(a1, b1, a2, b2, g, q)`` of a pure-decode step of ``decode_seqs``
        sequences as a function of its context sum ``c``::

            step_time_s(BatchAggregates(decode_seqs=n, decode_ctx_sum=c, num_sampled=n))
                == max(a1 + b1·c, a2 + b2·c, g) + q        (to float rounding, ~1e-15)

        (attention is the max of its compute and memory lines and its floor; the host side
        adds a kernel-launch floor and per-sequence overheads). :meth:`decode_step_s` and
        :meth:`decode_step_pieces` evaluate it; memoised per ``decode_seqs``."""
        line = self._lines.get(decode_seqs)
        if line is not None:
            return line
        ds = int(decode_seqs)
        if ds <= 0:
            raise ValueError("decode_step_line needs decode_seqs >= 1")
        T = ds
        i = bisect_right(self._bp, T)
        P = self._ic[i] + self._sl[i] * T
        a = self._dfix + ds * self._dseq
        if self._mla:
            c1 = (ds + self._half) * self._kvb_c
            m1 = self._kvb_m0 + ds * self._kvb_m1
            a += self._glaunch + (c1 if c1 > m1 else m1)
        P += self._L * a
        if self._L_moe:
            P += self._L_moe * self._experts_s(T)
        P += self._lm_s(ds)
        L = self._L
        a1, b1 = P + L * self._ad_c * ds, L * self._ad_c
        a2, b2 = P + L * (self._ad_mk * ds + ds * self._ad_mq), L * self._ad_mk
        g = P + L * self._floor
        q = 0.0
        if self._host:
            if self._hk:
                h = self._hk * self._step_kernels(self._k_full, self._L, self._L_moe, True,
                                                  0, ds, ds) + self._ovh
                if h > g:
                    g = h
            q = ds * self._dso
        line = (a1, b1, a2, b2, g, q)
        self._lines[decode_seqs] = line
        return line

    def decode_step_s(self, decode_seqs: int, decode_ctx_sum: int) -> float:
        """A pure-decode step's time from :meth:`decode_step_line` (equal to ``step_time_s``
        of that batch to ~1e-15): what the engine times decode-only steps with."""
        a1, b1, a2, b2, g, q = self.decode_step_line(decode_seqs)
        t = a1 + b1 * decode_ctx_sum
        x = a2 + b2 * decode_ctx_sum
        if x > t:
            t = x
        if g > t:
            t = g
        return t + q

    def decode_step_pieces(self, decode_seqs: int) -> tuple:
        """The pure-decode step time of :meth:`decode_step_line` as pieces of one line each:
        ``((c_start, A, B), ...)`` with ``c_start`` increasing from 0, and the step time of
        context sum ``c`` equal to ``A + B·c`` for the last piece with ``c_start <= c`` (the
        maximum of the three lines is convex in ``c``: at most three pieces). Memoised per
        ``decode_seqs``."""
        pieces = self._pieces.get(decode_seqs)
        if pieces is None:
            a1, b1, a2, b2, g, q = self.decode_step_line(decode_seqs)
            pieces = self._pieces[decode_seqs] = upper_envelope(
                ((a1 + q, b1), (a2 + q, b2), (g + q, 0.0)))
        return pieces

    def decode_run_s(self, decode_seqs: int, decode_ctx_sum: int, k: int) -> np.ndarray:
        """Durations of ``k`` consecutive pure-decode steps; step ``i`` is
        ``BatchAggregates(decode_seqs=decode_seqs, decode_ctx_sum=decode_ctx_sum +
        i*decode_seqs, num_sampled=decode_seqs)``. Vectorised; equal to calling
        :meth:`step_time_s` k times."""
        k = int(k)
        if k <= 0:
            return np.empty(0, dtype=np.float64)
        ds = int(decode_seqs)
        if ds <= 0:
            return np.zeros(k, dtype=np.float64)
        T = ds
        i = bisect_right(self._bp, T)
        base = self._ic[i] + self._sl[i] * T
        n = (int(decode_ctx_sum) + ds) + np.arange(k, dtype=np.int64) * ds
        c = n * self._ad_c
        m = n * self._ad_mk + ds * self._ad_mq
        x = np.maximum(np.maximum(c, m), self._floor)
        a = self._dfix + ds * self._dseq + x
        if self._mla:
            M = ds
            c1 = (M + self._half) * self._kvb_c
            m1 = self._kvb_m0 + M * self._kvb_m1
            a += self._glaunch + (c1 if c1 > m1 else m1)
        t = base + self._L * a
        if self._L_moe:
            t += self._L_moe * self._experts_s(T)
        t += self._lm_s(ds)
        if self._host:
            if self._hk:
                h = self._hk * self._step_kernels(self._k_full, self._L, self._L_moe, True,
                                                  0, ds, ds)
                t = np.maximum(t - self._ovh, h) + self._ovh
            t = t + ds * self._dso
        return t

    # --- slow path: explicit per-operator breakdown ----------------------------------------
    def breakdown(self, agg: BatchAggregates) -> list[OpCost]:
        """Per-operator-family costs of one step (all layers and stages), in display order.
        ``sum(op.time_s) == step_time_s(agg)`` up to float rounding. Not for the hot path."""
        ps, pt, pnc, pn2, pc, ds, dc, ns = agg
        T = pt + ds
        if T <= 0:
            return []
        rows: dict[str, list] = {}
        launch = self._launch
        glaunch = self._glaunch

        def add(name, kind, w, flops, nbytes, compute, memory, launch_s, kernels, floor=0.0):
            work = max(compute, memory, floor)
            time = launch_s + work
            r = rows.setdefault(name, [kind, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0])
            r[1] += w * flops
            r[2] += w * nbytes
            r[3] += w * compute
            r[4] += w * memory
            r[5] += w * launch_s
            r[6] += w * floor
            r[7] += w * time
            r[8] += int(round(w * kernels))

        mult = self._full_mult
        for op in self._ops:
            w = mult[op.group]
            if not w:
                continue
            if op.kind == "gemm":
                flops = op.flops1 * T
                nbytes = op.bytes0 + op.bytes1 * T
                compute = flops / (self._gemm_peak * gemm_efficiency(self.hardware, T))
                memory = nbytes / (self._bw * self._mem_eff)
                add(op.name, "gemm", w, flops, nbytes, compute, memory, op.kernels * glaunch,
                    op.kernels)
            elif op.kind == "elementwise":
                nbytes = op.bytes0 + op.bytes1 * T
                add(op.name, "elementwise", w, op.flops1 * T, nbytes, 0.0,
                    nbytes / (self._bw * self._ew_effs.get(op.name, self._ew_eff)),
                    op.kernels * launch, op.kernels)
            elif op.kind == "comm":
                add(op.name, "comm", w, 0.0, op.bytes1 * T, 0.0, op.t0 + op.t1 * T, 0.0,
                    op.kernels)
            else:
                add(op.name, "const", w, 0.0, 0.0, 0.0, op.t0, 0.0, op.kernels)

        L = self._L
        if ps:
            flops = (pnc + 0.5 * pn2) * self._ap_flops
            nbytes = (pc + pt) * self._ap_kv_bytes + pt * self._ap_qo_bytes
            compute = (pnc * self._ctx_c + 0.5 * pn2 * self._attn_c) * self._ap_flops
            add("attn_prefill", "attn", L, flops, nbytes, compute,
                nbytes * self._pre_m, self._pfix, 1)
        if ds:
            flops = (dc + ds) * self._ad_flops
            nbytes = (dc + ds) * self._ad_kv_bytes + ds * self._ad_qo_bytes
            add("attn_decode", "attn", L, flops, nbytes, flops * self._attn_c,
                nbytes * self._dec_m, self._dfix + ds * self._dseq, 1, floor=self._floor)
        if self._mla:
            M = pc + pt + ds
            flops = self._kvb_flops * M
            nbytes = self._kvb_w + self._kvb_a * M
            add("kv_b_proj", "gemm", L, flops, nbytes,
                flops / (self._gemm_peak * gemm_efficiency(self.hardware, M)),
                nbytes / (self._bw * self._mem_eff), glaunch, 1)
        if self._L_moe:
            D = self._E * (1.0 - (1.0 - self._k / self._E) ** T)
            Tk = T * self._k
            eff = gemm_efficiency(self.hardware, Tk / D)
            for name, (f1, wbytes, abytes) in (("expert_gate_up", self._eu),
                                               ("expert_down", self._ed)):
                flops = f1 * Tk
                nbytes = wbytes * D + abytes * Tk
                add(name, "gemm", self._L_moe, flops, nbytes,
                    flops / (self._gemm_peak * eff), nbytes / (self._bw * self._mem_eff),
                    glaunch, 1)
        if ns:
            flops = self._lm_flops * ns
            nbytes = self._lm_w + self._lm_a * ns
            add("lm_head", "gemm", 1, flops, nbytes,
                flops / (self._gemm_peak * gemm_efficiency(self.hardware, ns)),
                nbytes / (self._bw * self._mem_eff), glaunch, 1)
            if self._lg1:
                add("logits_gather", "comm", 1, 0.0, self._lg_bytes * ns, 0.0,
                    self._lg0 + self._lg1 * ns, 0.0, 1)

        if self._host:
            gpu = sum(r[7] for name, r in rows.items() if name != "step_overhead")
            k = self._step_kernels(self._k_full, self._L, self._L_moe, True, ps, ds, ns)
            h = self._hk * k
            if h > gpu:
                add("host_issue", "const", 1, 0.0, 0.0, 0.0, h - gpu, 0.0, k)
            first = max(ns - ds, 0)
            seq = first * self._fto + ds * self._dso
            if seq > 0:
                add("seq_overhead", "const", 1, 0.0, 0.0, 0.0, seq, 0.0, first + ds)

        order = {name: i for i, name in enumerate(_ORDER)}
        out = []
        for name in sorted(rows, key=lambda nm: order.get(nm, len(order))):
            kind, flops, nbytes, compute, memory, launch_s, floor, time, count = rows[name]
            out.append(OpCost(name, flops, nbytes, flops / nbytes if nbytes else 0.0,
                              _bound(kind, compute, memory, launch_s, floor), time, count,
                              compute, memory, launch_s))
        return out

    def step_cost(self, agg: BatchAggregates) -> StepCost:
        """:class:`StepCost` (time + breakdown) of one step."""
        return StepCost(self.step_time_s(agg), self.breakdown(agg))


def _bound(kind: str, compute: float, memory: float, launch: float, floor: float) -> str:
    if kind == "comm":
        return "comm"
    if kind == "const":
        return "overhead"
    work = max(compute, memory)
    if launch >= work or floor > work:
        return "overhead"
    return "compute" if compute >= memory else "memory"


# --- convenience API -------------------------------------------------------------------------
_CACHE: dict = {}
_CACHE_MAX = 64


def _cost_model(model, hardware, parallel, quant) -> CostModel:
    """CostModel cached by (model, hardware, parallel, quant). HardwareSpec holds dicts (not
    hashable), so the key uses object identity and the entry keeps the objects alive."""
    key = (id(model), id(hardware), parallel, quant)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is model and hit[1] is hardware:
        return hit[2]
    cm = CostModel(model, hardware, parallel, quant)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = (model, hardware, cm)
    return cm


def step_time(model: ModelSpec, hardware: HardwareSpec,
              batch: BatchAggregates | Iterable[Sequence[int]],
              parallel: ParallelConfig = ParallelConfig(),
              quant: QuantConfig = QuantConfig()) -> StepCost:
    """Time and breakdown of one step. ``batch`` is a :class:`BatchAggregates` (used as given)
    or ``(n_new_tokens, n_context_tokens)`` pairs; for pairs, context is capped at the model's
    sliding window, and every pair is sampled (passes through lm_head)."""
    cm = _cost_model(model, hardware, parallel, quant)
    if not isinstance(batch, BatchAggregates):
        win = model.sliding_window
        pairs = []
        for pair in batch:
            n, c = int(pair[0]), int(pair[1])
            if n < 1 or c < 0:
                raise InputError(input_problem(
                    "each batch entry is (n_new_tokens >= 1, n_context_tokens >= 0)",
                    key="batch", value=tuple(pair)))
            pairs.append((n, min(c, win) if win else c))
        batch = BatchAggregates.from_pairs(pairs)
    return cm.step_cost(batch)


def upper_envelope(lines) -> tuple:
    """Pieces ``((c_start, A, B), ...)`` of ``max(A_i + B_i·c)`` over ``c >= 0`` for the lines
    ``(A_i, B_i)``: starting at 0 with the line that is highest there (the steeper one on a
    tie), each piece ends where a steeper line crosses it first."""
    lines = sorted(lines, key=lambda ab: (-ab[0], -ab[1]))
    a, b = lines[0]
    c = 0.0
    out = [(0.0, a, b)]
    while True:
        best = None
        for a2, b2 in lines:
            if b2 > b:
                x = (a - a2) / (b2 - b)
                if x < c:
                    x = c
                if best is None or x < best[0] or x == best[0] and b2 > best[2]:
                    best = (x, a2, b2)
        if best is None:
            return tuple(out)
        c, a, b = best
        if c == out[-1][0]:
            out[-1] = best         # the steeper line takes over where this one starts
        else:
            out.append(best)

