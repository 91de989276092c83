"""Overload and what the summary says about what was not simulated (issue 10, items 4 and 6).

At an arrival rate far above capacity the simulator must finish in bounded time and memory,
keep its queues honest (admission limits reject with a reason), and flag the overload instead of
printing percentiles that only describe the lucky requests."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from llmsim.api import simulate
from llmsim.cli import main
from llmsim.invariants import check_result

N = 2000


def scenario(rate, n=N, replicas=1, **sim):
    """Llama-3.1-8B on H100s, 1,000-token prompts and 200-token outputs (constant)."""
    return {"name": "overload", "seed": 11, "model": "llama-3.1-8b",
            "cluster": {"pools": [{"name": "p", "hardware": "h100-sxm", "replicas": replicas,
                                   "scheduler": {"policy": "vllm"}}]},
            "workload": {"num_requests": n,
                         "arrival": {"process": "poisson", "rate_per_s": rate},
                         "prompt_tokens": {"dist": "constant", "value": 1000},
                         "output_tokens": {"dist": "constant", "value": 200}},
            "simulation": sim}


@pytest.fixture(scope="module")
def capacity_per_s():
    """Sustained throughput of one replica: the finished-request rate of a saturated run
    (all 2,000 requests arrive within ~2 s and are served back to back)."""
    res = simulate(scenario(1000.0))
    cap = res.summary["throughput"]["requests_per_s"]
    assert 5 < cap < 100           # roofline: a few tens of such requests per second per H100
    return cap


def test_twenty_times_capacity_finishes_fast_in_bounded_memory(capacity_per_s):
    tracemalloc.start()
    t0 = time.perf_counter()
    res = simulate(scenario(20 * capacity_per_s))
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert wall < 15.0, wall                    # measured ~0.1 s (+ tracing overhead)
    assert peak < 100e6, peak                   # O(requests): a few MB for 2,000
    s = res.summary
    check_result(res)
    assert s["requests"]["finished"] == N       # drained: everyone is served eventually
    assert s["overload"] is True
    note = next(n for n in s["notes"] if n.startswith("OVERLOAD"))
    assert "the queue kept growing" in note
    assert "latency percentiles cover finished requests only" in note
    # served at capacity: the backlog is worked off at the replica's sustained rate
    assert s["throughput"]["requests_per_s"] == pytest.approx(capacity_per_s, rel=0.15)
    # queueing dominates: the last arrivals waited about N / capacity seconds
    late_queue = res.requests.sort_values("arrival_s").queue_s.iloc[-100:].median()
    assert late_queue == pytest.approx(N / capacity_per_s, rel=0.3)


def test_low_load_is_not_flagged(capacity_per_s):
    res = simulate(scenario(0.3 * capacity_per_s, n=300))
    assert res.summary["overload"] is False
    assert not any(n.startswith("OVERLOAD") for n in res.summary["notes"])


def test_max_queue_len_rejects_with_the_reason_and_bounds_the_queue(capacity_per_s):
    res = simulate(scenario(20 * capacity_per_s, max_queue_len=50, timeline_interval_s=0.1))
    check_result(res)
    df, s = res.requests, res.summary
    rej = df[df.status == "rejected"]
    assert len(rej) > N / 2                      # most of a 20x overload cannot be admitted
    assert (rej.reason == "waiting queue full (max_queue_len=50)").all()
    assert (rej.finish_s == rej.arrival_s).all()  # rejected on arrival
    assert rej.first_scheduled_s.isna().all()
    assert s["requests"]["finished"] + len(rej) == N
    assert res.timeline.num_waiting.max() <= 50
    assert any(f"{len(rej):,} requests rejected (waiting queue full (max_queue_len=50): "
               f"{len(rej):,})" in n for n in s["notes"]), s["notes"]
    assert s["overload"] is True
    assert any("were never served" in n for n in s["notes"] if n.startswith("OVERLOAD"))


def test_request_timeout_rejects_requests_that_waited_too_long(capacity_per_s):
    res = simulate(scenario(20 * capacity_per_s, request_timeout_s=5.0))
    check_result(res)
    df = res.requests
    rej = df[df.status == "rejected"]
    assert len(rej) > 0
    assert (rej.reason == "timed out after waiting more than 5.0 s").all()
    assert ((rej.finish_s - rej.arrival_s) > 5.0).all()
    fin = df[df.status == "finished"]
    assert (fin.queue_s <= 5.0).all()            # nobody was admitted after the timeout
    assert res.summary["overload"] is True


def test_duration_limit_notes_what_was_not_simulated(capacity_per_s):
    """Item 6: requests still running or waiting at the end are counted as unfinished and the
    notes say how many, and how many never started."""
    res = simulate(scenario(3 * capacity_per_s, duration_s=20.0))
    check_result(res)
    df, s = res.requests, res.summary
    unf = df[df.status == "unfinished"]
    never = int(unf.first_scheduled_s.isna().sum())
    assert len(unf) > 0 and 0 < never < len(unf)
    assert unf.finish_s.isna().all()
    assert set(unf.reason) == {"still running when the simulation stopped",
                               "still waiting when the simulation stopped"}
    assert (unf.reason == "still waiting when the simulation stopped").sum() == never
    assert (f"{len(unf):,} requests still running or waiting when the simulation ended at 20 s "
            f"are counted as unfinished ({never:,} of them were never scheduled)") in s["notes"]
    assert s["requests"]["arrived"] == len(df) == (df.arrival_s < 20.0).sum()
    assert s["overload"] is True


def test_stop_at_last_arrival_notes_unfinished():
    res = simulate(scenario(50.0, n=200, drain=False))
    check_result(res)
    s = res.summary
    assert s["requests"]["unfinished"] > 0
    assert s["simulated_s"] == pytest.approx(res.requests.arrival_s.max())
    assert any("counted as unfinished" in n for n in s["notes"])


def test_nothing_finished_is_said_plainly():
    res = simulate(scenario(50.0, n=100, duration_s=0.5))
    s = res.summary
    assert s["requests"]["finished"] == 0
    assert "no request finished: latency statistics and throughput are empty" in s["notes"]
    assert s["ttft_s"]["p50"] is None and s["e2e_s"]["p99"] is None


def test_cli_prints_the_overload_banner(tmp_path, capsys, capacity_per_s):
    import yaml
    p = tmp_path / "o.yaml"
    p.write_text(yaml.safe_dump(scenario(20 * capacity_per_s, n=500, max_queue_len=20)))
    assert main(["run", str(p), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "!! OVERLOAD" in out
    assert "waiting queue full (max_queue_len=20)" in out


def test_overload_with_many_replicas_and_routers_stays_consistent(capacity_per_s):
    d = scenario(40 * capacity_per_s, n=3000, replicas=4, max_queue_len=30)
    d["cluster"]["router"] = "power_of_two"
    res = simulate(d)
    check_result(res)
    df = res.requests
    per = df[df.status == "rejected"].groupby("replica").size()
    assert len(per) == 4                        # every replica hit its own admission limit
    assert np.isin(df.status.unique(), ["finished", "rejected"]).all()
