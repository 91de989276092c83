"""Exact macro-stepping: a run with macro-steps equals the one-step-at-a-time run."""
import numpy as np
import pandas as pd
import pytest

from llmsim.api import simulate
from macro_check import assert_macro_equals_single


def random_scenario(rng, policy):
    return {
        "name": "macro", "seed": int(rng.integers(1000)), "model": "llama-3.1-8b",
        "cluster": {"router": str(rng.choice(["round_robin", "least_outstanding", "random"])),
                    "pools": [{"name": "p", "hardware": str(rng.choice(["h100-sxm", "a100-80gb"])),
                               "replicas": int(rng.integers(1, 4)),
                               "scheduler": {"policy": policy,
                                             "max_num_seqs": int(rng.choice([4, 16, 64]))},
                               "memory": {"gpu_memory_utilization":
                                          float(rng.choice([0.25, 0.9]))}}]},
        "workload": {"num_requests": 150,
                     "arrival": {"process": "poisson",
                                 "rate_per_s": float(rng.choice([2.0, 10.0, 40.0]))},
                     "prompt_tokens": {"dist": "lognormal", "mean": 500, "sigma": 1.0,
                                       "max": 4000},
                     "output_tokens": {"dist": "lognormal", "mean": 150, "sigma": 1.0,
                                       "max": 1500}},
        "simulation": {"timeline_interval_s": float(rng.choice([0.5, 5.0]))},
    }


@pytest.mark.parametrize("policy", ["vllm", "orca", "sarathi", "static"])
def test_macro_steps_equal_single_steps(policy):
    rng = np.random.default_rng(11)
    for _ in range(3):
        assert_macro_equals_single(random_scenario(rng, policy))


@pytest.mark.parametrize("stop", ["duration", "no_drain"])
def test_macro_steps_with_duration_limit(stop):
    """A run stopped with a macro-step in flight bills the step in flight up to the stop, as
    single stepping does (busy time and KV use: the pools' utilization and kv_usage_mean)."""
    rng = np.random.default_rng(5)
    for k in range(4):
        scn = random_scenario(rng, "vllm")
        scn["cluster"]["pools"][0]["replicas"] = 1
        if stop == "duration":
            scn["workload"]["num_requests"] = 400
            scn["simulation"]["duration_s"] = 7.3 + 0.37 * k
        else:
            scn["workload"]["num_requests"] = 60
            scn["simulation"]["drain"] = False
        a = simulate(scn)
        scn["simulation"]["macro_steps"] = False
        b = simulate(scn)
        cols = ["request_id", "status", "num_output_tokens"]
        pd.testing.assert_frame_equal(a.requests[cols], b.requests[cols])
        pa, pb = a.summary["pools"]["p"], b.summary["pools"]["p"]
        for key in ("utilization", "kv_usage_mean"):
            assert pa[key] == pytest.approx(pb[key], rel=1e-9, abs=1e-12), (k, key)


@pytest.mark.parametrize("router", ["least_kv", "power_of_two", "capacity_weighted"])
def test_macro_steps_through_finishes_keep_router_views(router):
    """Macro-steps run through request finishes; routers that read ``num_outstanding`` or
    ``kv_usage`` at an arrival see the finishes due by then (``Replica.sync``)."""
    rng = np.random.default_rng(23)
    scn = random_scenario(rng, "vllm")
    scn["cluster"]["router"] = router
    scn["cluster"]["pools"][0]["replicas"] = 3
    scn["workload"]["arrival"]["rate_per_s"] = 25.0
    a, b = assert_macro_equals_single(scn)
    assert a.summary["events"] < b.summary["events"]


def test_macro_steps_when_the_run_stops_at_the_last_arrival():
    """drain: false stops at the last arrival with macro-steps in flight: the finishes they
    hold up to that time are applied (and the rest stays unfinished) as single stepping."""
    rng = np.random.default_rng(8)
    scn = random_scenario(rng, "vllm")
    scn["simulation"]["drain"] = False
    a, _ = assert_macro_equals_single(scn)
    assert (a.requests["status"] == "unfinished").any()


def test_macro_steps_with_sliding_window_and_kv_pressure():
    rng = np.random.default_rng(3)
    scn = random_scenario(rng, "vllm")
    scn["model"] = "mistral-7b"
    scn["cluster"]["pools"][0]["memory"] = {"gpu_memory_utilization": 0.25}
    scn["cluster"]["pools"][0]["hardware"] = "h100-sxm"
    scn["workload"]["arrival"]["rate_per_s"] = 30.0
    assert_macro_equals_single(scn)


def test_blocks_reserved_sums_the_phase_counts_of_each_step():
    import random
    from llmsim.scheduling.runs import blocks_reserved
    rng = random.Random(5)
    for _ in range(300):
        bs = rng.choice([1, 2, 16, 32])
        pc = [rng.randrange(4) for _ in range(bs)]
        r = rng.randrange(bs)
        n = rng.randrange(0, 5 * bs)
        assert blocks_reserved(pc, r, n) == sum(pc[(r + i) % bs] for i in range(n))
