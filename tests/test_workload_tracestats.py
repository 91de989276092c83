"""trace stats: numbers against hand calculations, and the `llmsim trace stats` command."""
import json
import math

import pytest

from llmsim.cli import main
from llmsim.workload.tracestats import TraceStats, length_summary, trace_stats

AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def azure(tmp_path, secs, prompts, outs, name="a.csv"):
    p = tmp_path / name
    lines = [f"2024-01-01 00:{int(s) // 60:02d}:{s % 60:09.6f},{a},{b}" for s, a, b in zip(secs, prompts, outs)]
    p.write_text(AZ + "\n".join(lines) + "\n")
    return p


def test_hand_calculated_stats(tmp_path):
    p = azure(tmp_path, [0, 1, 2, 4, 8], [10, 20, 30, 40, 50], [5, 5, 5, 5, 7])
    st = trace_stats(p)
    assert st["rows"] == 5 and st["span_s"] == pytest.approx(8.0)
    assert st["mean_rate_per_s"] == pytest.approx(0.5)                  # 4 gaps over 8 s
    # gaps 1, 1, 2, 4: mean 2, variance (1+1+4+16)/4 − 4 = 1.5
    assert st["interarrival_mean_s"] == pytest.approx(2.0)
    assert st["interarrival_cv"] == pytest.approx(math.sqrt(1.5) / 2)
    pt = st["prompt_tokens"]
    assert (pt["min"], pt["p50"], pt["p90"], pt["p99"], pt["max"]) == (10, 30, 50, 50, 50)
    assert pt["mean"] == 30 and pt["total"] == 150
    assert st["output_tokens"]["p50"] == 5 and st["output_tokens"]["max"] == 7
    assert st["prefix"] is None


def test_nearest_rank_percentiles():
    import numpy as np
    h = np.bincount(np.arange(1, 101))            # values 1..100 once each
    s = length_summary(h)
    assert (s["p50"], s["p90"], s["p99"], s["mean"]) == (50, 90, 99, 50.5)


def test_prefix_reuse_by_hand(tmp_path):
    recs = [{"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]},
            {"timestamp": 10, "input_length": 1200, "output_length": 1, "hash_ids": [1, 2, 3]},
            {"timestamp": 20, "input_length": 1000, "output_length": 1, "hash_ids": [4, 2]}]
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    px = trace_stats(p)["prefix"]
    assert px["blocks"] == 7 and px["unique_blocks"] == 4
    assert px["block_reuse_fraction"] == pytest.approx(3 / 7)     # 1, 2 in req 2; 2 in req 3
    assert px["prefix_hit_fraction"] == pytest.approx(2 / 7)      # only req 2 hits a prefix
    assert px["prefix_hit_token_fraction"] == pytest.approx(1024 / 3224)
    assert px["requests_with_prefix_hit"] == 1


def test_rate_bins_coarsen_for_long_spans():
    st = TraceStats()
    for i in range(10001):                       # one request per second for 10,000 s
        st.add(float(i), 10, 1)
    x, y = st.rate_series()
    assert st.bin_s == 4.0                      # 1 → 2 → 4 s to fit 4096 bins
    assert y[:-1] == pytest.approx([1.0] * (len(y) - 1))
    assert st.summary()["interarrival_cv"] == pytest.approx(0.0, abs=1e-6)


def test_cli_table_json_plot_and_errors(tmp_path, capsys):
    p = azure(tmp_path, [0, 1, 2, 4, 8], [10, 20, 30, 40, 50], [5, 5, 5, 5, 7])
    assert main(["trace", "stats", str(p)]) == 0
    out = capsys.readouterr().out
    assert "azure2023" in out and "CV 0.6124" in out
    html = tmp_path / "t.html"
    assert main(["trace", "stats", str(p), "--json", "--plot", str(html)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["rows"] == 5 and st["plot"] == str(html)
    text = html.read_text()
    assert "arrival rate" in text and "prompt tokens" in text and len(text) > 1_000_000  # plotly.js inline
    assert main(["trace", "stats", str(tmp_path / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text(AZ + "2024-01-01 00:00:00.0,5,1\n2024-01-01 00:00:01.0,x,1\n")
    assert main(["trace", "stats", str(bad)]) == 2
    assert "bad.csv:3: key 'ContextTokens'" in capsys.readouterr().err
    assert main(["trace", "stats", str(bad), "--on-bad-row", "skip", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_bad_rows"] == 1
    g = tmp_path / "g.csv"
    g.write_text("t,i,o\n0,5,1\n500,6,2\n")
    assert main(["trace", "stats", str(g), "--format", "csv", "--columns",
                 "arrival=t,prompt_tokens=i,output_tokens=o", "--time-unit", "ms", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["span_s"] == pytest.approx(0.5)
    assert main(["trace", "stats", str(g), "--format", "csv"]) == 2
    assert "--columns" in capsys.readouterr().err
