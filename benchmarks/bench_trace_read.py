"""Trace-reading speed: writes a 1,000,000-row Azure-2023-format CSV in /tmp (once; deterministic
seed) and prints rows/s for (1) the raw reader and (2) the full Workload (Request objects,
transforms: speedup + length cap) and for ``trace stats``.

    python benchmarks/bench_trace_read.py [--rows N] [--path /tmp/llmsim_bench_azure_1m.csv]
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np


def write_azure_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / 300.0, rows)           # 300 req/s
    t = np.cumsum(gaps)
    ctx = np.maximum(1, rng.lognormal(6.5, 1.0, rows)).astype(np.int64)
    gen = np.maximum(1, rng.lognormal(4.5, 1.0, rows)).astype(np.int64)
    t0 = datetime(2023, 11, 16, 18, 0, 0)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for ti, c, g in zip(t.tolist(), ctx.tolist(), gen.tolist()):
            f.write(f"{(t0 + timedelta(seconds=ti)).strftime('%Y-%m-%d %H:%M:%S.%f')}0,{c},{g}\n")
    tmp.rename(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--path", default="/tmp/llmsim_bench_azure_1m.csv")
    a = ap.parse_args()
    path = Path(a.path)
    if not path.exists() or sum(1 for _ in open(path)) != a.rows + 1:
        t = time.perf_counter()
        write_azure_csv(path, a.rows)
        print(f"wrote {path} ({a.rows:,} rows) in {time.perf_counter() - t:.1f} s")

    from llmsim.workload import WorkloadConfig, build_workload
    from llmsim.workload.readers import reader_for_file
    from llmsim.workload.tracestats import trace_stats

    t = time.perf_counter()
    n = sum(1 for _ in reader_for_file(path))
    dt = time.perf_counter() - t
    print(f"reader:      {n:,} rows in {dt:.2f} s = {n / dt:,.0f} rows/s")

    cfg = WorkloadConfig.model_validate({"trace": {"path": str(path), "format": "azure2023",
                                                   "speedup": 2.0, "max_prompt_tokens": 8192}})
    wl = build_workload(cfg, np.random.SeedSequence(0), Path("."))
    t = time.perf_counter()
    n = 0
    for _ in wl:
        n += 1
    dt = time.perf_counter() - t
    print(f"workload:    {n:,} requests in {dt:.2f} s = {n / dt:,.0f} requests/s "
          f"(capped prompts: {wl.stats['capped_prompt_requests']:,})")

    t = time.perf_counter()
    st = trace_stats(path)
    dt = time.perf_counter() - t
    print(f"trace stats: {st['rows']:,} rows in {dt:.2f} s = {st['rows'] / dt:,.0f} rows/s "
          f"(mean rate {st['mean_rate_per_s']:.1f}/s, CV {st['interarrival_cv']:.3f})")


if __name__ == "__main__":
    main()
