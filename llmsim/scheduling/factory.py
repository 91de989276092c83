"""Build a replica's schedulers (and their KV managers) from a scenario pool.

Contract: ``build_schedulers(pool_cfg, model, plan, sim_cfg, itl) -> list[Scheduler]`` returns
one scheduler per pipeline virtual engine (pp of them, each with 1/pp of the KV blocks of the
``MemoryPlan`` and of the host swap space); ``scheduler_settings(pool_cfg)`` resolves the
policy defaults. The engine knows nothing else about how policies are configured. What the
pool's settings turn into:

- ``memory.enable_prefix_caching`` → :class:`~llmsim.memory.prefix.PrefixCachingKVCacheManager`;
- ``memory.swap_space_gb`` > 0 with ``preemption_mode: swap`` or ``memory.kv_offload`` → a
  :class:`~llmsim.memory.host.HostKVTier` over the hardware card's ``host_link``;
- ``scheduling_policy: sjf`` → a waiting queue ordered by ``sjf_key`` (prompt tokens, or the
  output length of :class:`~llmsim.scheduling.predictor.OutputLengthPredictor`);
- ``speculative`` → the policy class with :class:`~llmsim.scheduling.speculative.
  SpeculativeMixin`; method ``draft`` builds the draft model's cost model on the pool's GPUs
  (the pool's tp when the draft's heads allow it, else 1) and takes the draft's weights and KV
  out of the KV-cache capacity (blocks = (free KV bytes − draft weights) / (target + draft KV
  bytes per token) per GPU).
"""
from __future__ import annotations

from llmsim.errors import InputError, input_problem
from llmsim.memory import MANAGERS, PrefixCachingKVCacheManager, host_tier_for
from llmsim.scheduling.policies import SCHEDULERS
from llmsim.scheduling.predictor import OutputLengthPredictor, sjf_length_key
from llmsim.scheduling.speculative import speculative_class

def scheduler_settings(pool_cfg):
    """(policy, max_num_batched_tokens, enable_chunked_prefill, kv manager) with the policy
    defaults resolved by the scenario schema (``PoolConfig.effective_scheduler`` /
    ``effective_memory``: the one place the defaults live)."""
    s = pool_cfg.effective_scheduler()
    return (s.policy, s.max_num_batched_tokens, s.enable_chunked_prefill,
            pool_cfg.effective_memory().manager)


def _where(pool_cfg, *keys) -> str:
    return ".".join((f"cluster.pools[{pool_cfg.name}]",) + keys)


def speculative_setup(pool_cfg, model, plan):
    """(scheduler keyword arguments, KV blocks per replica) for the pool's speculative
    decoding. Raises InputError when the draft model leaves no room for the KV cache."""
    from llmsim.cost import CostModel
    from llmsim.cost.types import ParallelConfig
    spec = pool_cfg.scheduler.speculative
    hw = pool_cfg.resolved_hardware()
    parallel = pool_cfg.parallel_config()
    quant = pool_cfg.quant_config()
    kw = dict(num_speculative_tokens=spec.num_speculative_tokens,
              acceptance_rate=spec.acceptance_rate,
              target_cost=CostModel(model, hw, parallel, quant), draft_cost=None)
    blocks = plan.num_gpu_blocks
    if spec.method == "draft":
        from llmsim.models.catalog import load_model
        from llmsim.scenario_schema import resolve_path_ref
        draft = load_model(resolve_path_ref(spec.draft_model, getattr(pool_cfg, "_base_dir",
                                                                      None)))
        try:
            dcost = CostModel(draft, hw, ParallelConfig(tp=parallel.tp), quant)
        except InputError:
            dcost = CostModel(draft, hw, ParallelConfig(tp=1), quant)
        kw["draft_cost"] = dcost
        free = plan.free_kv_bytes_per_gpu - dcost.weights_bytes_per_gpu
        per_token = plan.kv_bytes_per_token_per_gpu + dcost.stage_kv_bytes_per_token[0]
        blocks = int(free // (per_token * plan.block_size)) if free > 0 else 0
        if blocks < 1:
            raise InputError(input_problem(
                f"the draft model {draft.name} ({dcost.weights_bytes_per_gpu / 1e9:.1f} GB of "
                f"weights per GPU) leaves no room for the KV cache "
                f"({plan.free_kv_bytes_per_gpu / 1e9:.1f} GB free per GPU after the target "
                f"model): use a smaller draft model, more GPUs or method 'ngram'",
                key=_where(pool_cfg, "scheduler", "speculative", "draft_model"),
                value=spec.draft_model))
    return kw, blocks


def build_schedulers(pool_cfg, model, plan, sim_cfg, itl) -> list:
    policy, budget, chunked, manager = scheduler_settings(pool_cfg)
    mem = pool_cfg.memory
    s = pool_cfg.scheduler
    pp = pool_cfg.parallel.pp
    cls = SCHEDULERS[policy]
    num_blocks = plan.num_gpu_blocks
    spec_kw = {}
    if s.speculative is not None:
        if policy == "static":
            raise InputError(input_problem(
                "speculative decoding needs an iteration-level policy (orca, vllm, vllm_v1, "
                "sarathi), not 'static'", key=_where(pool_cfg, "scheduler", "speculative")))
        spec_kw, num_blocks = speculative_setup(pool_cfg, model, plan)
        cls = speculative_class(cls)
    length_key = None
    if s.scheduling_policy == "sjf":
        pred = s.output_length_predictor
        length_key = sjf_length_key(s.sjf_key, OutputLengthPredictor(pred.error_sigma,
                                                                     pred.seed))
    paged = manager == "paged"
    want_host = paged and mem.swap_space_gb > 0 and (s.preemption_mode == "swap"
                                                      or mem.kv_offload)
    hw = pool_cfg.resolved_hardware() if want_host else None
    out = []
    for _ in range(pp):
        host = host_tier_for(mem.swap_space_bytes, plan.block_bytes_per_gpu, plan.num_gpus,
                             hw.host_link, mem.block_size, pp) if want_host else None
        if paged and mem.enable_prefix_caching:
            kv = PrefixCachingKVCacheManager(num_blocks // pp, mem.block_size,
                                             watermark=mem.watermark, host=host,
                                             offload=mem.kv_offload)
        else:
            kv = MANAGERS[manager](num_blocks // pp, mem.block_size, watermark=mem.watermark)
            kv.host = host
        kw = dict(max_num_seqs=s.max_num_seqs, max_num_batched_tokens=budget,
                  enable_chunked_prefill=chunked,
                  preemption_mode=s.preemption_mode,
                  scheduling_policy=s.scheduling_policy,
                  sliding_window=model.sliding_window,
                  max_model_len=model.max_model_len,
                  max_queue_len=sim_cfg.max_queue_len,
                  request_timeout_s=sim_cfg.request_timeout_s,
                  itl=itl, length_key=length_key, **spec_kw)
        if policy in ("sarathi", "vllm", "vllm_v1"):
            kw["long_prefill_token_threshold"] = s.long_prefill_token_threshold
        out.append(cls(kv, **kw))
    return out
