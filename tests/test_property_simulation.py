"""Property-based tests (hypothesis) over random small scenarios: batching policies
static/orca/vllm/sarathi, tp/pp, KV memory sizes (gpu_memory_utilization, block size), routers,
traffic rates and lengths (some prompts too long for the KV cache), duration limits, drain,
admission limits (max_queue_len, request_timeout_s), macro-steps on/off.

Also disaggregated prefill/decode pools, and faults (spot preemptions with migrate/restart/
resume, peer churn) with or without replacement.

For every example: the run finishes, no exception but InputError escapes, every invariant of
llmsim/invariants.py holds (the post-run hook is on for the test session, see conftest.py; the
per-step KV range check is switched on through ``simulation.check_invariants``), and the run is
deterministic (same seed → identical request table and summary; another seed → another stream).

Bounded: at most ~40 requests per example, 25 examples per property (a fixed, derandomized
set); the file takes well under a minute. ``LLMSIM_PROPERTY_EXAMPLES=500 pytest
tests/test_property_simulation.py`` runs a longer random fuzzing campaign.

"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from llmsim.api import simulate
from llmsim.errors import InputError
from llmsim.invariants import check_result
from llmsim.scenario import load_scenario
from llmsim.scenario_schema import ROUTERS

#: LLMSIM_PROPERTY_EXAMPLES=N runs N random (not derandomized) examples per property: a longer
#: fuzzing campaign than the default, fixed set of 25 that CI runs.
FUZZ = os.environ.get("LLMSIM_PROPERTY_EXAMPLES")
SETTINGS = settings(max_examples=int(FUZZ) if FUZZ else 25, deadline=None,
                    derandomize=not FUZZ,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _length(draw, lo, hi):
    kind = draw(st.sampled_from(["constant", "uniform", "lognormal"]))
    if kind == "constant":
        return {"dist": "constant", "value": draw(st.integers(lo, hi))}
    if kind == "uniform":
        a = draw(st.integers(lo, hi))
        b = draw(st.integers(a, hi))
        return {"dist": "uniform", "min": a, "max": b}
    mean = draw(st.floats(lo, hi))
    return {"dist": "lognormal", "mean": mean, "sigma": draw(st.floats(0.0, 1.2)),
            "max": hi * 4}


@st.composite
def pools(draw, name: str, policy: str):
    """One pool of ``policy`` with random hardware, parallelism, batch limits and memory."""
    seqs = draw(st.sampled_from([1, 4, 16, 64, 256]))
    sched = {"policy": policy, "max_num_seqs": seqs,
             "scheduling_policy": draw(st.sampled_from(["fcfs", "priority", "sjf"]))}
    budget = draw(st.sampled_from([None, 512, 2048, 8192]))
    if budget is not None:
        sched["max_num_batched_tokens"] = max(budget, seqs)
    if policy == "vllm":
        sched["enable_chunked_prefill"] = draw(st.sampled_from([None, True, False]))
    return {
        "name": name, "hardware": draw(st.sampled_from(["h100-sxm", "a100-40gb"])),
        "replicas": draw(st.integers(1, 3)),
        "parallel": {"tp": draw(st.sampled_from([1, 2])), "pp": draw(st.sampled_from([1, 2]))},
        "scheduler": sched,
        "memory": {"gpu_memory_utilization": draw(st.floats(0.25, 0.9)),
                   "block_size": draw(st.sampled_from([1, 8, 16, 32]))},
    }


@st.composite
def scenarios(draw, *, random_arrivals: bool = False):
    policy = draw(st.sampled_from(["static", "orca", "vllm", "sarathi"]))
    shape = draw(st.sampled_from(["one", "one", "two", "disaggregated"]))
    if shape == "disaggregated" and policy != "static":   # prefill pool -> KV -> decode pool
        cluster = [dict(draw(pools("pf", policy)), role="prefill"),
                   dict(draw(pools("dc", policy)), role="decode")]
    else:
        cluster = [draw(pools("p", policy))]
    if shape == "two":                  # a second mixed pool (other hardware/policy)
        other = draw(st.sampled_from(["orca", "vllm", "sarathi"] if policy != "static"
                                     else ["static"]))
        cluster.append(draw(pools("q", other)))
    faults = {}
    kind = draw(st.sampled_from([None, None, "spot", "churn"]))
    if kind == "spot":
        faults["spot"] = {"rate_per_hour": draw(st.sampled_from([100.0, 1000.0, 5000.0])),
                          "warning_s": draw(st.sampled_from([0.0, 2.0, 30.0])),
                          "on_preempt": draw(st.sampled_from(["migrate", "restart", "resume"])),
                          "replace": draw(st.booleans())}
    elif kind == "churn":
        faults["churn"] = {"rate_per_hour": draw(st.sampled_from([100.0, 1000.0, 5000.0])),
                           "on_failure": draw(st.sampled_from(["restart", "resume"])),
                           "replace": draw(st.booleans())}
    if kind is not None:
        faults["provisioning_s"] = draw(st.sampled_from([0.0, 5.0, 60.0]))
    process = "poisson" if random_arrivals else draw(
        st.sampled_from(["poisson", "gamma", "constant"]))
    arrival = {"process": process, "rate_per_s": draw(st.floats(0.5, 200.0))}
    if process == "gamma":
        arrival["cv"] = draw(st.floats(0.3, 4.0))
    workload = {"num_requests": draw(st.integers(3 if random_arrivals else 1, 40)),
                "arrival": arrival,
                "prompt_tokens": _length(draw, 1, draw(st.sampled_from([200, 2000, 12000]))),
                "output_tokens": _length(draw, 1, draw(st.sampled_from([8, 100, 500])))}
    stop = draw(st.sampled_from(["drain", "duration", "no_drain"]))
    sim = {"check_invariants": True, "macro_steps": draw(st.booleans()),
           "timeline_interval_s": draw(st.sampled_from([0.05, 1.0]))}
    if stop == "duration":
        sim["duration_s"] = draw(st.floats(0.2, 20.0))
    elif stop == "no_drain":
        sim["drain"] = False
    if draw(st.booleans()):
        sim["max_queue_len"] = draw(st.integers(1, 20))
    if draw(st.booleans()):
        sim["request_timeout_s"] = draw(st.floats(0.05, 10.0))
    return {"name": "prop", "seed": draw(st.integers(0, 2**31 - 1)), "model": "llama-3.1-8b",
            "cluster": {"router": draw(st.sampled_from(ROUTERS)), "pools": cluster,
                        "faults": faults},
            "workload": workload, "slo": {"ttft_s": 1.0, "tpot_s": 0.1},
            "simulation": sim}


def _load(d):
    """The validated scenario, or reject the example when the plan does not fit in memory
    (the only InputError these scenarios can hit; checked by the message)."""
    try:
        return load_scenario(d)
    except InputError as exc:
        if all("does not fit" in p.message for p in exc.problems):
            reject()
        raise


def _summary_without_wall(s: dict) -> dict:
    return {k: v for k, v in s.items() if k != "wall_s"}


@SETTINGS
@given(scenarios())
def test_random_scenarios_keep_every_invariant_and_are_deterministic(d):
    scn = _load(d)
    a = simulate(scn)                # the post-run invariant hook runs inside (conftest.py)
    check_result(a)                  # + summary-level rules (cost = billed time x price, ...)
    r = a.summary["requests"]
    assert r["arrived"] == len(a.requests)
    if d["simulation"].get("duration_s") is None:   # every request arrives
        assert r["arrived"] == d["workload"]["num_requests"]
        if d["simulation"].get("drain", True):        # ... and ends
            assert r["unfinished"] == 0
    limit = d["simulation"].get("max_queue_len")
    rej = a.requests[a.requests.status == "rejected"]
    reasons = rej.reason.astype(str)
    allowed = ("exceeds the model's context length", "KV cache holds", "max_num_batched_tokens",
               "waiting queue full", "timed out", "replica")
    assert all(any(s in reason for s in allowed) for reason in reasons), set(reasons)
    if limit is None:
        assert not reasons.str.contains("waiting queue full").any()
    if d["simulation"].get("request_timeout_s") is None:
        assert not reasons.str.contains("timed out").any()
    b = simulate(scn)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.timeline, b.timeline)
    assert np.array_equal(a.itl_gaps_s, b.itl_gaps_s)
    assert _summary_without_wall(a.summary) == _summary_without_wall(b.summary)


@SETTINGS
@given(scenarios(random_arrivals=True))
def test_another_seed_gives_another_run(d):
    sim = {k: v for k, v in d["simulation"].items() if k not in ("duration_s", "drain")}
    d = dict(d, simulation=sim)    # every arrival is in the table
    scn = _load(d)
    a = simulate(scn)
    d2 = dict(d, seed=d["seed"] + 1)
    b = simulate(load_scenario(d2))
    # Poisson arrivals with >= 3 requests: the arrival times differ with probability 1
    assert not np.array_equal(a.requests.arrival_s.to_numpy(), b.requests.arrival_s.to_numpy())


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.floats(1.0, 50.0), st.sampled_from(["vllm", "sarathi"]))
def test_a_run_cut_by_duration_is_a_prefix_of_the_full_run(seed, duration_s, policy):
    """Requests that finished before a duration limit finish at the same times in the run
    without the limit (the future does not change the past)."""
    base = {"name": "cut", "seed": seed, "model": "llama-3.1-8b",
            "cluster": {"pools": [{"name": "p", "hardware": "h100-sxm", "replicas": 1,
                                   "scheduler": {"policy": policy}}]},
            "workload": {"num_requests": 30,
                         "arrival": {"process": "poisson", "rate_per_s": 4.0},
                         "prompt_tokens": {"dist": "lognormal", "mean": 500, "sigma": 0.5},
                         "output_tokens": {"dist": "lognormal", "mean": 60, "sigma": 0.5}}}
    full = simulate(base).requests.set_index("request_id")
    cut_d = dict(base, simulation={"duration_s": duration_s})
    cut = simulate(cut_d).requests.set_index("request_id")
    fin = cut[cut.status == "finished"]
    assert (fin.finish_s <= duration_s).all()
    ref = full.loc[fin.index]
    assert np.allclose(fin.finish_s, ref.finish_s, rtol=1e-12, atol=0)
    assert (fin.num_output_tokens == ref.num_output_tokens).all()
    # arrivals before the limit are all in the cut table, none after it
    arrived = full.arrival_s < duration_s
    assert set(cut.index) == set(full.index[arrived])
    assert math.isclose(simulate(cut_d).summary["simulated_s"], duration_s)


@pytest.mark.parametrize("policy", ["static", "orca", "vllm", "sarathi"])
def test_tiny_kv_cache_forces_preemption_or_rejection_without_breaking_invariants(policy):
    """A hand-picked stress case: 16,800 KV tokens per replica (H100, utilization 0.25),
    prompts up to 12k tokens: long prompts are rejected with a reason, paged policies preempt,
    and every invariant still holds."""
    d = {"name": "tiny", "seed": 5, "model": "llama-3.1-8b",
         "cluster": {"pools": [{"name": "p", "hardware": "h100-sxm", "replicas": 1,
                                "scheduler": {"policy": policy, "max_num_seqs": 64},
                                "memory": {"gpu_memory_utilization": 0.25}}]},
         "workload": {"num_requests": 60,
                      "arrival": {"process": "poisson", "rate_per_s": 50.0},
                      "prompt_tokens": {"dist": "lognormal", "mean": 3000, "sigma": 1.0,
                                        "max": 30000},
                      "output_tokens": {"dist": "lognormal", "mean": 300, "sigma": 0.8,
                                        "max": 2000}},
         "simulation": {"check_invariants": True}}
    res = simulate(d)
    check_result(res)
    r = res.summary["requests"]
    assert r["unfinished"] == 0 and r["arrived"] == 60
    cap = res.summary["pools"]["p"]["kv_capacity_tokens"]
    rej = res.requests[res.requests.status == "rejected"]
    # this stream has requests that can never fit: exactly those are rejected, with a reason
    # that names the capacity (contiguous reserves prompt + output as well)
    need = res.requests.num_prompt_tokens + np.where(
        res.requests.status == "finished", res.requests.num_output_tokens, 0)
    assert (need[res.requests.status == "finished"] <= cap).all()
    assert len(rej) > 0
    assert rej.reason.str.contains("KV cache holds|max_num_batched_tokens").all(), set(rej.reason)
    assert rej.reason.str.contains("KV cache holds").any()
    if policy in ("vllm", "sarathi"):
        assert r["preemptions"] > 0
