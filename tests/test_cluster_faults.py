"""Spot preemptions and churn: no request vanishes, billing stops with the replica, zero churn
changes nothing, macro-steps stay exact, trace files are validated."""
import copy

import numpy as np
import pandas as pd
import pytest

from llmsim.api import simulate
from llmsim.engine.faults import read_fault_trace
from llmsim.errors import InputError
from macro_check import assert_macro_equals_single

STATUSES = {"finished", "rejected", "unfinished", "failed"}


def scenario(n=300, rate=10.0, faults=None, pools=None, seed=3, out_mean=300):
    scn = {"name": "f", "seed": seed, "model": "llama-3.1-8b",
           "cluster": {"router": "least_outstanding",
                       "pools": pools or [
                           {"name": "spot", "hardware": "h100-sxm", "replicas": 3,
                            "price": "spot"},
                           {"name": "od", "hardware": "h100-sxm", "replicas": 1}]},
           "workload": {"num_requests": n,
                        "arrival": {"process": "poisson", "rate_per_s": rate},
                        "prompt_tokens": {"dist": "lognormal", "mean": 800, "sigma": 0.8,
                                          "max": 4000},
                        "output_tokens": {"dist": "lognormal", "mean": out_mean,
                                          "sigma": 0.8, "max": 1500}},
           "slo": {"ttft_s": 1.0, "tpot_s": 0.05}}
    if faults is not None:
        scn["cluster"]["faults"] = faults
    return scn


def trace_file(tmp_path, rows, name="trace.csv"):
    p = tmp_path / name
    p.write_text("time_s,pool,count\n" + "".join(f"{t},{pool},{c}\n" for t, pool, c in rows))
    return str(p)


def check_all_end(res, n):
    df = res.requests
    assert len(df) == n and df.request_id.is_unique
    assert set(df.status) <= STATUSES
    bad = df[(df.status != "finished") & df.reason.isna()]
    assert bad.empty


@pytest.mark.parametrize("mode", ["restart", "resume", "migrate"])
def test_preempted_replicas_lose_no_request(tmp_path, mode):
    tr = trace_file(tmp_path, [(8.0, "spot", 2), (15.0, "spot", 1)])
    res = simulate(scenario(faults={"spot": {"trace": tr, "warning_s": 2.0,
                                             "on_preempt": mode, "pools": ["spot"]},
                                    "provisioning_s": 10}))
    check_all_end(res, 300)
    assert (res.requests.status == "finished").all()
    pool = res.summary["pools"]["spot"]
    assert pool["spot_notices"] == 3 and pool["replicas_lost"] == 3
    assert pool["replicas_added"] == 3
    moved = pool["migrations"] + pool["restarts"] + pool["resumes"]
    assert moved > 0                      # something was running on them
    if mode == "migrate":
        assert pool["migrations"] > 0
    assert any(n.startswith("faults:") for n in res.summary["notes"])


def test_without_replacement_or_survivor_requests_fail_with_a_reason(tmp_path):
    tr = trace_file(tmp_path, [(5.0, "only", 2)])
    res = simulate(scenario(pools=[{"name": "only", "hardware": "h100-sxm", "replicas": 2}],
                            faults={"spot": {"trace": tr, "warning_s": 1.0,
                                             "replace": False}}))
    check_all_end(res, 300)
    df = res.requests
    failed = df[df.status == "failed"]
    assert len(failed) > 0 and (df.status == "finished").sum() > 0
    assert failed.reason.str.contains("no live replica").all()
    assert (failed.finish_s >= 5.0).all()        # at the notice (queued) or when gone
    assert res.summary["requests"]["failed"] == len(failed)


def test_billing_stops_when_a_replica_is_gone(tmp_path):
    tr = trace_file(tmp_path, [(10.0, "spot", 1)])
    base = scenario(faults={"spot": {"trace": tr, "warning_s": 2.0, "replace": False,
                                     "pools": ["spot"]}})
    res = simulate(base)
    T = res.summary["simulated_s"]
    pool = res.summary["pools"]["spot"]
    # two replicas for the whole run, the preempted one until its notice + warning
    assert pool["billed_replica_s"] == pytest.approx(2 * T + 12.0, rel=1e-12)
    assert pool["usd"] == pytest.approx(pool["billed_replica_s"] * 3.00 / 3600, rel=1e-12)
    assert pool["usd_at_on_demand"] == pytest.approx(pool["billed_replica_s"] * 6.88 / 3600)
    # with a replacement: billed from the end of provisioning (12 + 5 s) to the end of the run
    rep = copy.deepcopy(base)
    rep["cluster"]["faults"]["spot"]["replace"] = True
    rep["cluster"]["faults"]["provisioning_s"] = 5.0
    res2 = simulate(rep)
    T2 = res2.summary["simulated_s"]
    pool2 = res2.summary["pools"]["spot"]
    assert pool2["billed_replica_s"] == pytest.approx(2 * T2 + 12.0 + (T2 - 17.0), rel=1e-12)


def test_spot_rate_macro_steps_equal_single_steps():
    scn = scenario(n=250, faults={"spot": {"rate_per_hour": 150.0, "warning_s": 3.0,
                                           "on_preempt": "migrate", "pools": ["spot"]},
                                  "provisioning_s": 15})
    a = simulate(scn)
    scn["simulation"] = {"macro_steps": False}
    b = simulate(scn)
    cols = ["request_id", "status", "num_output_tokens", "num_preemptions", "pool", "replica"]
    pd.testing.assert_frame_equal(a.requests[cols], b.requests[cols])
    for c in ["first_scheduled_s", "first_token_s", "finish_s"]:
        np.testing.assert_allclose(a.requests[c], b.requests[c], rtol=1e-9, atol=1e-12)
    ga = np.sort(np.repeat(a.itl_gaps_s, a.itl_weights))
    gb = np.sort(np.repeat(b.itl_gaps_s, b.itl_weights))
    np.testing.assert_allclose(ga, gb, rtol=1e-9, atol=1e-12)
    pa, pb = a.summary["pools"]["spot"], b.summary["pools"]["spot"]
    assert pa["replicas_lost"] == pb["replicas_lost"] > 0
    assert pa["migrations"] == pb["migrations"]
    assert pa["billed_replica_s"] == pytest.approx(pb["billed_replica_s"], rel=1e-12)
    assert pa["utilization"] == pytest.approx(pb["utilization"], rel=1e-9)


def test_spot_rate_is_deterministic_and_seeded():
    scn = scenario(n=150, faults={"spot": {"rate_per_hour": 200.0, "warning_s": 2.0}})
    a, b = simulate(scn), simulate(scn)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    scn2 = copy.deepcopy(scn)
    scn2["seed"] = 4
    c = simulate(scn2)
    assert a.summary["pools"]["spot"]["billed_replica_s"] != \
        c.summary["pools"]["spot"]["billed_replica_s"]


def test_zero_churn_equals_no_churn_exactly():
    pools = [{"name": "p", "hardware": "h100-sxm", "replicas": 2,
              "scheduler": {"max_num_seqs": 32}}]
    plain = simulate(scenario(n=200, pools=pools))
    zero = simulate(scenario(n=200, pools=pools,
                             faults={"churn": {"rate_per_hour": 0.0}}))
    pd.testing.assert_frame_equal(plain.requests, zero.requests)
    np.testing.assert_array_equal(plain.itl_gaps_s, zero.itl_gaps_s)
    np.testing.assert_array_equal(plain.itl_weights, zero.itl_weights)
    assert plain.summary["simulated_s"] == zero.summary["simulated_s"]
    for k in ("billed_replica_s", "busy_replica_s", "kv_usage_mean", "num_steps"):
        assert plain.summary["pools"]["p"][k] == zero.summary["pools"]["p"][k]
    pd.testing.assert_frame_equal(plain.timeline, zero.timeline)


def test_churn_breaks_pipelines_and_every_request_still_ends():
    pools = [{"name": "p", "hardware": "h100-sxm", "replicas": 3,
              "parallel": {"pp": 2}, "scheduler": {"max_num_seqs": 32}}]
    res = simulate(scenario(n=200, pools=pools,
                            faults={"churn": {"rate_per_hour": 60.0, "on_failure": "restart"},
                                    "provisioning_s": 5}))
    check_all_end(res, 200)
    assert (res.requests.status == "finished").all()
    p = res.summary["pools"]["p"]
    assert p["replicas_lost"] > 0 and p["restarts"] > 0 and p["resumes"] == 0


def test_fault_trace_reader_reports_rows(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time_s,pool,count\n1.5,a,2\n0.5,b\n")
    assert read_fault_trace(p, ["a", "b"]) == [(0.5, "b", 1), (1.5, "a", 2)]
    p.write_text("time_s,pool,count\n-1,a,1\n2,zz,1\n3,a,0\n")
    with pytest.raises(InputError) as e:
        read_fault_trace(p, ["a"])
    probs = e.value.problems
    assert [(q.line, q.key) for q in probs] == [(2, "time_s"), (3, "pool"), (4, "count")]
    p.write_text("when,pool\n1,a\n")
    with pytest.raises(InputError, match="missing column 'time_s'"):
        read_fault_trace(p, ["a"])


def random_cluster(rng):
    """A random mix of disaggregated, mixed, pipelined and decentralized pools with spot
    preemptions and churn (the invariants of llmsim/invariants.py run after every simulate in
    the tests)."""
    pol = lambda: str(rng.choice(["vllm", "sarathi", "orca"]))   # noqa: E731
    pools = [{"name": "pre", "hardware": "h100-sxm", "replicas": int(rng.integers(1, 3)),
              "role": "prefill", "scheduler": {"policy": pol(), "max_num_seqs": 16}},
             {"name": "dec", "hardware": str(rng.choice(["h100-sxm", "a100-80gb"])),
              "replicas": int(rng.integers(1, 3)), "role": "decode",
              "region": str(rng.choice(["default", "far"])),
              "scheduler": {"policy": pol(), "max_num_seqs": int(rng.choice([2, 64]))},
              "memory": {"gpu_memory_utilization": float(rng.choice([0.3, 0.9]))}},
             {"name": "mix", "hardware": "h100-sxm", "replicas": int(rng.integers(1, 3)),
              "parallel": {"pp": int(rng.choice([1, 2]))},
              "scheduler": {"policy": str(rng.choice(["vllm", "static"])), "max_num_seqs": 8}},
             {"name": "sw", "hardware": "rtx-4090", "replicas": 1,
              "scheduler": {"policy": pol(), "max_num_seqs": 8,
                            "max_num_batched_tokens": 2048},
              "stages": [{"region": "default"}, {"region": "far", "hardware": "l4"}]}]
    return {"name": "rand", "seed": int(rng.integers(1000)), "model": "llama-3.1-8b",
            "cluster": {"router": str(rng.choice(["least_kv", "power_of_two",
                                                  "least_outstanding"])),
                        "pools": pools,
                        "network": {"cross_region": {"bandwidth_gbps": 5, "latency_ms": 30}},
                        "faults": {"spot": {"rate_per_hour": 200.0,
                                            "warning_s": float(rng.choice([0.0, 3.0])),
                                            "on_preempt": str(rng.choice(["migrate",
                                                                          "restart"]))},
                                   "churn": {"rate_per_hour": 60.0, "pools": ["sw"]},
                                   "provisioning_s": float(rng.choice([2.0, 20.0]))}},
            "workload": {"num_requests": 120,
                         "arrival": {"process": "poisson", "rate_per_s": 20.0},
                         "prompt_tokens": {"dist": "lognormal", "mean": 500, "sigma": 1.0,
                                           "max": 3000},
                         "output_tokens": {"dist": "lognormal", "mean": 120, "sigma": 1.0,
                                           "max": 800}},
            "simulation": {"timeline_interval_s": 2.0}}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 6, 7])
def test_random_clusters_conserve_requests_and_macro_steps_stay_exact(seed):
    """Spot losses, churn, migrations, hand-offs and pipelines at once: every request ends,
    and macro-steps equal single steps, pools' utilization and KV use included (seeds 3, 4, 6
    and 7 caught the busy time and KV use of the step in flight when a replica is lost or
    blocks are freed mid-step)."""
    scn = random_cluster(np.random.default_rng(seed))
    a, _ = assert_macro_equals_single(scn, ["pool"])
    check_all_end(a, 120)
    # nothing fails or is left over (a long prompt may be rejected by the small swarm pool)
    assert set(a.requests.status) <= {"finished", "rejected"}
    assert (a.requests.status == "finished").mean() > 0.9
