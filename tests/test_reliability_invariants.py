"""llmsim/invariants.py: the switch, clean runs pass, and every rule fires on a corrupted run
with a message that names the rule, the request/pool and the values (the checks can fail)."""
from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from llmsim import invariants as I
from llmsim.api import simulate
from llmsim.engine.simulation import Simulation
from llmsim.invariants import InvariantError
from llmsim.scenario import load_scenario


def scenario(n=40, rate=20.0, out=20, prompt=300, **sim):
    return {"name": "inv", "seed": 7, "model": "llama-3.1-8b",
            "cluster": {"router": "round_robin",
                        "pools": [{"name": "p", "hardware": "h100-sxm", "replicas": 2,
                                   "price": {"usd_per_hour": 3.6},
                                   "scheduler": {"policy": "vllm"}}]},
            "workload": {"num_requests": n,
                         "arrival": {"process": "poisson", "rate_per_s": rate},
                         "prompt_tokens": {"dist": "constant", "value": prompt},
                         "output_tokens": {"dist": "constant", "value": out}},
            "simulation": sim}


@pytest.fixture(scope="module")
def clean():
    """A finished drained run: (Simulation, RunOutput)."""
    sim = Simulation(load_scenario(scenario()))
    return sim, sim.run()


def _with(run, **changes):
    return dataclasses.replace(run, **changes)


def _one(violations, needle):
    hits = [v for v in violations if needle in v]
    assert hits, (needle, violations)
    return hits[0]


# ----------------------------------------------------------------------------- switch
def test_env_switch(monkeypatch):
    scn = load_scenario(scenario())
    on = load_scenario(scenario(check_invariants=True))
    monkeypatch.delenv(I.ENV_VAR, raising=False)
    assert I.env_setting() is None
    assert not I.invariants_enabled(scn) and I.invariants_enabled(on)
    for v in ("1", "true", "YES", "on"):
        monkeypatch.setenv(I.ENV_VAR, v)
        assert I.invariants_enabled(scn)
    for v in ("0", "false", "No", "off", ""):
        monkeypatch.setenv(I.ENV_VAR, v)
        assert not I.invariants_enabled(on)     # the environment switches them off


def test_the_test_session_checks_invariants():
    """conftest.py turns the post-run hook on for every test."""
    assert I.env_setting() is True


def test_hook_runs_only_when_enabled(clean, monkeypatch):
    sim, run = clean
    broken = _with(run, requests=run.requests.iloc[1:].reset_index(drop=True))
    monkeypatch.setenv(I.ENV_VAR, "0")
    assert I.check_run_if_enabled(sim, broken) is False
    monkeypatch.setenv(I.ENV_VAR, "1")
    with pytest.raises(InvariantError):
        I.check_run_if_enabled(sim, broken)
    assert I.check_run_if_enabled(sim, run) is True


# ----------------------------------------------------------------------------- clean runs
def test_clean_run_has_no_violation(clean):
    sim, run = clean
    assert I.run_violations(sim, run) == []
    assert len(run.requests) == 40 and (run.requests.status == "finished").all()


def test_clean_summary_cost_is_billed_time_times_price():
    """2 replicas x 1 GPU at $3.60/GPU-h, stopped at 10 s: billed 20 replica-s = 20 GPU-s =
    0.005556 GPU-h = $0.02 exactly."""
    res = simulate(scenario(n=400, rate=30.0, duration_s=10.0))
    s = res.summary
    assert s["simulated_s"] == pytest.approx(10.0)
    assert s["pools"]["p"]["billed_replica_s"] == pytest.approx(20.0)
    assert s["cost"]["gpu_hours"] == pytest.approx(20.0 / 3600)
    assert s["cost"]["usd"] == pytest.approx(0.02, rel=1e-12)
    assert I.check_summary(s) == []
    I.check_result(res)


# ----------------------------------------------------------------------------- R1
def test_r1_duplicate_missing_and_unknown_status(clean):
    sim, run = clean
    df = run.requests
    dup = pd.concat([df, df.iloc[[3]]], ignore_index=True)
    v = I.run_violations(sim, _with(run, requests=dup))
    assert "request 3" in _one(v, "R1 a request appears more than once")
    lost = df[df.request_id != 39].reset_index(drop=True)
    v = I.run_violations(sim, _with(run, requests=lost))
    assert "40 requests arrived but the request table has 39 rows" in _one(v, "R1 40 requests")
    assert "request 39 arrived at" in _one(v, "an arrival was lost")
    bad = df.copy()
    bad.loc[5, "status"] = "done"
    bad.loc[6, "status"] = "unfinished"
    bad.loc[6, "reason"] = None
    bad.loc[6, "finish_s"] = np.nan
    v = I.run_violations(sim, _with(run, requests=bad))
    assert "request 5: status 'done'" in _one(v, "R1 every request ends in exactly one of")
    assert "request 6: status unfinished, reason None" in _one(v, "carries a reason")
    assert "request 6" in _one(v, "R4 a drained run")
    assert "generated 20, requested 20" not in "".join(v)


# ----------------------------------------------------------------------------- R2
def test_r2_time_going_back_is_named_with_values(clean):
    sim, run = clean
    bad = run.requests.copy()
    arr = bad.loc[2, "arrival_s"]
    bad.loc[2, "first_token_s"] = arr - 0.5
    v = I.run_violations(sim, _with(run, requests=bad))
    msg = _one(v, "R2 time never goes back: arrival_s <= first_token_s")
    assert f"request 2 (finished): arrival_s {arr:.9g} > first_token_s {arr - 0.5:.9g}" in msg
    late = run.requests.copy()
    late.loc[0, "finish_s"] = run.simulated_s + 1.0
    v = I.run_violations(sim, _with(run, requests=late))
    assert "request 0: finish_s" in _one(v, "R2 finish_s is not after the end")
    v = I.check_itl(np.array([0.01, -0.002]), np.array([3, 1]))
    assert "gap -0.002 s x 1" in _one(v, "every inter-token gap is >= 0")


def test_r2_float_noise_is_tolerated():
    t = 1234.5678
    df = pd.DataFrame({"request_id": [0], "arrival_s": [t], "first_scheduled_s": [t - 1e-13],
                       "first_token_s": [t], "finish_s": [t + 1], "num_prompt_tokens": [5],
                       "num_output_tokens": [1], "status": ["finished"], "reason": [None]})
    assert I.check_requests(df, simulated_s=t + 1) == []


# ----------------------------------------------------------------------------- R3
def test_r3_tokens_generated_equal_tokens_requested(clean):
    sim, run = clean
    bad = run.requests.copy()
    bad.loc[4, "num_output_tokens"] = 19           # every request asked for 20
    bad.loc[8, "num_prompt_tokens"] = 301          # the workload's prompt is 300
    v = I.run_violations(sim, _with(run, requests=bad))
    assert "request 4: generated 19, requested 20" in _one(v, "R3 a finished request generated")
    assert "request 8: 301 in the table, 300 in the workload" in _one(v, "R3 num_prompt_tokens")
    # the engines produced 40 x 20 = 800 tokens; the table now says 799
    assert "the engines produced 800 output tokens but the request table holds 799" in \
        _one(v, "R3 the engines produced")
    more = run.requests.copy()
    more.loc[1, "status"] = "unfinished"
    more.loc[1, "reason"] = "still running"
    more.loc[1, "finish_s"] = np.nan
    more.loc[1, "num_output_tokens"] = 25
    v = I.run_violations(sim, _with(run, requests=more))
    assert "request 1 (unfinished): generated 25, requested 20" in _one(v, "no request generates")


def test_r3_itl_has_one_gap_per_token_after_the_first(clean):
    sim, run = clean
    # 40 requests x 19 tokens after the first = 760 gaps
    assert int(run.itl_weights.sum()) == 40 * 19
    w = run.itl_weights.copy()
    w[0] += 1
    v = I.run_violations(sim, _with(run, itl_weights=w))
    assert "the ITL sample holds 761 gaps but the requests produced 760" in "".join(v)


# ----------------------------------------------------------------------------- R4
def test_r4_kv_range_and_leak(clean):
    sim, run = clean
    kv = sim.replicas[0].engines[0].scheduler.kv
    total = kv.num_blocks
    assert kv.num_free_blocks == total          # all freed at the end of the drained run
    try:
        kv.num_free_blocks = total - 3
        v = I.run_violations(sim, run)
        assert f"p/0: 3 of {total} blocks still in use" in _one(v, "R4 every KV block is free")
        kv.num_free_blocks = -1
        v = I.run_violations(sim, run)
        assert f"p/0: free -1 of {total} blocks" in _one(v, "R4 KV blocks are never negative")
        kv.num_free_blocks = total + 1
        v = I.run_violations(sim, run)
        assert f"free {total + 1} of {total}" in _one(v, "R4 KV blocks are never negative")
    finally:
        kv.num_free_blocks = total
    assert I.run_violations(sim, run) == []


def test_r4_leak_is_not_reported_for_a_run_cut_by_duration():
    sim = Simulation(load_scenario(scenario(n=400, rate=40.0, duration_s=3.0)))
    run = sim.run()
    assert (run.requests.status == "unfinished").any()
    assert any(ve.scheduler.kv.num_free_blocks < ve.scheduler.kv.num_blocks
               for r in sim.replicas for ve in r.engines)
    assert I.run_violations(sim, run) == []


# ----------------------------------------------------------------------------- R5 / R6
def test_r5_billing(clean):
    sim, run = clean
    pools = copy.deepcopy(run.pools)
    pools[0]["busy_replica_s"] = pools[0]["billed_replica_s"] * 1.01
    v = I.run_violations(sim, _with(run, pools=pools))
    assert "pool p: busy" in _one(v, "R5 a pool is never busy longer")
    pools = copy.deepcopy(run.pools)
    pools[0]["billed_replica_s"] = 2 * run.simulated_s + 1.0
    v = I.run_violations(sim, _with(run, pools=pools))
    assert "2 replicas x" in _one(v, "R5 without faults no pool is billed beyond")
    pools[0]["billed_replica_s"] = float("nan")
    v = I.run_violations(sim, _with(run, pools=pools))
    assert "pool p: billed_replica_s unset" in _one(v, "R5 pool accounting is finite")


def test_r6_timeline(clean):
    sim, run = clean
    tl = run.timeline.copy()
    assert len(tl) > 3
    tl.loc[1, "kv_usage"] = 1.5
    tl.loc[2, "num_waiting"] = -1
    v = I.check_timeline(tl)
    assert ": 1.5" in _one(v, "R6 timeline kv_usage is in [0, 1]")
    _one(v, "R6 timeline num_waiting >= 0")
    tl = run.timeline.copy()
    rows = tl.index[tl.replica == 0]
    tl.loc[rows[-1], "tokens_out"] = -5
    assert "tokens_out decreases" in _one(I.check_timeline(tl), "R6 per replica")


# ----------------------------------------------------------------------------- R7
def test_r7_summary_cost_and_notes():
    res = simulate(scenario(n=300, rate=60.0, duration_s=4.0))
    s = copy.deepcopy(res.summary)
    assert s["requests"]["unfinished"] > 0
    assert I.check_summary(s) == []
    s["cost"]["usd"] *= 1.001
    v = I.check_summary(s)
    assert "R7 cost equals the billed replica-time" in "".join(v)
    s = copy.deepcopy(res.summary)
    s["pools"]["p"]["gpus"] = 3
    assert "gpus 3 != replicas 2 x gpus_per_replica 1" in "".join(I.check_summary(s))
    s = copy.deepcopy(res.summary)
    s["notes"] = [n for n in s["notes"] if "unfinished" not in n]
    assert "requests were unfinished" in "".join(I.check_summary(s))
    s = copy.deepcopy(res.summary)
    s["requests"]["finished"] += 1
    assert "statuses add up to the arrivals" in "".join(I.check_summary(s))


# ----------------------------------------------------------------------------- wiring
def test_simulate_raises_invariant_error_with_a_precise_message(monkeypatch):
    real = Simulation.run

    def broken(self):
        out = real(self)
        df = out.requests.copy()
        df.loc[0, "num_output_tokens"] = 7
        return dataclasses.replace(out, requests=df)

    monkeypatch.setattr(Simulation, "run", broken)
    with pytest.raises(InvariantError) as ei:
        simulate(scenario(n=10))
    msg = str(ei.value)
    assert msg.startswith("llmsim internal error: ")
    assert "scenario 'inv', seed 7" in msg
    assert "request 0: generated 7, requested 20" in msg
    assert "This is a bug in llmsim" in msg
    assert isinstance(ei.value, AssertionError)


def test_cli_exits_1_on_an_invariant_violation(tmp_path):
    """An invariant violation is an internal error: exit code 1 (not 2), message on stderr."""
    import yaml
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario(n=5)))
    code = (
        "import dataclasses, sys\n"
        "from llmsim.engine.simulation import Simulation\n"
        "real = Simulation.run\n"
        "def broken(self):\n"
        "    out = real(self)\n"
        "    return dataclasses.replace(out, requests=out.requests.iloc[1:])\n"
        "Simulation.run = broken\n"
        "from llmsim.cli import main\n"
        f"sys.exit(main(['run', {str(path)!r}]))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, I.ENV_VAR: "1"}, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "llmsim internal error: " in p.stderr
    assert "5 requests arrived but the request table has 4 rows" in p.stderr
