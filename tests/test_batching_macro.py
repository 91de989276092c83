"""Exact macro-steps with the policies of issue 6: prefix caching, sjf, priority, swap and
vllm_v1 give identical request tables with macro-steps on and off."""
import numpy as np
import pytest

from macro_check import assert_macro_equals_single

CASES = {
    "prefix": ({"policy": "vllm_v1"}, {"enable_prefix_caching": True}),
    "prefix_offload": ({"policy": "sarathi", "preemption_mode": "swap"},
                       {"enable_prefix_caching": True, "swap_space_gb": 2.0,
                        "kv_offload": True}),
    "sjf": ({"policy": "vllm", "scheduling_policy": "sjf", "sjf_key": "total_tokens",
             "output_length_predictor": {"error_sigma": 0.5, "seed": 2}}, {}),
    "priority": ({"policy": "vllm_v1", "scheduling_policy": "priority"}, {}),
    "swap": ({"policy": "vllm", "preemption_mode": "swap"}, {"swap_space_gb": 1.0}),
    "swap_v1": ({"policy": "vllm_v1", "preemption_mode": "swap",
                 "enable_chunked_prefill": False}, {"swap_space_gb": 1.0}),
}


def scenario(rng, case):
    sched, mem = CASES[case]
    sched = dict(sched, max_num_seqs=int(rng.choice([8, 64])))
    mem = dict(mem, gpu_memory_utilization=float(rng.choice([0.23, 0.9])))
    workload = {"num_requests": 120,
                "arrival": {"process": "poisson", "rate_per_s": float(rng.choice([5.0, 30.0]))},
                "prompt_tokens": {"dist": "lognormal", "mean": 600, "sigma": 1.0, "max": 4000},
                "output_tokens": {"dist": "lognormal", "mean": 200, "sigma": 1.0,
                                  "max": 1500}}
    if case.startswith("prefix"):
        workload["sessions"] = {"turns": 4, "think_time_s": 2.0, "shared_prefix_tokens": 256,
                                "hash_block_tokens": 16}
    if case == "priority":
        workload = {"num_requests": 120, "sources": [
            {"name": "hi", "priority": 0, "rate_per_s": 4.0,
             "prompt_tokens": workload["prompt_tokens"],
             "output_tokens": workload["output_tokens"]},
            {"name": "lo", "priority": 5, "rate_per_s": 20.0,
             "prompt_tokens": workload["prompt_tokens"],
             "output_tokens": workload["output_tokens"]}]}
    return {"name": "macro6", "seed": int(rng.integers(1000)), "model": "llama-3.1-8b",
            "cluster": {"router": "round_robin",
                        "pools": [{"name": "p", "hardware": "h100-sxm",
                                   "replicas": int(rng.integers(1, 3)),
                                   "scheduler": sched, "memory": mem}]},
            "workload": workload,
            "simulation": {"timeline_interval_s": float(rng.choice([0.5, 5.0]))}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_macro_steps_equal_single_steps(case):
    rng = np.random.default_rng(13)
    for _ in range(2):
        assert_macro_equals_single(scenario(rng, case), ["num_cached_tokens"])
