"""Memory benchmark: peak RSS of streaming runs of 1M and 10M requests.

Runs the chat benchmark scenario of ``bench_simulate.py`` (Llama-3.1-8B on 16 × H100-SXM,
Poisson arrivals at 10.3 req/s per replica ≈ 70% of capacity, lognormal lengths) in streaming
mode (``llmsim.simulate(..., stream_dir=DIR)``: rows go to DIR/requests.parquet, nothing per
request is held) once per request count, each in its own process, which measures its own peak
RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). Prints each run and the growth of peak RSS
from the first count to the last. The issue-4 target: ≤ 100 MB growth from 1M to 10M.

    python benchmarks/bench_memory.py                                # 1M and 10M (~15 min)
    python benchmarks/bench_memory.py --requests 200000 2000000      # quicker check
    python benchmarks/bench_memory.py --requests 300000 --tracemalloc  # what grows, by line

``--tracemalloc`` (one process, slow) snapshots Python allocations after the 2nd chunk of rows
and at the end of the run and prints the 15 source lines whose allocations grew most.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss_mb() -> float:
    """Peak RSS of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def _current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return None


def _install_tracemalloc() -> dict:
    """Snapshot Python allocations after the 2nd row chunk and when the run ends."""
    import tracemalloc

    from llmsim.metrics.recorder import StreamingRecorder
    snaps: dict = {}
    flush, final = StreamingRecorder._flush, StreamingRecorder.requests_frame
    count = [0]

    def traced_flush(self):
        flush(self)
        count[0] += 1
        if count[0] == 2:
            snaps["early"] = (self.rows_written, tracemalloc.take_snapshot())

    def traced_final(self, extra_requests=()):
        snaps["late"] = (self.rows_written, tracemalloc.take_snapshot())
        return final(self, extra_requests)

    StreamingRecorder._flush = traced_flush
    StreamingRecorder.requests_frame = traced_final
    tracemalloc.start(5)
    return snaps


def child(args) -> dict:
    """One run in this process; returns its figures."""
    from bench_simulate import scenario

    import llmsim
    from llmsim.scenario import load_scenario
    n = args.requests[0]
    d = scenario(n, args.replicas, args.rate_per_replica * args.replicas, args.policy, 42)
    d["simulation"]["timeline_interval_s"] = args.timeline_interval_s
    scn = load_scenario(d)
    snaps = _install_tracemalloc() if args.tracemalloc else None
    base = _rss_mb()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="llmsim-mem-"))
    t0 = time.perf_counter()
    res = llmsim.simulate(scn, stream_dir=out)
    wall = time.perf_counter() - t0
    peak = _rss_mb()
    if args.report:
        res.save(out)
    s = res.summary
    fig = {"requests": n, "finished": s["requests"]["finished"], "wall_s": wall,
           "simulated_s": s["simulated_s"], "events": s["events"],
           "rss_before_mb": base, "peak_rss_mb": peak, "peak_rss_with_report_mb": _rss_mb(),
           "rss_end_mb": _current_rss_mb(), "timeline_rows": len(res.timeline),
           "file_mb": res.requests_path.stat().st_size / 1e6,
           "ttft_p50_s": s["ttft_s"]["p50"], "tpot_p50_s": s["tpot_s"]["p50"]}
    if snaps is not None:
        (n0, a), (n1, b) = snaps["early"], snaps["late"]
        print(f"tracemalloc: growth from {n0:,} to {n1:,} rows written, top 15 lines:")
        for stat in b.compare_to(a, "lineno")[:15]:
            print("  ", stat)
    if not args.out and not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return fig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--rate-per-replica", type=float, default=10.3,
                    help="arrival rate per replica (default 10.3 req/s ≈ 70%% of capacity)")
    ap.add_argument("--policy", default="vllm")
    ap.add_argument("--timeline-interval-s", type=float, default=10.0,
                    help="timeline sampling interval (default 10 s, as bench_simulate.py)")
    ap.add_argument("--out", help="stream into this folder (default: a temporary one, deleted)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary output folder")
    ap.add_argument("--report", action="store_true",
                    help="also save timeline, summary and report.html (peak RSS reported apart)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="print what grew between the 2nd chunk and the end (one count, slow)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child or args.tracemalloc:
        if len(args.requests) != 1:
            ap.error("--tracemalloc takes one --requests count")
        print(json.dumps(child(args)), flush=True)
        return 0

    figs = []
    for n in args.requests:
        cmd = [sys.executable, __file__, "--child", "--requests", str(n), "--replicas",
               str(args.replicas), "--rate-per-replica", str(args.rate_per_replica),
               "--policy", args.policy, "--timeline-interval-s", str(args.timeline_interval_s)]
        if args.report:
            cmd.append("--report")
        if args.keep:
            cmd.append("--keep")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        fig = json.loads(proc.stdout.strip().splitlines()[-1])
        figs.append(fig)
        print(f"requests={n:,}: peak RSS {fig['peak_rss_mb']:.0f} MB (before the run "
              f"{fig['rss_before_mb']:.0f} MB), wall {fig['wall_s']:.0f} s, "
              f"{n / fig['wall_s']:,.0f} req/s, requests.parquet {fig['file_mb']:.0f} MB, "
              f"timeline rows {fig['timeline_rows']:,}", flush=True)
    if len(figs) > 1:
        a, b = figs[0], figs[-1]
        print(f"peak RSS growth {a['requests']:,} → {b['requests']:,} requests: "
              f"{b['peak_rss_mb'] - a['peak_rss_mb']:+.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
