"""Instructions per simulated request, counted by valgrind (deterministic, unlike wall time).

The development machine's wall times drift by ±15-30% between identical runs, so small speed
changes cannot be seen in them. This script counts the CPU instructions the simulation executes
(``valgrind --tool=callgrind``, collecting only inside the measured ``simulate`` call) for two
request counts and prints the slope — instructions per simulated request — and the same count
for one bare SimPy timeout, so the ratio of the two is a machine-independent analogue of
``bench_simulate.py``'s ratio. Needs ``valgrind`` on PATH (a tool, not a dependency).

    python benchmarks/bench_instructions.py                       # chat (vllm), 1,000 vs 4,000
    python benchmarks/bench_instructions.py --shape disaggregated --n 500 2000
    python benchmarks/bench_instructions.py --shape mooncake      # the whole trace, one run

Shapes: ``chat`` and ``sarathi`` (the workload of ``bench_simulate.py``, 16 replicas),
``disaggregated`` (``scenarios/disaggregated.yaml``), ``mooncake`` (``bench_shapes.py``'s
prefix-caching run; its size is the trace's, so it is counted once and divided by the number of
requests, scenario loading included). The child runs with ``PYTHONHASHSEED=0`` and one
BLAS/OpenMP thread, which makes the count repeat exactly.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _child(shape: str, n: int) -> None:
    """Runs inside valgrind: warm up (imports, caches), then the measured run inside
    ``functools.reduce`` (the C function whose calls valgrind collects)."""
    sys.path.insert(0, str(HERE))
    os.environ["LLMSIM_CHECK_INVARIANTS"] = "0"
    from bench_shapes import MOONCAKE
    from bench_simulate import scenario

    import simpy
    from llmsim.api import simulate

    def run(count):
        if shape == "timeout":
            env = simpy.Environment()

            def proc():
                for _ in range(count):
                    yield env.timeout(1.0)
            env.process(proc())
            env.run()
        elif shape in ("chat", "sarathi"):
            simulate(scenario(count, 16, 16 * 10.3, "vllm" if shape == "chat" else shape, 42))
        elif shape == "disaggregated":
            simulate(str(ROOT / "scenarios/disaggregated.yaml"),
                     [f"workload.num_requests={count}"])
        else:
            simulate(str(ROOT / "scenarios/prefix_caching.yaml"), MOONCAKE)

    if shape == "mooncake":
        simulate(scenario(200, 16, 16 * 10.3, "vllm", 42))     # imports, caches
    else:
        run(200)
    functools.reduce(lambda a, b: run(n), [0, 1])


def _count(shape: str, n: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
           "--toggle-collect=functools_reduce", "--callgrind-out-file=/dev/null",
           sys.executable, __file__, "--child", shape, str(n)]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode or not m:
        sys.exit(f"valgrind run failed:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", default="chat",
                    choices=["chat", "sarathi", "disaggregated", "mooncake"])
    ap.add_argument("--n", type=int, nargs=2, default=[1000, 4000], metavar=("N1", "N2"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not on PATH (apt install valgrind)")
    t1, t2 = _count("timeout", 100_000), _count("timeout", 200_000)
    per_timeout = (t2 - t1) / 100_000
    if args.shape == "mooncake":
        total = _count("mooncake", 0)
        n = _mooncake_requests()
        per_request = total / n
        print(f"mooncake: {total:,} instructions for {n:,} requests")
    else:
        n1, n2 = args.n
        a, b = _count(args.shape, n1), _count(args.shape, n2)
        per_request = (b - a) / (n2 - n1)
        print(f"{args.shape}: {a:,} instructions at {n1:,} requests, {b:,} at {n2:,}")
    print(f"instructions per simulated request: {per_request:,.0f}")
    print(f"instructions per bare SimPy timeout: {per_timeout:,.0f}")
    print(f"ratio (per request / per timeout): {per_request / per_timeout:.1f}")
    return 0


def _mooncake_requests() -> int:
    sys.path.insert(0, str(HERE))
    os.environ["LLMSIM_CHECK_INVARIANTS"] = "0"
    from bench_shapes import MOONCAKE
    from llmsim.api import simulate
    return len(simulate(str(ROOT / "scenarios/prefix_caching.yaml"), MOONCAKE).requests)


if __name__ == "__main__":
    sys.exit(main())
