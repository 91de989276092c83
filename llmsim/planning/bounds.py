"""Roofline bounds of a scenario's cluster: what no simulation can beat.

Contract: every function reads a loaded :class:`~llmsim.scenario.Scenario` and the cost model
(no simulation) and returns plain numbers. The figures come from the roofline step times of
:class:`~llmsim.cost.CostModel` and the KV capacity of :func:`~llmsim.cost.memory.memory_plan`:

Latency floors (per request; lower bounds, queueing and batching ignored):

- TTFT floor: the prefill of the request's prompt alone on an idle replica, in chunks of
  ``max_num_batched_tokens`` (each chunk one step, context growing);
- TPOT floor: one decode step of that request alone at its prompt length of context (``pp``
  stages: the full pipeline);
- E2E floor: TTFT floor + (output tokens − 1) · TPOT floor.

A request whose floor is above its SLO target misses the SLO in every simulation, so
``attainment_bound = 1 − (fraction of such requests)`` bounds the attainment from above (the
TPOT floor is skipped with speculative decoding, which can beat it). With several pools, a
request's floor is the smallest over the pools that could serve that phase (``mixed`` and
``prefill`` for TTFT; ``mixed`` and ``decode`` for TPOT).

Request capacity (an estimate, not a strict bound: it prices prefill and decode separately
while a real step can share the weight reads between them): one replica serves
``1 / (P · s_prefill + O · s_decode)`` requests/s, where P and O are the mean prompt and output
lengths of the workload, ``s_prefill`` the seconds per token of a full ``max_num_batched_tokens``
chunk and ``s_decode = interval(b) / micro_batch(b)`` the seconds per token of the decode batch
``b``: the largest batch that fits ``max_num_seqs``, the KV cache at the mean context
``P + O/2``, and (with a TPOT target) whose per-sequence token interval stays within the target.
Pipeline parallelism keeps ``pp`` micro-batches of ``ceil(b/pp)`` in flight. The cluster sums its
mixed pools and adds ``min(prefill pools, decode pools)`` for a disaggregated pair.

Interactivity curve (for the Pareto front): for decode batches b = 1 … b_max of a pool, the
per-user token rate ``1 / tpot(b)`` and the output tokens/s per GPU ``tokens_per_s(b) / GPUs``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from llmsim.cost import CostModel
from llmsim.cost.types import BatchAggregates

__all__ = ["WorkloadShape", "workload_shape", "PoolBound", "ClusterBound", "pool_bound",
           "cluster_bound", "decode_point", "interactivity_curve",
           "tokens_per_s_per_gpu_bound", "operator_breakdown"]

#: Requests read from the workload to estimate its lengths.
SHAPE_REQUESTS = 20000


@dataclass(frozen=True)
class WorkloadShape:
    """Prompt and output lengths of (the first :data:`SHAPE_REQUESTS` of) a workload."""

    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def num_requests(self) -> int:
        return int(self.prompt_tokens.size)

    @property
    def mean_prompt_tokens(self) -> float:
        return float(self.prompt_tokens.mean()) if self.num_requests else 0.0

    @property
    def mean_output_tokens(self) -> float:
        return float(self.output_tokens.mean()) if self.num_requests else 0.0


def workload_shape(scenario, max_requests: int = SHAPE_REQUESTS) -> WorkloadShape:
    """Lengths of the scenario's requests (its workload generated with its seed; arrival times
    do not matter here)."""
    from llmsim.workload import build_workload
    wl = build_workload(scenario.workload, np.random.SeedSequence(scenario.seed),
                        scenario.base_dir)
    p, o = [], []
    for req in itertools.islice(iter(wl), max_requests):
        p.append(req.num_prompt_tokens)
        o.append(req.max_tokens)
    return WorkloadShape(np.asarray(p, dtype=np.int64), np.asarray(o, dtype=np.int64))


@dataclass
class PoolBound:
    """Roofline figures of one pool (see module docstring); ``capacity_per_s`` is for all its
    replicas, the rest for one replica."""

    pool: str
    role: str
    hardware: str
    replicas: int
    gpus_per_replica: int
    usd_per_gpu_hour: float
    prefill_s_per_token: float
    decode_batch: int
    decode_batch_max: int
    decode_tpot_s: float
    decode_tokens_per_s: float
    prefill_capacity_per_s: float
    decode_capacity_per_s: float
    capacity_per_s: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClusterBound:
    """Roofline figures of the whole cluster: ``rate_per_s`` (request capacity),
    ``attainment_bound`` (1 − share of requests whose latency floor misses an SLO),
    ``floor_miss`` (that share per SLO key), ``usd_per_hour`` and ``gpus`` of the deployment."""

    rate_per_s: float
    attainment_bound: float
    floor_miss: dict
    usd_per_hour: float
    gpus: int
    pools: list = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["pools"] = [p.as_dict() if hasattr(p, "as_dict") else p for p in self.pools]
        return d


def _cost_model(scenario, pool) -> CostModel:
    return CostModel(scenario.resolved_model(), pool.resolved_hardware(),
                     pool.parallel_config(), pool.quant_config())


def decode_point(cm: CostModel, batch: int, context_tokens: float) -> tuple[float, float]:
    """(per-sequence token interval s, replica tokens/s) of a steady decode of ``batch``
    sequences at ``context_tokens`` each, with ``pp`` micro-batches in flight."""
    pp = cm.parallel.pp
    mb = -(-int(batch) // pp)
    ctx = int(round(context_tokens))
    agg = BatchAggregates(decode_seqs=mb, decode_ctx_sum=mb * ctx, num_sampled=mb)
    step = cm.step_time_s(agg)
    interval = max(cm.stage_time_s(agg), step / pp)
    return max(step, pp * interval), mb / interval


def _largest_batch(cm: CostModel, b_max: int, ctx: float, tpot_s: float | None) -> int:
    """Largest b in [1, b_max] whose token interval is within ``tpot_s`` (b_max without a
    target; 1 when even b = 1 misses it)."""
    if tpot_s is None or decode_point(cm, b_max, ctx)[0] <= tpot_s:
        return b_max
    lo, hi = 1, b_max
    if decode_point(cm, 1, ctx)[0] > tpot_s:
        return 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if decode_point(cm, mid, ctx)[0] <= tpot_s:
            lo = mid
        else:
            hi = mid
    return lo


def pool_bound(scenario, pool, shape: WorkloadShape, plan=None) -> PoolBound:
    """Roofline request capacity of ``pool`` for requests shaped like ``shape``."""
    cm = _cost_model(scenario, pool)
    if plan is None:
        plan = scenario.memory_plans()[pool.name]
    sched = pool.effective_scheduler()
    budget = sched.max_num_batched_tokens
    P, O = shape.mean_prompt_tokens, shape.mean_output_tokens
    pp = pool.parallel.pp
    chunk = int(min(budget, max(round(P), 1)))
    agg = BatchAggregates.from_pairs([(chunk, 0)] if chunk > 1 else [(1, 0)])
    per_tok = max(cm.stage_time_s(agg), cm.step_time_s(agg) / pp) / max(chunk, 1)
    ctx = P + O / 2
    b_max = max(1, min(sched.max_num_seqs, int(plan.kv_capacity_tokens // (ctx + 1))))
    tpot = scenario.slo.tpot_s if scenario.slo is not None else None
    if sched.speculative is not None:
        tpot = None
    b = _largest_batch(cm, b_max, ctx, tpot)
    interval, tps = decode_point(cm, b, ctx)
    prefill_s, decode_s = per_tok * P, (O / tps if O else 0.0)
    n = pool.replicas
    pre_cap = n / prefill_s if prefill_s > 0 else math.inf
    dec_cap = n / decode_s if decode_s > 0 else math.inf
    mixed_cap = n / (prefill_s + decode_s) if prefill_s + decode_s > 0 else math.inf
    cap = {"mixed": mixed_cap, "prefill": pre_cap, "decode": dec_cap}[pool.role]
    return PoolBound(pool.name, pool.role, pool.resolved_hardware().name, n,
                     pool.num_gpus_per_replica, pool.price_usd_per_gpu_hour(), per_tok, b,
                     b_max, interval, tps, pre_cap, dec_cap, cap)


def _prefill_floor_s(cm: CostModel, prompt: int, budget: int) -> float:
    t, done = 0.0, 0
    while done < prompt:
        n = min(budget, prompt - done)
        t += cm.step_time_s(BatchAggregates.from_pairs([(n, done)] if n > 1 else [(1, done)]))
        done += n
    return t


def _floors(scenario, shape: WorkloadShape) -> dict[str, np.ndarray]:
    """Per-request latency floors (seconds) for each SLO key, best pool per phase."""
    prompts = shape.prompt_tokens
    outs = shape.output_tokens
    uniq, inv = np.unique(prompts, return_inverse=True)
    ttft = np.full(uniq.size, np.inf)
    tpot = np.full(uniq.size, np.inf)
    spec = False
    for pool in scenario.cluster.pools:
        cm = _cost_model(scenario, pool)
        budget = pool.effective_scheduler().max_num_batched_tokens
        spec |= pool.scheduler.speculative is not None
        if pool.role in ("mixed", "prefill"):
            ttft = np.minimum(ttft, [_prefill_floor_s(cm, int(p), budget) for p in uniq])
        if pool.role in ("mixed", "decode"):
            tpot = np.minimum(tpot, [decode_point(cm, 1, int(p))[0] for p in uniq])
    ttft_r, tpot_r = ttft[inv], tpot[inv]
    if spec:
        tpot_r = np.zeros_like(tpot_r)
    e2e_r = ttft_r + np.maximum(outs - 1, 0) * tpot_r
    tpot_r = np.where(outs >= 2, tpot_r, 0.0)
    return {"ttft_s": ttft_r, "tpot_s": tpot_r, "e2e_s": e2e_r}


def cluster_bound(scenario, shape: WorkloadShape) -> ClusterBound:
    """Roofline capacity, attainment bound and price of the scenario's cluster."""
    plans = scenario.memory_plans()
    pools = [pool_bound(scenario, p, shape, plans[p.name]) for p in scenario.cluster.pools]
    mixed = sum(b.capacity_per_s for b in pools if b.role == "mixed")
    pre = [b.capacity_per_s for b in pools if b.role == "prefill"]
    dec = [b.capacity_per_s for b in pools if b.role == "decode"]
    rate = mixed + (min(sum(pre), sum(dec)) if pre and dec else 0.0)
    targets = scenario.slo.targets if scenario.slo is not None else {}
    miss_any = np.zeros(shape.num_requests, dtype=bool)
    floor_miss = {}
    if targets and shape.num_requests:
        floors = _floors(scenario, shape)
        for key, target in targets.items():
            m = floors[key] > target
            floor_miss[key] = float(m.mean())
            miss_any |= m
    att = 1.0 - float(miss_any.mean()) if shape.num_requests else 1.0
    gpus = sum(p.num_gpus for p in scenario.cluster.pools)
    usd = sum(p.num_gpus * p.price_usd_per_gpu_hour() for p in scenario.cluster.pools)
    return ClusterBound(rate, att, floor_miss, usd, gpus, pools)


def interactivity_curve(scenario, pool, shape: WorkloadShape, points: int = 40
                        ) -> list[tuple[int, float, float]]:
    """``[(batch, tokens_per_s_per_user, tokens_per_s_per_gpu), ...]`` of a steady decode at
    the mean context for batches from 1 to the KV/``max_num_seqs`` limit (about ``points``
    batches, geometrically spaced)."""
    cm = _cost_model(scenario, pool)
    plan = scenario.memory_plans()[pool.name]
    ctx = shape.mean_prompt_tokens + shape.mean_output_tokens / 2
    b_max = max(1, min(pool.scheduler.max_num_seqs, int(plan.kv_capacity_tokens // (ctx + 1))))
    bs = np.unique(np.round(np.geomspace(1, b_max, points)).astype(int))
    out = []
    for b in bs:
        interval, tps = decode_point(cm, int(b), ctx)
        out.append((int(b), 1.0 / interval, tps / pool.num_gpus_per_replica))
    return out


def tokens_per_s_per_gpu_bound(scenario, shape: WorkloadShape,
                               tokens_per_s_per_user: float) -> float:
    """Most output tokens/s per GPU the cluster can produce while every sequence decodes at
    ``tokens_per_s_per_user`` or faster (roofline, decode only; NaN when no batch is that
    fast). Pools that decode (``mixed``, ``decode``) contribute their replicas' largest such
    batch; the total is divided by all GPUs of the cluster."""
    if not tokens_per_s_per_user > 0:
        return float("nan")
    plans = scenario.memory_plans()
    ctx = shape.mean_prompt_tokens + shape.mean_output_tokens / 2
    total, any_ok = 0.0, False
    for pool in scenario.cluster.pools:
        if pool.role == "prefill":
            continue
        cm = _cost_model(scenario, pool)
        b_max = max(1, min(pool.scheduler.max_num_seqs,
                           int(plans[pool.name].kv_capacity_tokens // (ctx + 1))))
        limit = 1.0 / tokens_per_s_per_user
        if decode_point(cm, 1, ctx)[0] > limit:
            continue
        b = _largest_batch(cm, b_max, ctx, limit)
        total += pool.replicas * decode_point(cm, b, ctx)[1]
        any_ok = True
    gpus = sum(p.num_gpus for p in scenario.cluster.pools)
    return total / gpus if any_ok and gpus else float("nan")


def operator_breakdown(scenario, shape: WorkloadShape, pool_index: int = 0) -> dict:
    """Per-operator roofline of one prefill chunk (mean prompt, up to the token budget) and one
    decode step (the capacity batch at the mean context) of a pool, for the report's roofline
    chart: ``{"prefill": [OpCost dicts], "decode": [...], "peak_flops_per_s",
    "memory_bandwidth_bytes_per_s", "title"}``."""
    pool = scenario.cluster.pools[pool_index]
    cm = _cost_model(scenario, pool)
    hw = pool.resolved_hardware()
    pb = pool_bound(scenario, pool, shape)
    chunk = int(min(pool.effective_scheduler().max_num_batched_tokens,
                    max(round(shape.mean_prompt_tokens), 2)))
    ctx = int(round(shape.mean_prompt_tokens + shape.mean_output_tokens / 2))
    pre = BatchAggregates.from_pairs([(chunk, 0)])
    dec = BatchAggregates(decode_seqs=pb.decode_batch, decode_ctx_sum=pb.decode_batch * ctx,
                          num_sampled=pb.decode_batch)
    q = pool.quant_config()
    return {
        "prefill": [o.as_dict() for o in cm.breakdown(pre)],
        "decode": [o.as_dict() for o in cm.breakdown(dec)],
        "prefill_label": f"prefill chunk of {chunk} tokens",
        "decode_label": f"decode batch {pb.decode_batch} at context {ctx}",
        "peak_flops_per_s": hw.peak_for(q.activation_dtype),
        "memory_bandwidth_bytes_per_s": hw.memory_bandwidth_bytes_per_s,
        "title": (f"{scenario.resolved_model().name} on {hw.name} (tp={pool.parallel.tp}, "
                  f"pp={pool.parallel.pp}, {q.activation_dtype})"),
    }
