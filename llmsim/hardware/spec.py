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
    """Roofline efficiency parameters (what fraction of the datasheet peak kernels reach).

    GEMM efficiency is shape-aware: for a GEMM with M = tokens rows,
    ``eff(M) = gemm_eff_max * M / (M + gemm_half_tokens)`` (small GEMMs reach less of peak).
    Each operator costs ``kernel_launch_s + max(flops/(peak*eff_c), bytes/(bw*eff_m))``.
    ``step_overhead_s`` is the fixed framework cost of one engine step (scheduling, sampling,
    launch of the graph). Attention prefill runs at ``attn_prefill_eff`` of peak (FlashAttention
    reaches ~1/6 of the A100 peak in the shared measurements) and decode attention has a floor of
    ``attn_decode_floor_s`` per layer. Collectives reach ``comm_bw_eff`` of the link bandwidth
    and pay ``comm_latency_s`` per ring hop.
    ``source`` says what data fitted these numbers, or that they are assumed defaults.
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
