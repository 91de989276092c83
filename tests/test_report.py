"""llmsim.report: figure builders by hand and the offline HTML report (one run, two runs)."""
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from llmsim.errors import InputError
from llmsim.metrics.summary import add_derived_columns, summarize
from llmsim.report import figures as F
from llmsim.report.html import render_html, write_html

SLO = {"ttft_s": 1.0, "tpot_s": 0.05}


@dataclass
class FakeResult:
    requests: pd.DataFrame
    timeline: pd.DataFrame | None
    summary: dict
    itl_gaps_s: np.ndarray
    itl_weights: np.ndarray
    name: str = "run"
    extra: dict = field(default_factory=dict)


def make_result(name="run", n=300, seed=0, slow=1.0, timeline=True) -> FakeResult:
    rng = np.random.default_rng(seed)
    arr = np.sort(rng.uniform(0, 30, n))
    q = rng.exponential(0.05 * slow, n)
    ttft = q + rng.uniform(0.05, 0.3, n) * slow
    nout = rng.integers(1, 200, n)
    e2e = ttft + (nout - 1) * rng.uniform(0.01, 0.06, n)
    status = np.array(["finished"] * n, dtype=object)
    status[:5] = "rejected"
    status[5:8] = "unfinished"
    done = status == "finished"
    df = pd.DataFrame({
        "request_id": np.arange(n), "arrival_s": arr,
        "first_scheduled_s": np.where(status == "rejected", np.nan, arr + q),
        "first_token_s": np.where(done, arr + ttft, np.nan),
        "finish_s": np.where(done, arr + e2e, np.nan), "num_prompt_tokens": 500,
        "num_output_tokens": np.where(done, nout, 0), "num_cached_tokens": 0,
        "num_preemptions": 0, "pool": "h100", "replica": np.arange(n) % 2, "status": status,
        "reason": np.where(status == "rejected", "queue full", None)})
    df = add_derived_columns(df, SLO)
    t = np.arange(0.0, 41.0, 1.0)
    tl = pd.concat([pd.DataFrame({"time_s": t, "pool": "h100", "replica": r,
                                  "num_waiting": (t % 5).astype(int), "num_running": 8,
                                  "kv_usage": 0.1 * r + t / 100, "num_finished": t * 3,
                                  "tokens_out": t * 100.0})
                    for r in range(2)], ignore_index=True) if timeline else None
    gaps = rng.uniform(0.01, 0.06, 50)
    w = rng.integers(1, 40, 50)
    pools = [{"name": "h100", "hardware": "h100-sxm", "role": "mixed", "replicas": 2,
              "gpus_per_replica": 1, "billed_replica_s": 80.0, "busy_replica_s": 60.0,
              "usd_per_gpu_hour": 3.0, "kv_usage_mean": 0.3}]
    s = summarize(df, itl_gaps_s=gaps, itl_weights=w, pools=pools, slo=SLO, simulated_s=40.0,
                  wall_s=0.1, events=1000, scenario=name, seed=seed)
    return FakeResult(df, tl, s, gaps, w, name)


# ------------------------------------------------------------------ figure builders

def test_cdf_points_exact_when_small_and_bounded_when_large():
    x, y = F.cdf_points([3.0, 1.0, 2.0, 2.0, np.nan])
    np.testing.assert_allclose(x, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(y, [0.25, 0.75, 1.0])
    x, y = F.cdf_points([0.01, 0.02], [3, 1])
    np.testing.assert_allclose(y, [0.75, 1.0])
    v = np.random.default_rng(1).lognormal(size=1_000_000)
    x, y = F.cdf_points(v, max_points=2000)
    assert len(x) <= 2000
    assert x[-1] == v.max() and y[-1] == 1.0
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    # every kept point is on the exact ECDF
    srt = np.sort(v)
    np.testing.assert_allclose(y, np.searchsorted(srt, x, side="right") / v.size)
    # p99 is resolved: a kept point within 0.1 % of probability of 0.99
    assert np.min(np.abs(y - 0.99)) < 1e-3


def test_cdf_figure_has_slo_line_in_ms():
    fig = F.cdf_figure([("a", [0.1, 0.2]), ("b", [0.3])], title="TTFT CDF", x_title="ms",
                       slo_s=1.0, slo_label="TTFT SLO")
    assert [t.name for t in fig.data] == ["a", "b"]
    np.testing.assert_allclose(fig.data[0].x, [100.0, 200.0])
    assert fig.layout.shapes[0].x0 == 1000.0
    assert fig.layout.title.text == "TTFT CDF"


def test_counter_rates_by_hand():
    tl = pd.DataFrame({"time_s": [0.0, 2.0, 4.0, 0.0, 2.0, 4.0],
                       "pool": ["p"] * 6, "replica": [0, 0, 0, 1, 1, 1],
                       "tokens_out": [0, 100, 300, 0, 50, 20]})   # replica 1 restarts at t=4
    r = F.counter_rates(tl, "tokens_out")
    # t=2: (100 + 50) / 2 s ; t=4: (200 + 20 after restart) / 2 s
    np.testing.assert_allclose(r["time_s"], [2.0, 4.0])
    np.testing.assert_allclose(r["rate_per_s"], [75.0, 110.0])
    r = F.counter_rates(tl, "tokens_out", max_points=1)           # one bin over 0..4 s
    np.testing.assert_allclose(r["rate_per_s"], [(300 + 50 + 20) / 4.0])
    with pytest.raises(InputError, match="tokens_out"):
        F.counter_rates(tl.drop(columns="tokens_out"), "tokens_out")


def test_kv_figure_switches_to_pool_mean_for_many_replicas():
    t = np.arange(5.0)
    tl = pd.concat([pd.DataFrame({"time_s": t, "pool": "p", "replica": r, "kv_usage": 0.5})
                    for r in range(40)])
    fig = F.kv_usage_figure(tl, max_lines=32)
    assert [d.name for d in fig.data] == ["p mean", "p max"]
    np.testing.assert_allclose(fig.data[0].y, 50.0)
    fig = F.kv_usage_figure(tl[tl.replica < 3])
    assert len(fig.data) == 3


def test_status_figure_counts():
    df = pd.DataFrame({"status": ["finished", "finished", "rejected", "unfinished"],
                       "reason": [None, None, "too long", None]})
    fig = F.status_figure([("a", df), ("b", df.iloc[:2])])
    bars = {d.name: list(d.y) for d in fig.data}
    assert bars == {"finished": [2, 2], "rejected": [1, 0], "unfinished": [1, 0]}


def test_sweep_line_charts():
    df = pd.DataFrame({"rate_per_s": [10, 20, 10, 20], "ttft_p99_s": [0.2, 0.9, 0.3, 1.5],
                       "attainment": [1.0, 0.9, 0.99, 0.5], "config": ["a", "a", "b", "b"]})
    fig = F.latency_vs_load(df, "rate_per_s", "ttft_p99_s", slo=1.0, group="config")
    assert len(fig.data) == 2
    np.testing.assert_allclose(fig.data[0].y, [200.0, 900.0])
    assert fig.layout.shapes[0].y0 == 1000.0
    fig = F.attainment_vs_rate(df, group="config", target=0.9)
    np.testing.assert_allclose(fig.data[1].y, [99.0, 50.0])
    assert fig.layout.shapes[0].y0 == pytest.approx(90.0)
    with pytest.raises(InputError, match="goodput"):
        F.latency_vs_load(df, "rate_per_s", "goodput")


# ------------------------------------------------------------------ HTML

TITLES = ["TTFT CDF", "TPOT CDF", "ITL CDF", "E2E latency CDF", "Throughput over time",
          "Queue length over time", "KV cache usage per replica", "Request status"]


def test_write_html_single_run(tmp_path):
    res = make_result("quick")
    path = write_html(res, tmp_path / "sub" / "report.html", title="My report")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    js_head = get_plotlyjs()[:300]
    assert text.count(js_head) == 1                 # plotly.js embedded exactly once
    assert "<script src=" not in text               # offline: nothing loaded from a URL
    for t in TITLES:
        assert t in text
    assert "My report" in text
    assert text.count("Plotly.newPlot") == len(TITLES)
    assert "TTFT SLO 1000" in text                  # SLO line on the TTFT CDF (ms)
    assert "queue full" in text                     # notes list the rejection reason
    assert "Summary JSON" in text
    assert render_html(res, title="My report") == text  # deterministic


def test_write_html_two_runs(tmp_path):
    a = make_result("baseline", seed=1)
    b = make_result("baseline", seed=2, slow=3.0)   # same name: made unique
    path = write_html([a, b], tmp_path / "cmp.html")
    text = path.read_text(encoding="utf-8")
    assert text.count(get_plotlyjs()[:300]) == 1
    assert "Key metrics" in text
    assert "baseline #2" in text
    assert "KV cache usage per replica (baseline)" in text
    assert "KV cache usage per replica (baseline #2)" in text
    for t in TITLES:
        assert t in text
    # both runs' TTFT p50 appear in the comparison table row
    row = text.split("<td>TTFT p50 (ms)</td>")[1].split("</tr>")[0]
    assert row.count("<td>") == 2


def test_html_without_timeline_and_bad_input(tmp_path):
    res = make_result(timeline=False)
    text = render_html(res)
    assert "Throughput over time" not in text and "TTFT CDF" in text
    with pytest.raises(InputError):
        write_html([], tmp_path / "x.html")
    with pytest.raises(InputError):
        write_html(42, tmp_path / "x.html")


def test_large_report_stays_small():
    res = make_result(n=200_000, seed=3)
    text = render_html(res)
    assert len(text) - len(get_plotlyjs()) < 1_500_000


def test_single_run_report_has_a_roofline_per_pool(tmp_path):
    """The run report draws each pool's operators on its roofline (from the run's scenario)."""
    from pathlib import Path

    from llmsim.api import simulate
    from llmsim.report.html import roofline_figures
    root = Path(__file__).resolve().parents[1]
    res = simulate(root / "scenarios" / "quickstart.yaml", ["workload.num_requests=50"])
    figs = roofline_figures(res)
    assert len(figs) == 1
    names = {t.name for t in figs[0].data}
    assert any(n.startswith("prefill of") for n in names)
    assert any(n.startswith("decode, batch") for n in names)
    html = write_html(res, tmp_path / "r.html").read_text()
    assert "Roofline: pool h100 (h100-sxm, tp=1)" in html
