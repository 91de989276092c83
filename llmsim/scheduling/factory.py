"""Build a replica's schedulers (and their KV managers) from a scenario pool.

Contract: ``build_schedulers(pool_cfg, model, plan, sim_cfg, itl) -> list[Scheduler]`` returns
one scheduler per pipeline virtual engine (pp of them, each with 1/pp of the KV blocks of the
``MemoryPlan``); ``scheduler_settings(pool_cfg)`` resolves the policy defaults. The engine knows
nothing else about how policies are configured.
"""
from __future__ import annotations

from llmsim.memory import MANAGERS
from llmsim.scheduling.policies import SCHEDULERS

DEFAULT_BUDGET_TOKENS = {"static": 8192, "orca": 8192, "vllm": 8192, "sarathi": 2048}
DEFAULT_MANAGER = {"static": "contiguous", "orca": "contiguous", "vllm": "paged",
                   "sarathi": "paged"}


def scheduler_settings(pool_cfg):
    """(policy, max_num_batched_tokens, enable_chunked_prefill, kv manager) with defaults."""
    s = pool_cfg.scheduler
    policy = s.policy
    budget = s.max_num_batched_tokens or DEFAULT_BUDGET_TOKENS[policy]
    chunked = s.enable_chunked_prefill
    if chunked is None:
        chunked = policy == "sarathi"
    manager = pool_cfg.memory.manager or DEFAULT_MANAGER[policy]
    return policy, budget, chunked, manager


def build_schedulers(pool_cfg, model, plan, sim_cfg, itl) -> list:
    policy, budget, chunked, manager = scheduler_settings(pool_cfg)
    mem = pool_cfg.memory
    s = pool_cfg.scheduler
    pp = pool_cfg.parallel.pp
    out = []
    for _ in range(pp):
        kv = MANAGERS[manager](plan.num_gpu_blocks // pp, mem.block_size,
                               watermark=mem.watermark)
        kw = dict(max_num_seqs=s.max_num_seqs, max_num_batched_tokens=budget,
                  enable_chunked_prefill=chunked,
                  preemption_mode=s.preemption_mode,
                  scheduling_policy=s.scheduling_policy,
                  sliding_window=model.sliding_window,
                  max_model_len=model.max_model_len,
                  max_queue_len=sim_cfg.max_queue_len,
                  request_timeout_s=sim_cfg.request_timeout_s,
                  itl=itl)
        if policy in ("sarathi", "vllm"):
            kw["long_prefill_token_threshold"] = s.long_prefill_token_threshold
        out.append(SCHEDULERS[policy](kv, **kw))
    return out
