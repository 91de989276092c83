"""Inputs of the cost model: parallel plan, quantization, and batch aggregates.

``BatchAggregates`` is the hot-path contract between the engine and the cost model: a step's
batch is a set of ``(n_new_tokens, n_context_tokens)`` pairs, and the cost model only needs these
sums, which the engine maintains incrementally (no loop over the batch per step). A pair with
``n == 1`` is a *decode* token; ``n > 1`` is a *prefill chunk*. Context ``c`` counts tokens
already in the KV cache before this step (for sliding-window models the engine passes
``min(c, window)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

DTYPE_BITS = {"fp32": 32, "tf32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8,
              "int4": 4, "fp4": 4}


@dataclass(frozen=True)
class ParallelConfig:
    """tp: tensor parallel degree; pp: pipeline stages; ep: expert parallel degree (MoE experts
    split over ep GPUs of the tp group; 1 = experts sharded by tp like dense MLPs)."""

    tp: int = 1
    pp: int = 1
    ep: int = 1

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp


@dataclass(frozen=True)
class QuantConfig:
    """Bit-widths as dtype names (keys of DTYPE_BITS). GEMMs run at the peak of
    ``activation_dtype`` (weights are dequantized to it); weights stream at ``weight_dtype``
    width; the KV cache is stored at ``kv_cache_dtype`` width."""

    weight_dtype: str = "bf16"
    activation_dtype: str = "bf16"
    kv_cache_dtype: str = "bf16"

    @property
    def weight_bytes(self) -> float:
        return DTYPE_BITS[self.weight_dtype] / 8

    @property
    def activation_bytes(self) -> float:
        return DTYPE_BITS[self.activation_dtype] / 8

    @property
    def kv_bytes(self) -> float:
        return DTYPE_BITS[self.kv_cache_dtype] / 8


class BatchAggregates(NamedTuple):
    """Sums over one step's batch (see module docstring). All ints.

    prefill_seqs:       number of pairs with n > 1
    prefill_tokens:     Σ n over prefill pairs
    prefill_nc_sum:     Σ n·c over prefill pairs
    prefill_n2_sum:     Σ n² over prefill pairs
    prefill_ctx_sum:    Σ c over prefill pairs
    decode_seqs:        number of pairs with n == 1
    decode_ctx_sum:     Σ c over decode pairs
    num_sampled:        tokens that go through lm_head (requests whose step ends at the last
                        known token: decodes + prefills that complete their prompt)
    """

    prefill_seqs: int = 0
    prefill_tokens: int = 0
    prefill_nc_sum: int = 0
    prefill_n2_sum: int = 0
    prefill_ctx_sum: int = 0
    decode_seqs: int = 0
    decode_ctx_sum: int = 0
    num_sampled: int = 0

    @classmethod
    def from_pairs(cls, pairs, num_sampled: int | None = None) -> "BatchAggregates":
        """Aggregate explicit (n, c) pairs; num_sampled defaults to one per pair."""
        ps = pt = pnc = pn2 = pc = ds = dc = 0
        count = 0
        for n, c in pairs:
            count += 1
            if n == 1:
                ds += 1
                dc += c
            else:
                ps += 1
                pt += n
                pnc += n * c
                pn2 += n * n
                pc += c
        return cls(ps, pt, pnc, pn2, pc, ds, dc, count if num_sampled is None else num_sampled)

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs
