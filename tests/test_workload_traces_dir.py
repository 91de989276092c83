"""The project's own small traces in traces/: each reads with its format and documented count,
and traces/generate.py reproduces them exactly."""
import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from llmsim.workload.tracestats import trace_stats

TRACES = Path(__file__).resolve().parents[1] / "traces"

EXPECTED = {  # file: (format, requests) as documented in traces/README.md
    "synthetic_chat_azure2023.csv": ("azure2023", 2000),
    "synthetic_code_azure2024.csv": ("azure2024", 1000),
    "synthetic_sessions_mooncake.jsonl": ("mooncake", 1000),
    "synthetic_burstgpt.csv": ("burstgpt", 973),
    "synthetic_sharegpt.jsonl": ("sharegpt", 881),
    "synthetic_lengths.csv": ("lengths", 1000),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_trace_reads(name):
    st = trace_stats(TRACES / name)
    fmt, n = EXPECTED[name]
    assert (st["format"], st["rows"], st["skipped_bad_rows"]) == (fmt, n, 0)
    if fmt == "burstgpt":
        assert st["failed_rows"] == 27
    if fmt == "sharegpt":
        assert st["conversations"] == 300
    if fmt in ("mooncake", "sharegpt"):
        assert st["prefix"]["block_reuse_fraction"] > 0.4


def test_generator_is_deterministic(tmp_path):
    subprocess.run([sys.executable, str(TRACES / "generate.py"), "--out", str(tmp_path)], check=True)
    for name in EXPECTED:
        assert filecmp.cmp(tmp_path / name, TRACES / name, shallow=False), (
            f"{name} differs from a fresh `python traces/generate.py`")
