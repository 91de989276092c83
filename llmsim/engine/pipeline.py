"""Pipelines whose stages sit on different nodes: decentralized serving (Petals / HexGen style).

Contract. A replica of a pool with ``stages`` is a pipeline of ``len(stages)`` nodes, each with
its own hardware card, tensor-parallel degree and region; layers are split as the roofline
splits them (the first ``num_layers % P`` stages get one more). Plain pools are the special case
of ``pp`` identical stages in the pool's region (:func:`stage_layout` builds both).

- **Step time** (:class:`PipelineCostModel`): stage ``j`` computes its share ``s_j = n_j / L``
  of the model on its own hardware: ``s_j · (t_j − o_j) + o_j`` where ``t_j`` is the roofline
  time of the whole model on that card at tp ``tp_j`` (``CostModel.step_time_s``) and ``o_j``
  its per-step framework overhead (every node runs its own engine step, so each pays it in
  full; embedding and lm_head are spread over the stages in proportion to their layers — an
  approximation). Between consecutive stages the hidden state and residual of every token
  (``2 · hidden · activation bytes`` per token) cross one hop; after the last stage the sampled
  token goes back to the first (latency only). A hop between regions uses the explicit region
  link or the cross-region default (latency + bytes / bandwidth, as written); inside one region
  it is the sender's ``inter_node`` card link (:func:`llmsim.cost.comm.send_coeffs`). Hops are
  costed inside the step (not through :mod:`llmsim.engine.network`: activations are small and
  their contention with KV transfers is not modelled). ``stage_time_s`` is the busiest stage
  (bounds the interval between micro-batches when the pipeline keeps P in flight).
- **Memory** (:func:`stage_memory_plan`): as :func:`llmsim.cost.memory.memory_plan`, per stage on
  its own card; the replica holds as many KV blocks as its most constrained stage. Raises
  :class:`~llmsim.errors.InputError` naming the stage that does not fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from llmsim.cost import CostModel
from llmsim.cost.memory import MemoryPlan, activation_reserve_bytes
from llmsim.cost.types import BatchAggregates, ParallelConfig
from llmsim.engine.network import card_hop_coeffs
from llmsim.errors import InputError, input_problem


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage of a replica: ``num_layers`` layers on ``tp`` GPUs of ``hardware``
    in ``region``."""

    hardware: Any
    tp: int
    region: str
    num_layers: int

    def share(self, total_layers: int) -> float:
        return self.num_layers / total_layers


def stage_sizes(num_layers: int, pp: int) -> list[int]:
    """Layers per stage: the first ``num_layers % pp`` stages get one more (as the roofline)."""
    base, extra = divmod(num_layers, pp)
    return [base + (1 if j < extra else 0) for j in range(pp)]


def stage_layout(pool_cfg, model) -> list[StageSpec]:
    """The stages of one replica of ``pool_cfg``: its ``stages`` (hardware, region and tp
    default to the pool's), or ``parallel.pp`` identical stages on the pool's hardware."""
    stages = getattr(pool_cfg, "stages", None)
    if stages:
        hws = pool_cfg.resolved_stage_hardware()
        sizes = stage_sizes(model.num_layers, len(stages))
        return [StageSpec(hw, st.tp or pool_cfg.parallel.tp, st.region or pool_cfg.region, n)
                for st, hw, n in zip(stages, hws, sizes)]
    hw = pool_cfg.resolved_hardware()
    sizes = stage_sizes(model.num_layers, pool_cfg.parallel.pp)
    return [StageSpec(hw, pool_cfg.parallel.tp, pool_cfg.region, n) for n in sizes]


def is_decentralized(pool_cfg) -> bool:
    return bool(getattr(pool_cfg, "stages", None))


def hop_link_coeffs(topology, stages, j: int) -> tuple[float, float]:
    """(t0_s, s_per_byte) of the hop from stage ``j`` to stage ``j + 1`` (mod P)."""
    a, b = stages[j], stages[(j + 1) % len(stages)]
    lk = topology.region_link(a.region, b.region)
    res, lat = lk
    if res is not None:
        return lat, 1.0 / res.capacity_bytes_per_s
    hw = a.hardware
    return card_hop_coeffs(hw.inter_node, hw.efficiency)


class PipelineCostModel:
    """Step time of a decentralized pipeline (module docstring); duck-types the two methods of
    :class:`~llmsim.cost.CostModel` the engine uses."""

    def __init__(self, model: Any, stages: Iterable[StageSpec], quant: Any,
                 hop_coeffs_list: Iterable[tuple[float, float]]) -> None:
        self.model = model
        self.stages: list[StageSpec] = list(stages)
        L = model.num_layers
        groups: dict = {}
        for st in self.stages:
            hw: Any = st.hardware
            key = (hw.name, st.tp)
            if key not in groups:
                cm = CostModel(model, hw, ParallelConfig(tp=st.tp), quant)
                groups[key] = [cm, hw.efficiency.step_overhead_s, 0.0, 0.0, 0]
            g = groups[key]
            g[2] += st.num_layers / L                 # total share on this card
            g[3] = max(g[3], st.num_layers / L)       # largest stage share on it
            g[4] += 1                                 # stages on it
        # one (cost model, overhead_s, total share, largest share, stages) per card type
        self._groups: tuple[tuple[CostModel, float, float, float, int], ...] = tuple(
            (g[0], g[1], g[2], g[3], g[4]) for g in groups.values())
        per_tok = 2.0 * model.hidden_size * quant.activation_bytes
        P = len(self.stages)
        t0 = s1 = 0.0
        for j, (h0, h1) in enumerate(hop_coeffs_list):
            t0 += h0
            if j < P - 1:                 # the return hop carries only the sampled token ids
                s1 += h1 * per_tok
        self._hop_t0: float = t0 if P > 1 else 0.0
        self._hop_per_token_s: float = s1 if P > 1 else 0.0
        self.num_stages = P

    def step_time_s(self, agg: BatchAggregates) -> float:
        T = agg[1] + agg[5]               # prefill_tokens + decode_seqs (plain tuples too)
        if T <= 0:
            return 0.0
        t = self._hop_t0 + self._hop_per_token_s * T
        for cm, ovh, share, _big, n in self._groups:
            t += share * (cm.step_time_s(agg) - ovh) + n * ovh
        return t

    def stage_time_s(self, agg: BatchAggregates) -> float:
        T = agg[1] + agg[5]               # prefill_tokens + decode_seqs (plain tuples too)
        if T <= 0:
            return 0.0
        best = 0.0
        for cm, ovh, _share, big, _n in self._groups:
            t = big * (cm.step_time_s(agg) - ovh) + ovh
            if t > best:
                best = t
        return best


def _gb(x: float) -> str:
    return f"{x / 1e9:.1f}"


def stage_memory_plan(model, stages, quant, *, gpu_memory_utilization: float, block_size: int,
                      max_num_batched_tokens: int, max_num_seqs: int,
                      pool_name: str = "") -> MemoryPlan:
    """Memory plan of one pipeline replica whose stages may differ (module docstring)."""
    P = len(stages)
    best: Any = None
    problems = []
    weights_total = 0.0
    cms: dict = {}
    for j, st in enumerate(stages):
        key = (st.hardware.name, st.tp)
        if key not in cms:
            cms[key] = CostModel(model, st.hardware, ParallelConfig(tp=st.tp, pp=P), quant)
        cm = cms[key]
        weights = cm.stage_weight_bytes[j]
        weights_total += weights * st.tp
        reserve = activation_reserve_bytes(model, ParallelConfig(tp=st.tp, pp=P), quant,
                                           max_num_batched_tokens, max_num_seqs,
                                           last_stage=j == P - 1)
        usable = st.hardware.memory_bytes * gpu_memory_utilization
        free = usable - weights - reserve
        kv_tok = cm.stage_kv_bytes_per_token[j]
        blocks = int(free // (kv_tok * block_size)) if free > 0 else 0
        if blocks < 1:
            problems.append(input_problem(
                f"pool '{pool_name}' stage {j} ({st.hardware.name}, tp={st.tp}, "
                f"{st.num_layers} of {model.num_layers} layers) needs {_gb(weights)} GB of "
                f"weights and {_gb(reserve)} GB of activation reserve per GPU; the GPU has "
                f"{_gb(usable)} GB usable at gpu_memory_utilization={gpu_memory_utilization:g}, "
                "leaving no room for one KV block. Use more stages, a larger tp on that stage, "
                "narrower weights or a GPU with more memory", key="stages"))
            continue
        if best is None or blocks < best[0]:
            best = (blocks, st, weights, reserve, free, kv_tok, usable)
    if problems:
        raise InputError(problems)
    blocks, st, weights, reserve, free, kv_tok, usable = best
    return MemoryPlan(
        num_gpus=sum(s.tp for s in stages), memory_bytes_per_gpu=st.hardware.memory_bytes,
        gpu_memory_utilization=gpu_memory_utilization, usable_bytes_per_gpu=usable,
        weights_bytes_per_gpu=weights, weights_bytes_per_replica=weights_total,
        activation_reserve_bytes=reserve, free_kv_bytes_per_gpu=free,
        kv_bytes_per_token=next(iter(cms.values())).kv_bytes_per_token,
        kv_bytes_per_token_per_gpu=kv_tok, block_size=block_size,
        block_bytes_per_gpu=kv_tok * block_size, num_gpu_blocks=blocks,
        kv_capacity_tokens=blocks * block_size)


def stage_weight_bytes(model, stages, quant) -> list[float]:
    """Weight bytes per GPU of each stage (what a replacement node must load)."""
    P = len(stages)
    out = []
    for j, st in enumerate(stages):
        cm = CostModel(model, st.hardware, ParallelConfig(tp=st.tp, pp=P), quant)
        out.append(cm.stage_weight_bytes[j])
    return out


def decode_capacity_tokens_per_s(cost, kv_capacity_tokens: int, max_num_seqs: int, pp: int,
                                 context_tokens: int = 1024) -> float:
    """Roofline decode tokens/s of one replica at its memory-limited batch (as
    :func:`llmsim.cost.memory.decode_capacity`, for any cost model with ``step_time_s`` and
    ``stage_time_s``): the batch is ``min(max_num_seqs, KV tokens // (context + 1))`` split in
    ``pp`` micro-batches kept in flight."""
    batch = max(1, min(max_num_seqs, kv_capacity_tokens // (context_tokens + 1)))
    mb = -(-batch // pp)
    agg = BatchAggregates(decode_seqs=mb, decode_ctx_sum=mb * context_tokens, num_sampled=mb)
    step = cost.step_time_s(agg)
    interval = max(cost.stage_time_s(agg), step / pp)
    return mb / interval
