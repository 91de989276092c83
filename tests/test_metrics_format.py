"""llmsim.metrics.format: the terminal table shows the numbers of the summary."""
import numpy as np
import pandas as pd

from llmsim.metrics.format import fmt_ms, fmt_num, fmt_pct, format_summary, key_metrics
from llmsim.metrics.summary import summarize


def hand_summary(**kw):
    df = pd.DataFrame({
        "request_id": [0, 1, 2], "arrival_s": [0.0, 1.0, 2.0],
        "first_scheduled_s": [0.1, 1.2, np.nan], "first_token_s": [0.5, 1.4, np.nan],
        "finish_s": [2.5, 1.4, np.nan], "num_prompt_tokens": [100, 200, 300],
        "num_output_tokens": [5, 1, 0], "num_cached_tokens": 0, "num_preemptions": 0,
        "pool": "h100", "replica": 0, "status": ["finished", "finished", "rejected"],
        "reason": [None, None, "prompt too long"], "tenant": ["chat", "chat", "batch"]})
    pools = [{"name": "h100", "hardware": "h100-sxm", "role": "mixed", "replicas": 2,
              "gpus_per_replica": 1, "billed_replica_s": 7200.0, "busy_replica_s": 5400.0,
              "usd_per_gpu_hour": 3.0, "kv_usage_mean": 0.4}]
    return summarize(df, itl_gaps_s=np.array([0.5]), itl_weights=np.array([4]), pools=pools,
                     slo={"ttft_s": 1.0, "tpot_s": 0.05}, simulated_s=2.5, wall_s=0.01,
                     events=42, scenario="demo", seed=3, **kw)


def test_formatters():
    assert fmt_ms(0.0123) == "12.3"
    assert fmt_ms(1.5) == "1,500"
    assert fmt_ms(None) == "-"
    assert fmt_pct(0.975) == "97.5%"
    assert fmt_num(1234567) == "1,234,567"
    assert fmt_num(0.333333) == "0.333"
    assert fmt_num(None) == "-"


def test_format_summary_sections_and_values():
    s = hand_summary(notes=["swap preemption not simulated"])
    text = format_summary(s)
    for section in ("Requests", "Throughput", "Latency", "SLO", "Cost", "Pools", "Classes",
                    "Notes"):
        assert f"\n{section}" in text
    assert "demo" in text and "seed 3" in text
    # TTFT mean of 0.5 s and 0.4 s = 450 ms; ITL 500 ms; E2E p50 (2.5, 0.4) = 1,450 ms
    ttft_line = next(line for line in text.splitlines() if line.strip().startswith("TTFT"))
    assert ttft_line.split()[1:3] == ["450", "450"]
    itl_line = next(line for line in text.splitlines() if line.strip().startswith("ITL"))
    assert itl_line.split()[1] == "500"
    assert "1,450" in next(line for line in text.splitlines() if line.strip().startswith("E2E"))
    # attainment: only r1 (one output token) meets TTFT<=1 s and TPOT<=50 ms -> 1/3
    assert "attainment 33.3%" in text
    assert "TTFT <= 1,000 ms, TPOT <= 50 ms" in text
    assert "75.0%" in text               # pool busy fraction 5400 / 7200
    assert "$6.00" in text               # 2 GPU-hours x $3
    assert "swap preemption not simulated" in text
    assert "prompt too long" in text
    assert "OVERLOAD" not in text


def test_format_overload_banner_and_missing_sections():
    s = hand_summary()
    s["overload"] = True
    del s["classes"], s["pools"]
    text = format_summary(s)
    assert "!! OVERLOAD" in text.splitlines()[3]
    assert "\nClasses" not in text and "\nPools" not in text
    assert format_summary({})  # tolerates an empty dict


def test_key_metrics_labels():
    rows = dict(key_metrics(hand_summary()))
    assert rows["Requests arrived"] == "3"
    assert rows["TTFT p50 (ms)"] == "450"
    assert rows["SLO attainment"] == "33.3%"
    assert rows["Cost (USD)"] == "$6.00"
    assert rows["Overload"] == "no"


def test_pool_table_shows_prefix_hit_rate_when_caching():
    from llmsim.metrics.format import format_summary
    base = {"scenario": "s", "seed": 0, "simulated_s": 1.0, "wall_s": 0.1, "events": 1,
            "requests": {}, "throughput": {}, "slo": {}, "cost": {}}
    with_hits = dict(base, pools={"p": {"hardware": "h100-sxm", "replicas": 1, "gpus": 1,
                                        "prefix_hit_rate": 0.25}})
    text = format_summary(with_hits)
    assert "prefix hit" in text and "25.0%" in text
    without = dict(base, pools={"p": {"hardware": "h100-sxm", "replicas": 1, "gpus": 1}})
    assert "prefix hit" not in format_summary(without)
