"""Predicted times of measured rows under a hardware card: the cost model, vectorised.

Contract: :func:`predict` takes the tidy measurement table of
:mod:`llmsim.cost.calibrate_data`, a :class:`~llmsim.hardware.spec.HardwareSpec` and optionally
an :class:`~llmsim.hardware.spec.Efficiency` that replaces the card's, and returns predicted
seconds for every row (NaN where the card cannot predict the row: a collective measured on a
node with a different number of GPUs than the card's ``gpus_per_node``, or a step of a model the
catalog does not know). The formulas are the ones of :class:`~llmsim.cost.roofline.CostModel`
for one kernel (GEMMs, element-wise kernels, one layer of attention) and of
:mod:`llmsim.cost.comm` for collectives, evaluated with numpy over all rows at once so that a
fit can call them thousands of times; whole steps go through ``CostModel`` itself. The tests
check that both give the same numbers.

All measurements here are 16-bit (``dtype``, default ``fp16``): weights, activations and KV cache
are 2 bytes; GEMMs and attention use the card's peak for ``dtype``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from llmsim.cost import comm
from llmsim.cost.types import DTYPE_BITS, BatchAggregates, ParallelConfig, QuantConfig
from llmsim.errors import InputError
from llmsim.hardware.spec import Efficiency, HardwareSpec

__all__ = ["predict", "OpArrays", "op_arrays", "predict_ops", "predict_attention",
           "predict_collectives", "predict_steps", "step_models"]


@dataclasses.dataclass(frozen=True)
class OpArrays:
    """Per-row FLOPs/bytes terms of the GEMM and element-wise rows (computed once per table;
    a fit only changes the efficiencies). ``kind`` holds the operator name per row."""

    kind: np.ndarray
    rows: np.ndarray        # GEMM rows M (tokens)
    flops: np.ndarray
    bytes: np.ndarray


def _per_gpu_shape(f: pd.DataFrame):
    tp = f["tp"].to_numpy(float)
    H = f["n_head"].to_numpy(float)
    Hkv = f["n_kv_head"].to_numpy(float)
    d = f["head_dim"].to_numpy(float)
    return tp, H / tp, np.ceil(Hkv / tp), d


def op_arrays(f: pd.DataFrame, dtype: str = "fp16") -> OpArrays:
    """FLOPs and bytes of each GEMM / element-wise row of ``f`` (one kernel, one GPU), as
    :class:`~llmsim.cost.roofline.CostModel` counts them for a ``dtype`` model."""
    b = DTYPE_BITS[dtype] / 8
    hb = max(b, 2.0)
    op = f["op"].to_numpy(str)
    M = f["tokens"].to_numpy(float)
    h = f["hidden"].to_numpy(float)
    tp, Hg, Hkvg, d = _per_gpu_shape(f)
    Ig = f["intermediate"].to_numpy(float) / tp
    mats = np.where(f["gated"].to_numpy(float) > 0, 3.0, 2.0)
    K = np.full(len(f), np.nan)
    N = np.full(len(f), np.nan)
    for name, k, n in (("qkv_proj", h, (Hg + 2 * Hkvg) * d), ("o_proj", Hg * d, h),
                       ("gate_up_proj", h, (mats - 1) * Ig), ("down_proj", Ig, h)):
        sel = op == name
        K[sel], N[sel] = k[sel], n[sel]
    gemm = ~np.isnan(K)
    flops = np.where(gemm, 2.0 * M * K * N, 0.0)
    nbytes = np.where(gemm, K * N * b + M * (K + N) * b, np.nan)
    ew = {"norm": 2 * h * b * M + h * hb,
          "residual": 3 * h * b * M,
          "activation": mats * Ig * b * M,
          "rotary": 2 * (Hg + Hkvg) * d * b * M,
          "embedding": h * (hb + b) * M}
    for name, v in ew.items():
        sel = op == name
        nbytes[sel] = v[sel]
    return OpArrays(op, M, flops, nbytes)


def predict_ops(arr: OpArrays, hw: HardwareSpec, eff: Efficiency,
                dtype: str = "fp16") -> np.ndarray:
    """Seconds of each GEMM / element-wise kernel: ``kernel_launch_s + gemm_fixed_s +
    max(flops / (peak · eff(M)), bytes / (bw · mem_eff))`` for GEMMs, ``kernel_launch_s +
    bytes / (bw · family efficiency)`` for element-wise kernels."""
    peak = hw.peak_for(dtype)
    bw = hw.memory_bandwidth_bytes_per_s
    M = arr.rows
    gemm = arr.flops > 0
    comp = arr.flops * (M + eff.gemm_half_tokens) / np.maximum(M, 1e-30) / (peak * eff.gemm_eff_max)
    mem = arr.bytes / (bw * eff.mem_eff)
    t = np.where(gemm, eff.gemm_fixed_s + np.maximum(comp, mem), np.nan)
    for fam in ("norm", "residual", "activation", "rotary", "embedding"):
        sel = arr.kind == fam
        if sel.any():
            t[sel] = arr.bytes[sel] / (bw * eff.elementwise_eff(fam))
    return eff.kernel_launch_s + t


def predict_attention(f: pd.DataFrame, hw: HardwareSpec, eff: Efficiency,
                      dtype: str = "fp16") -> np.ndarray:
    """Seconds of one layer of attention per row (batch of ``batch`` sequences, each ``chunk``
    new tokens on ``context`` cached ones), as ``CostModel`` times ``attn_prefill`` /
    ``attn_decode`` for one layer."""
    b = DTYPE_BITS[dtype] / 8
    peak = hw.peak_for(dtype if DTYPE_BITS[dtype] >= 16 else "bf16")
    bw = hw.memory_bandwidth_bytes_per_s
    tp, Hg, Hkvg, d = _per_gpu_shape(f)
    B = f["batch"].to_numpy(float)
    n = f["chunk"].to_numpy(float)
    c = f["context"].to_numpy(float)
    pre = f["op"].to_numpy(str) == "attn_prefill"
    flops1 = 4.0 * Hg * d                   # per query-key pair
    kv_tok = 2.0 * Hkvg * d * b             # K and V of one token
    qo_tok = 2.0 * Hg * d * b               # Q and O of one new token
    # prefill
    comp_p = flops1 * B * (n * c / (peak * eff.context_eff)
                           + 0.5 * n * n / (peak * eff.attn_prefill_eff))
    mem_p = (B * (c + n) * kv_tok + B * n * qo_tok) / (bw * eff.mem_eff)
    t_p = eff.attn_prefill_fixed_s + np.maximum(comp_p, mem_p)
    # decode (n == 1)
    tok = B * (c + 1)
    comp_d = tok * flops1 / (peak * eff.attn_prefill_eff)
    mem_d = (tok * kv_tok + B * qo_tok) / (bw * eff.attn_decode_mem_eff)
    t_d = (eff.attn_decode_fixed_s + B * eff.attn_decode_seq_s
           + np.maximum(np.maximum(comp_d, mem_d), eff.attn_decode_floor_s))
    return eff.kernel_launch_s + np.where(pre, t_p, t_d)


def predict_collectives(f: pd.DataFrame, hw: HardwareSpec, eff: Efficiency) -> np.ndarray:
    """Seconds of each collective row with :mod:`llmsim.cost.comm` over the card's links:
    ``intra_node`` when all workers sit in one node, else ``inter_node``. NaN for rows measured
    on a node whose GPU count (``node_gpus``) differs from the card's ``gpus_per_node`` (another
    topology, e.g. pairwise NVLink bridges)."""
    out = np.full(len(f), np.nan)
    if not len(f):
        return out
    n = f["num_workers"].to_numpy(float)
    per_node = f["devices_per_node"].to_numpy(float)
    node_gpus = f["node_gpus"].to_numpy(float)
    size = f["size_bytes"].to_numpy(float)
    op = f["op"].to_numpy(str)
    ok = np.isnan(node_gpus) | (node_gpus == hw.gpus_per_node)
    intra = n <= per_node
    for kind in ("all_reduce", "send_recv"):
        for inside in (True, False):
            link = hw.intra_node if inside else hw.inter_node
            for workers in np.unique(n[(op == kind) & ok & (intra == inside)]):
                sel = (op == kind) & ok & (intra == inside) & (n == workers)
                if kind == "all_reduce":
                    t0, s = comm.allreduce_coeffs(int(workers), link, eff)
                else:
                    t0, s = comm.send_coeffs(link, eff)
                out[sel] = t0 + s * size[sel]
    return out


def step_models(f: pd.DataFrame) -> dict:
    """Catalog model of each step-row model name (``None`` when unknown)."""
    from llmsim.models.catalog import load_model

    out = {}
    for name in pd.unique(f["model"]):
        try:
            out[name] = load_model(str(name))
        except InputError:
            out[name] = None
    return out


def predict_steps(f: pd.DataFrame, hw: HardwareSpec, eff: Efficiency, dtype: str = "fp16",
                  models: dict | None = None) -> np.ndarray:
    """Seconds of each step row through :class:`~llmsim.cost.roofline.CostModel`:

    - ``prefill``: one step with ``batch`` prompts of ``chunk`` tokens and no context, every
      prompt sampled (the measured time runs to the first token);
    - ``decode``: mean of the decode steps of ``batch`` sequences from context ``chunk`` for
      ``output_len - 1`` steps, capped where the context reaches the model's
      ``max_model_len`` (generation stops there).

    NaN for a model the catalog does not know."""
    from llmsim.cost.roofline import CostModel

    models = models if models is not None else step_models(f)
    hw = dataclasses.replace(hw, efficiency=eff)
    quant = QuantConfig(dtype, dtype, dtype)
    out = np.full(len(f), np.nan)
    cms: dict = {}
    for i, (model, tp, op, B, P, O) in enumerate(zip(
            f["model"], f["tp"], f["op"], f["batch"], f["chunk"], f["output_len"])):
        spec = models.get(model)
        if spec is None:
            continue
        key = (model, int(tp))
        cm = cms.get(key)
        if cm is None:
            cm = cms[key] = CostModel(spec, hw, ParallelConfig(tp=int(tp)), quant)
        B, P = int(B), int(P)
        if op == "prefill":
            out[i] = cm.step_time_s(BatchAggregates(B, B * P, 0, B * P * P, 0, 0, 0, B))
        else:
            k = max(1, min(int(O) - 1, spec.max_model_len - P - 1))
            out[i] = float(np.mean(cm.decode_run_s(B, B * P, k)))
    return out


def predict(frame: pd.DataFrame, hw: HardwareSpec, eff: Efficiency | None = None,
            dtype: str = "fp16") -> np.ndarray:
    """Predicted seconds for every row of the tidy table (NaN where not predictable)."""
    eff = eff or hw.efficiency
    out = np.full(len(frame), np.nan)
    fam = frame["family"].to_numpy(str)
    sel = np.isin(fam, ["gemm", "elementwise"])
    if sel.any():
        out[sel] = predict_ops(op_arrays(frame[sel], dtype), hw, eff, dtype)
    for name, fn in (("attention", predict_attention), ("collective", predict_collectives),
                     ("step", predict_steps)):
        sel = fam == name
        if sel.any():
            args = (frame[sel], hw, eff) + ((dtype,) if name != "collective" else ())
            out[sel] = fn(*args)
    return out
