"""Where the simulator's time goes: cProfile of the chat benchmark, grouped by module.

    python benchmarks/profile_simulate.py [--requests 50000] [--replicas 16] [--policy vllm]

Prints the share of profiled time per component (SimPy kernel, engine loop, scheduler, cost
model, workload, metrics) and the top functions by self time. The profiler inflates Python
call costs, so read the shares, not the absolute seconds. cProfile does not see the compiled
build's functions (llmsim/_compiled.py): profile the pure sources with ``LLMSIM_PURE=1``, or the
compiled build with valgrind's callgrind (``bench_instructions.py`` shows how).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulate import scenario  # noqa: E402

GROUPS = [("simpy/", "SimPy kernel"), ("llmsim/engine/", "engine loop / router"),
          ("llmsim/scheduling/", "scheduler"), ("llmsim/memory/", "KV manager"),
          ("llmsim/cost/", "cost model"), ("llmsim/workload/", "workload"),
          ("llmsim/metrics/", "metrics"), ("numpy", "numpy"), ("pandas", "pandas"),
          ("yaml", "YAML"), ("pydantic", "pydantic")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--rate-per-replica", type=float, default=10.3)
    ap.add_argument("--policy", default="vllm")
    args = ap.parse_args(argv)
    from llmsim.api import simulate
    scn = scenario(args.requests, args.replicas, args.rate_per_replica * args.replicas,
                   args.policy, 42)
    prof = cProfile.Profile()
    prof.enable()
    simulate(scn)
    prof.disable()
    st = pstats.Stats(prof)
    by_group = defaultdict(float)
    total = 0.0
    for (file, _line, _fn), (_cc, _nc, tt, _ct, _callers) in st.stats.items():
        total += tt
        for key, name in GROUPS:
            if key in file:
                by_group[name] += tt
                break
        else:
            by_group["other (builtins, stdlib)"] += tt
    print(f"profiled self time {total:.2f} s for {args.requests} requests "
          f"({args.replicas} replicas, {args.policy})")
    for name, t in sorted(by_group.items(), key=lambda x: -x[1]):
        print(f"  {name:28s} {100 * t / total:5.1f}%")
    print()
    st.sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
