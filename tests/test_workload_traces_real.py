"""The real public traces under ../shared/traces: published row counts and statistics."""
from pathlib import Path

import numpy as np
import pytest

from llmsim.workload import WorkloadConfig, build_workload
from llmsim.workload.tracestats import trace_stats

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
CODE = SHARED / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv"
CONV = SHARED / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
MOON = SHARED / "mooncake" / "conversation_trace.jsonl"
ARXIV = SHARED / "arxiv" / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/traces not present")


def test_azure_code_is_bursty():
    st = trace_stats(CODE)
    assert st["format"] == "azure2023"
    assert st["rows"] == 8819 and st["skipped_bad_rows"] == 0
    assert st["interarrival_cv"] == pytest.approx(13, abs=0.5)          # published CV ≈ 13
    assert st["span_s"] == pytest.approx(3435.948056, abs=1e-6)
    assert st["prompt_tokens"]["mean"] == pytest.approx(2047.85, abs=0.01)


def test_azure_conv_near_poisson():
    st = trace_stats(CONV)
    assert st["rows"] == 19366
    assert st["mean_rate_per_s"] == pytest.approx(5.5, abs=0.1)         # published ≈ 5.5 req/s
    assert 0.9 < st["interarrival_cv"] < 1.2                             # near-Poisson
    assert st["output_tokens"]["mean"] == pytest.approx(211.13, abs=0.01)


def test_mooncake_conversation():
    st = trace_stats(MOON)
    assert st["format"] == "mooncake" and st["rows"] == 12031
    # the release README: average input 12,035, average output 343 tokens
    assert st["prompt_tokens"]["mean"] == pytest.approx(12035, abs=1)
    assert st["output_tokens"]["mean"] == pytest.approx(343, abs=1)
    px = st["prefix"]
    assert px["hash_block_tokens"] == 512 and px["blocks"] == 288500
    assert 0.3 < px["prefix_hit_fraction"] <= px["block_reuse_fraction"] < 0.5


def test_workload_over_real_traces():
    w = build_workload(WorkloadConfig.model_validate(
        {"trace": {"path": str(CONV), "rate_per_s": 11.0, "window": {"start_s": 600, "end_s": 1800}}}),
        np.random.SeedSequence(0), Path("."))
    t = np.array([r.arrival_s for r in w])
    assert (t.size - 1) / (t[-1] - t[0]) == pytest.approx(11.0, rel=1e-9)
    # independent count with pandas
    import pandas as pd
    ts = pd.to_datetime(pd.read_csv(CONV)["TIMESTAMP"])
    rel = (ts - ts.iloc[0]).dt.total_seconds()
    assert w.stats["outside_window_rows"] == int((rel < 600).sum())
    assert t.size == int(((rel >= 600) & (rel < 1800)).sum())
    w = build_workload(WorkloadConfig.model_validate(
        {"trace": {"path": str(ARXIV), "arrival": {"process": "poisson", "rate_per_s": 3}}}),
        np.random.SeedSequence(0), Path("."))
    n = 0
    for r in w:
        n += 1
    assert n == 28257 and w.stats["sources"]["default"]["format"] == "lengths"
