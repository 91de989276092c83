"""llmsim.metrics.summary: derived columns, §9 summary numbers by hand, overload, errors."""
import json
import time

import numpy as np
import pandas as pd
import pytest

from llmsim.errors import InputError
from llmsim.metrics.summary import add_derived_columns, summarize, summary_frame

NAN = np.nan


def three_requests() -> pd.DataFrame:
    """r0: 5 output tokens; r1: 1 output token (TPOT undefined); r2: rejected."""
    return pd.DataFrame({
        "request_id": [0, 1, 2],
        "arrival_s": [0.0, 1.0, 2.0],
        "first_scheduled_s": [0.1, 1.2, NAN],
        "first_token_s": [0.5, 1.4, NAN],
        "finish_s": [2.5, 1.4, NAN],
        "num_prompt_tokens": [100, 200, 300],
        "num_output_tokens": [5, 1, 0],
        "num_cached_tokens": [0, 0, 0],
        "num_preemptions": [0, 1, 0],
        "pool": ["a", "a", None],
        "replica": [0, 1, -1],
        "status": ["finished", "finished", "rejected"],
        "reason": [None, None, "prompt too long"],
    })


def four_requests() -> pd.DataFrame:
    """three_requests plus r3: finished but TTFT 2 s (misses a 1 s target)."""
    df = three_requests()
    r3 = pd.DataFrame({"request_id": [3], "arrival_s": [3.0], "first_scheduled_s": [3.0],
                       "first_token_s": [5.0], "finish_s": [6.0], "num_prompt_tokens": [400],
                       "num_output_tokens": [3], "num_cached_tokens": [0],
                       "num_preemptions": [2], "pool": ["b"], "replica": [0],
                       "status": ["finished"], "reason": [None]})
    return pd.concat([df, r3], ignore_index=True)


POOLS = [
    # 2 replicas x 4 GPUs for 1 h each, busy half of it, $2.5/GPU-h -> 8 GPU-h, $20
    {"name": "a", "hardware": "h100-sxm", "role": "mixed", "replicas": 2, "gpus_per_replica": 4,
     "billed_replica_s": 7200.0, "busy_replica_s": 3600.0, "usd_per_gpu_hour": 2.5,
     "kv_usage_mean": 0.25, "num_steps": 1234, "preemptions": 3, "region": "us-east"},
    # 1 replica x 1 GPU for 30 min, always busy, $4/GPU-h -> 0.5 GPU-h, $2
    {"name": "b", "hardware": "a100-80gb", "role": "decode", "replicas": 1,
     "gpus_per_replica": 1, "billed_replica_s": 1800.0, "busy_replica_s": 1800.0,
     "usd_per_gpu_hour": 4.0, "kv_usage_mean": 0.5, "num_steps": 10, "preemptions": 0},
]


def run_summary(df, slo=None, pools=POOLS, **kw):
    args = dict(itl_gaps_s=np.array([0.01, 0.02, 0.05]), itl_weights=np.array([3, 1, 1]),
                pools=pools, slo=slo if slo is not None else {"ttft_s": 1.0, "tpot_s": 0.6},
                simulated_s=6.5, wall_s=0.25, events=321, scenario="hand", seed=7)
    args.update(kw)
    return summarize(df, **args)


# ------------------------------------------------------------------ derived columns

def test_derived_columns_three_requests():
    df = three_requests()
    out = add_derived_columns(df, {"ttft_s": 1.0, "tpot_s": 0.5})
    np.testing.assert_allclose(out["ttft_s"], [0.5, 0.4, NAN])
    np.testing.assert_allclose(out["e2e_s"], [2.5, 0.4, NAN])
    np.testing.assert_allclose(out["queue_s"], [0.1, 0.2, NAN])
    # r0: (2.5 - 0.5) / (5 - 1) = 0.5 ; r1: one output token -> NaN ; r2 rejected -> NaN
    np.testing.assert_allclose(out["tpot_s"], [0.5, NAN, NAN])
    # tpot 0.5 <= 0.5 met (boundary inclusive); r1 has no TPOT to judge; rejected never meets
    assert out["slo_met"].tolist() == [True, True, False]
    assert "ttft_s" not in df.columns  # input untouched


def test_slo_met_each_target():
    df = three_requests()
    assert add_derived_columns(df, {"tpot_s": 0.49})["slo_met"].tolist() == [False, True, False]
    assert add_derived_columns(df, {"ttft_s": 0.45})["slo_met"].tolist() == [False, True, False]
    assert add_derived_columns(df, {"e2e_s": 2.0})["slo_met"].tolist() == [False, True, False]
    # no targets: every finished request meets the (empty) SLO
    assert add_derived_columns(df, None)["slo_met"].tolist() == [True, True, False]
    assert add_derived_columns(df, {"ttft_s": None, "tpot_s": None})["slo_met"].tolist() == [
        True, True, False]


def test_unfinished_and_failed_never_meet_slo():
    df = three_requests()
    df.loc[0, "status"] = "unfinished"
    df.loc[1, "status"] = "failed"
    assert add_derived_columns(df, {})["slo_met"].tolist() == [False, False, False]


def test_class_slo_overrides_per_key():
    df = three_requests()
    df["tenant"] = ["chat", "batch", "chat"]
    slo = {"ttft_s": 0.45}
    # chat inherits 0.45 (r0 ttft 0.5 misses); batch: no TTFT target but e2e <= 0.3 (r1 0.4 misses)
    out = add_derived_columns(df, slo, {"batch": {"ttft_s": None, "e2e_s": 0.3}})
    assert out["slo_met"].tolist() == [False, False, False]
    out = add_derived_columns(df, slo, {"chat": {"ttft_s": 0.6}, "batch": {"ttft_s": None}})
    assert out["slo_met"].tolist() == [True, True, False]


def test_derived_columns_errors():
    df = three_requests()
    with pytest.raises(InputError, match="status"):
        add_derived_columns(df.assign(status=["finished", "done", "rejected"]), {})
    with pytest.raises(InputError, match="finish_s"):
        add_derived_columns(df.drop(columns=["finish_s"]), {})
    with pytest.raises(InputError, match="ttft_ms"):
        add_derived_columns(df, {"ttft_ms": 1.0})
    with pytest.raises(InputError, match="> 0"):
        add_derived_columns(df, {"ttft_s": -1.0})
    with pytest.raises(InputError, match="tenant"):
        add_derived_columns(df, {}, {"chat": {"ttft_s": 1.0}})
    with pytest.raises(InputError, match="arrival_s"):
        add_derived_columns(df.assign(arrival_s=["0", "x", "2"]), {})


def test_derived_columns_million_rows_fast():
    n = 1_000_000
    rng = np.random.default_rng(0)
    arr = np.cumsum(rng.exponential(0.01, n))
    status = np.where(rng.uniform(size=n) < 0.02, "rejected", "finished")
    df = pd.DataFrame({"arrival_s": arr, "first_scheduled_s": arr + 0.01,
                       "first_token_s": arr + 0.2, "finish_s": arr + 3.0,
                       "num_output_tokens": rng.integers(1, 400, n), "status": status})
    t0 = time.perf_counter()
    out = add_derived_columns(df, {"ttft_s": 1.0, "tpot_s": 0.05})
    assert time.perf_counter() - t0 < 1.0
    assert out["slo_met"].sum() <= (status == "finished").sum()


# ------------------------------------------------------------------ summary by hand

def test_summary_numbers_by_hand():
    s = run_summary(four_requests())
    assert s["scenario"] == "hand" and s["seed"] == 7 and s["events"] == 321
    assert s["requests"] == {"arrived": 4, "finished": 3, "rejected": 1, "unfinished": 0,
                             "failed": 0, "preemptions": 3}
    # duration: first arrival 0 -> last finish 6.0
    thr = s["throughput"]
    assert thr["duration_s"] == pytest.approx(6.0)
    assert thr["window"] == "first_arrival_to_last_finish"
    assert thr["requests_per_s"] == pytest.approx(3 / 6)
    assert thr["input_tokens_per_s"] == pytest.approx((100 + 200 + 400) / 6)
    assert thr["output_tokens_per_s"] == pytest.approx((5 + 1 + 3) / 6)
    # TTFT over finished: 0.5, 0.4, 2.0
    assert s["ttft_s"]["mean"] == pytest.approx(2.9 / 3)
    assert s["ttft_s"]["p50"] == pytest.approx(0.5)
    assert s["ttft_s"]["p90"] == pytest.approx(1.7)
    # TPOT over finished with >1 output token: r0 0.5, r3 (3-2)/2 = 0.5
    assert s["tpot_s"]["mean"] == pytest.approx(0.5)
    assert s["e2e_s"]["p50"] == pytest.approx(2.5)
    assert s["queue_s"]["mean"] == pytest.approx(0.3 / 3)
    # ITL: 0.01 x3, 0.02, 0.05
    assert s["itl_s"]["mean"] == pytest.approx(0.1 / 5)
    assert s["itl_s"]["p50"] == pytest.approx(0.01)
    # SLO: r0 and r1 met; r3 misses TTFT; rejected r2 is a miss -> 2 / 4
    assert s["slo"]["targets"] == {"ttft_s": 1.0, "tpot_s": 0.6, "e2e_s": None}
    assert s["slo"]["attainment"] == pytest.approx(0.5)
    assert s["slo"]["goodput_requests_per_s"] == pytest.approx(2 / 6)
    # cost = price x GPUs x hours
    assert s["cost"]["gpu_hours"] == pytest.approx(8.0 + 0.5)
    assert s["cost"]["usd"] == pytest.approx(2.5 * 4 * 2 * 1.0 + 4.0 * 1 * 0.5)
    assert s["cost"]["usd_per_million_output_tokens"] == pytest.approx(22.0 / 9 * 1e6)
    a = s["pools"]["a"]
    assert a["replicas"] == 2 and a["gpus"] == 8
    assert a["utilization"] == pytest.approx(0.5)
    assert a["kv_usage_mean"] == pytest.approx(0.25)
    assert a["usd"] == pytest.approx(20.0)
    assert a["region"] == "us-east" and a["num_steps"] == 1234   # passed through
    assert s["pools"]["b"]["utilization"] == pytest.approx(1.0)
    assert s["overload"] is False
    assert any("1 request rejected" in n and "prompt too long: 1" in n for n in s["notes"])
    assert "classes" not in s


def test_summary_is_json_native():
    df = four_requests()
    s = run_summary(df, notes=["engine note"], extra={"network": {"bytes": np.int64(5)}})
    text = json.dumps(s, allow_nan=False)
    assert json.loads(text) == s
    assert s["notes"][0] == "engine note"
    assert s["network"] == {"bytes": 5}

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            assert x is None or type(x) in (str, int, float, bool), type(x)
    walk(s)
    with pytest.raises(ValueError):
        run_summary(df, extra={"cost": 1})


def test_summary_does_not_modify_input_and_recomputes_slo():
    df = add_derived_columns(four_requests(), {"ttft_s": 100.0})
    before = df.copy()
    s = run_summary(df, slo={"ttft_s": 0.45})
    pd.testing.assert_frame_equal(df, before)
    assert s["slo"]["attainment"] == pytest.approx(1 / 4)   # only r1 (ttft 0.4)


def test_summary_classes():
    df = four_requests()
    df["tenant"] = ["chat", "batch", "chat", "batch"]
    s = run_summary(df, class_slo={"batch": {"ttft_s": 3.0}})
    c = s["classes"]
    assert set(c) == {"chat", "batch"}
    assert c["chat"]["count"] == 2 and c["chat"]["finished"] == 1
    assert c["chat"]["attainment"] == pytest.approx(0.5)         # r0 met, r2 rejected
    assert c["batch"]["attainment"] == pytest.approx(1.0)        # r3 meets the 3 s class target
    assert c["batch"]["ttft_s"]["mean"] == pytest.approx((0.4 + 2.0) / 2)
    assert c["batch"]["slo_targets"]["ttft_s"] == 3.0
    assert s["slo"]["attainment"] == pytest.approx(3 / 4)
    assert s["slo"]["class_targets"]["batch"] == {"ttft_s": 3.0, "tpot_s": 0.6, "e2e_s": None}


def test_nothing_finished_uses_simulated_s():
    df = three_requests()
    df["status"] = ["unfinished", "unfinished", "rejected"]
    s = run_summary(df)
    assert s["throughput"]["window"] == "simulated_s"
    assert s["throughput"]["duration_s"] == pytest.approx(6.5)
    assert s["throughput"]["requests_per_s"] == 0.0
    assert s["ttft_s"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert s["slo"]["attainment"] == 0.0
    assert s["cost"]["usd_per_million_output_tokens"] is None
    assert any("no request finished" in n for n in s["notes"])
    assert any("2 requests still running or waiting" in n for n in s["notes"])


def test_missing_price_gives_unknown_usd():
    pools = [dict(POOLS[0], usd_per_gpu_hour=None), POOLS[1]]
    s = run_summary(four_requests(), pools=pools)
    assert s["cost"]["usd"] is None and s["cost"]["gpu_hours"] == pytest.approx(8.5)
    assert any("no price" in n for n in s["notes"])


def test_bad_pools_raise_input_error():
    with pytest.raises(InputError, match="billed_replica_s"):
        run_summary(four_requests(), pools=[{k: v for k, v in POOLS[0].items()
                                             if k != "billed_replica_s"}])
    with pytest.raises(InputError, match="duplicate"):
        run_summary(four_requests(), pools=[POOLS[0], POOLS[0]])
    with pytest.raises(InputError, match="busy_replica_s"):
        run_summary(four_requests(), pools=[dict(POOLS[0], busy_replica_s=-1.0)])


# ------------------------------------------------------------------ overload

def stationary(n=400, rate=10.0, queue_s=0.05, seed=0, growth_s_per_s=0.0):
    rng = np.random.default_rng(seed)
    arr = np.sort(rng.uniform(0, n / rate, n))
    q = queue_s + growth_s_per_s * arr
    return pd.DataFrame({
        "request_id": np.arange(n), "arrival_s": arr, "first_scheduled_s": arr + q,
        "first_token_s": arr + q + 0.1, "finish_s": arr + q + 2.0,
        "num_prompt_tokens": 100, "num_output_tokens": 50, "num_cached_tokens": 0,
        "num_preemptions": 0, "pool": "a", "replica": 0, "status": "finished", "reason": None})


def test_stable_run_is_not_overloaded():
    s = run_summary(stationary())
    assert s["overload"] is False
    assert not any("OVERLOAD" in n for n in s["notes"])


def test_growing_queue_is_overload():
    # queueing delay grows 0.1 s per second of arrivals over 40 s: 2nd fifth ~1.2 s, last ~3.6 s
    s = run_summary(stationary(growth_s_per_s=0.1))
    assert s["overload"] is True
    assert any(n.startswith("OVERLOAD") and "queue kept growing" in n for n in s["notes"])


def test_many_unserved_is_overload():
    df = stationary()
    late = df.index[-40:]                      # 10 % never scheduled
    df.loc[late, ["first_scheduled_s", "first_token_s", "finish_s"]] = NAN
    df.loc[late, "status"] = "unfinished"
    s = run_summary(df)
    assert s["requests"]["unfinished"] == 40
    assert s["overload"] is True
    assert any("40 of 400 arrivals (10.0%) were never served" in n for n in s["notes"])
    # a few in-flight requests at the end of a horizon are not overload
    df = stationary()
    df.loc[df.index[-12:], ["first_token_s", "finish_s"]] = NAN
    df.loc[df.index[-12:], "status"] = "unfinished"
    s = run_summary(df)
    assert s["overload"] is False
    assert any("12 requests still running" in n and "0 of them were never scheduled" in n
               for n in s["notes"])


def test_summary_frame_flattens():
    s = run_summary(four_requests())
    f = summary_frame(s)
    assert list(f.columns) == ["metric", "value"]
    m = dict(zip(f["metric"], f["value"]))
    assert m["ttft_s.p50"] == pytest.approx(0.5)
    assert m["pools.a.utilization"] == pytest.approx(0.5)
    assert m["slo.targets.e2e_s"] is None
    assert m["requests.arrived"] == 4
    assert m["notes.0"] == s["notes"][0]
