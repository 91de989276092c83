"""Speed of the other shapes of the speed issue, against the chat benchmark, in one process.

    python benchmarks/bench_shapes.py [--requests 50000] [--repeat 3] [--skip-mooncake]

Runs (invariant checks off, median of ``--repeat`` rounds, each round running every shape once)
and prints wall seconds per simulated request, the ratio to the chat run, and the ratio to one
bare SimPy timeout measured in the same process (``bench_simulate.py``'s machine-independent
ratio, for every shape):

- ``chat``: the workload of ``bench_simulate.py`` (Llama-3.1-8B, 16 × H100-SXM, ``vllm``,
  least-outstanding, 10.3 req/s per replica);
- ``sarathi``: the same with the ``sarathi`` scheduler;
- ``disaggregated``: ``scenarios/disaggregated.yaml`` (2 prefill + 2 decode replicas, KV moved
  over the network) with ``--requests`` requests;
- ``prefix caching (Mooncake)``: ``scenarios/prefix_caching.yaml`` on the whole Mooncake
  conversation trace (``../shared/traces``; 12,031 requests, real time, 4 replicas,
  ``prefix_affinity``), skipped when the trace is not there.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_simulate import bare_timeout_s, scenario  # noqa: E402

MOONCAKE = ["workload.trace.window=null", "workload.trace.speedup=1.0",
            "cluster.pools.0.replicas=4", "cluster.router=prefix_affinity"]


def timed_rounds(runs, repeat: int) -> list[tuple[str, float, int]]:
    """``(name, median wall s, requests)`` per run, timed in ``repeat`` rounds that each run
    every shape once (so a slow spell of the machine hits every shape alike)."""
    walls = {name: [] for name, _ in runs}
    counts = {}
    for _ in range(repeat):
        for name, fn in runs:
            t0 = time.perf_counter()
            res = fn()
            walls[name].append(time.perf_counter() - t0)
            counts[name] = len(res.requests)
    return [(name, statistics.median(walls[name]), counts[name]) for name, _ in runs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-mooncake", action="store_true")
    args = ap.parse_args(argv)
    os.environ["LLMSIM_CHECK_INVARIANTS"] = "0"
    from llmsim.api import simulate

    n = args.requests
    runs = [
        ("chat (vllm)", lambda: simulate(scenario(n, 16, 16 * 10.3, "vllm", 42))),
        ("sarathi", lambda: simulate(scenario(n, 16, 16 * 10.3, "sarathi", 42))),
        ("disaggregated", lambda: simulate(str(ROOT / "scenarios/disaggregated.yaml"),
                                           [f"workload.num_requests={n}"])),
    ]
    mooncake = ROOT.parent / "shared" / "traces"
    if not args.skip_mooncake and mooncake.is_dir():
        runs.append(("prefix caching (Mooncake)",
                     lambda: simulate(str(ROOT / "scenarios/prefix_caching.yaml"), MOONCAKE)))
    timeout_s = bare_timeout_s()
    base = None
    print(f"{'run':28s} {'requests':>9s} {'wall s':>8s} {'us/request':>11s} {'vs chat':>8s} "
          f"{'ratio':>6s}")
    for name, wall, count in timed_rounds(runs, args.repeat):
        per = wall / count
        if base is None:
            base = per
        print(f"{name:28s} {count:9d} {wall:8.2f} {per * 1e6:11.1f} {per / base:7.2f}x "
              f"{per / timeout_s:6.1f}")
    print(f"ratio: wall per request / one bare SimPy timeout ({timeout_s * 1e6:.2f} us, "
          "measured before the runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
