"""HardwareSpec: one accelerator card as the cost model sees it.

Contract: SI units (FLOP/s, bytes, bytes/s, seconds, watts, USD/hour). ``peak_flops_per_s`` holds
DENSE peaks (no 2:4 sparsity) keyed by dtype name: ``fp32``, ``tf32``, ``bf16``, ``fp16``,
``fp8``, ``int8``, ``int4``, ``fp4`` — only the ones the part supports in hardware. Link bandwidths
are per GPU, per direction (unidirectional). ``provenance`` maps a field path (e.g.
``peak_flops_per_s.bf16``) to its source (datasheet name, dense vs sparse, how derived).
``efficiency`` holds the fitted/assumed efficiency parameters of the roofline (see
:class:`Efficiency`).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LinkSpec:
    """A point-to-point or fabric link. ``bandwidth_bytes_per_s`` is per GPU per direction."""

    kind: str                       # nvlink | xgmi | pcie | ici | infiniband | ethernet | roce
    bandwidth_bytes_per_s: float
    latency_s: float
    description: str = ""


@dataclass(frozen=True)
class Efficiency:
    """Roofline efficiency parameters (what fraction of the datasheet peak kernels reach, and the
    fixed costs around them). All times in seconds.

    GPU kernels (per GPU, per kernel):

    - GEMMs: ``kernel_launch_s + max(flops / (peak · eff(M)), bytes / (bw · mem_eff))`` with the
      shape-aware ``eff(M) = gemm_eff_max · M / (M + gemm_half_tokens)`` for M rows (small GEMMs
      reach less of peak). ``kernel_launch_s`` is the fixed GPU-side cost of one kernel; GEMM
      kernels add ``gemm_fixed_s`` (library setup, split-K reduction).
    - Element-wise kernels are memory-bound at a per-family fraction of the bandwidth:
      ``norm_mem_eff`` (RMSNorm/LayerNorm), ``rotary_mem_eff``, ``activation_mem_eff`` (SiLU·mul,
      GELU), ``residual_mem_eff`` (residual adds), ``embedding_mem_eff`` (token lookup); a family
      left at ``None`` uses ``elementwise_mem_eff``, which also covers the KV-cache write.
    - Attention prefill: the causal block of the new tokens (``n²/2`` query-key pairs) runs at
      ``attn_prefill_eff`` of the 16-bit peak, the new tokens against the cached context
      (``n·c`` pairs) at ``attn_context_eff`` (``None``: same as ``attn_prefill_eff``); plus
      ``attn_prefill_fixed_s`` per kernel.
    - Attention decode: KV streaming at ``attn_decode_mem_eff`` of the bandwidth, never below
      ``attn_decode_floor_s``; plus ``attn_decode_fixed_s`` per kernel and
      ``attn_decode_seq_s`` per decoding sequence.

    Collectives (:mod:`llmsim.cost.comm`): ``comm_bw_eff`` of the link bandwidth, plus
    ``comm_base_latency_s`` per collective and ``comm_latency_s`` per ring hop; point-to-point
    sends reach ``p2p_bw_eff`` of the link (``None``: same as ``comm_bw_eff``).

    Host side (per engine step): ``step_overhead_s`` fixed (scheduling, sampling, graph launch),
    ``first_token_overhead_s`` per request whose prompt completes in the step (its first token
    is sampled: ``num_sampled - decode_seqs`` of them) and ``decode_seq_overhead_s`` per
    decoding sequence (input preparation, sampling bookkeeping). ``host_kernel_s`` is the CPU
    time to issue one kernel: the host issues kernels while the GPU runs earlier ones, so the
    kernel part of a step takes ``max(GPU time, kernels · host_kernel_s)`` (0 = never host-bound,
    e.g. CUDA graphs).

    The defaults are assumptions, not fits; every new field defaults to "no effect" so that
    cards written before it existed keep their meaning. ``source`` says what data fitted these
    numbers, or that they are assumed.
    """

    gemm_eff_max: float = 0.75
    gemm_half_tokens: float = 32.0
    mem_eff: float = 0.80
    elementwise_mem_eff: float = 0.60
    attn_prefill_eff: float = 0.35
    attn_decode_mem_eff: float = 0.75
    attn_decode_floor_s: float = 10e-6
    kernel_launch_s: float = 4e-6
    step_overhead_s: float = 2e-3
    comm_bw_eff: float = 0.75
    comm_latency_s: float = 8e-6
    source: str = "assumed defaults (not fitted)"
    gemm_fixed_s: float = 0.0
    norm_mem_eff: float | None = None
    rotary_mem_eff: float | None = None
    activation_mem_eff: float | None = None
    residual_mem_eff: float | None = None
    embedding_mem_eff: float | None = None
    attn_context_eff: float | None = None
    attn_prefill_fixed_s: float = 0.0
    attn_decode_fixed_s: float = 0.0
    attn_decode_seq_s: float = 0.0
    comm_base_latency_s: float = 0.0
    p2p_bw_eff: float | None = None
    host_kernel_s: float = 0.0
    first_token_overhead_s: float = 0.0
    decode_seq_overhead_s: float = 0.0

    def elementwise_eff(self, family: str) -> float:
        """Bandwidth fraction of an element-wise family (``norm``, ``rotary``, ``activation``,
        ``residual``, ``embedding``; anything else, e.g. ``kv_cache_write``, uses
        ``elementwise_mem_eff``)."""
        v = getattr(self, f"{family}_mem_eff", None) if family in ELEMENTWISE_FAMILIES else None
        return self.elementwise_mem_eff if v is None else v

    @property
    def context_eff(self) -> float:
        """Efficiency of the new-token × cached-context part of prefill attention."""
        return self.attn_prefill_eff if self.attn_context_eff is None else self.attn_context_eff


#: element-wise families with their own bandwidth fraction (``<family>_mem_eff``)
ELEMENTWISE_FAMILIES = ("norm", "rotary", "activation", "residual", "embedding")


@dataclass(frozen=True)
class HardwareSpec:
    name: str                               # catalog key, e.g. "h100-sxm"
    display_name: str                       # e.g. "NVIDIA H100 SXM5 80GB"
    vendor: str
    peak_flops_per_s: dict[str, float]      # dense peaks by dtype
    memory_bytes: float                     # HBM/GDDR capacity (GB = 1e9; GiB noted in provenance)
    memory_bandwidth_bytes_per_s: float
    intra_node: LinkSpec                    # GPU-GPU inside a node (NVLink, xGMI, PCIe, ICI)
    gpus_per_node: int
    host_link: LinkSpec                     # GPU-host (PCIe/NVLink-C2C): swap, offload, weight load
    inter_node: LinkSpec                    # typical network between nodes
    power_w: float                          # TDP / max board power
    price_on_demand_usd_per_h: float        # per GPU
    price_spot_usd_per_h: float             # per GPU
    price_note: str                         # what the prices are typical of (cloud, date)
    efficiency: Efficiency = field(default_factory=Efficiency)
    provenance: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = field(default=())

    def peak_for(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; falls back to the next wider dtype the part has
        (e.g. int4 on a part without int4 tensor cores runs at its int8 or fp16 rate)."""
        order = {"fp4": ["fp4", "int4", "fp8", "int8", "bf16", "fp16"],
                 "int4": ["int4", "int8", "fp8", "bf16", "fp16"],
                 "fp8": ["fp8", "int8", "bf16", "fp16"],
                 "int8": ["int8", "fp8", "bf16", "fp16"],
                 "bf16": ["bf16", "fp16"], "fp16": ["fp16", "bf16"],
                 "tf32": ["tf32", "fp32"], "fp32": ["fp32"]}
        for d in order.get(dtype, [dtype]):
            if d in self.peak_flops_per_s:
                return self.peak_flops_per_s[d]
        raise KeyError(f"{self.name} has no peak for dtype {dtype!r}")
