"""Simulation speed benchmark.

Runs a chat workload like Azure 2023 conv (Poisson arrivals, lognormal lengths with prompt mean
≈1,150 and output mean ≈210 tokens) of Llama-3.1-8B on N × H100-SXM replicas with the chosen
scheduler at ≈70% of roofline capacity, and prints wall time, simulated requests per wall-clock
second, peak RSS, and the machine-independent ratio
    (wall time per simulated request) / (wall time of one bare SimPy timeout)
measured in the same process.

    python benchmarks/bench_simulate.py --requests 100000 --replicas 16 --rate-per-replica 10.3 \
        [--policy vllm] [--repeat 3]

The wall time is the median of ``--repeat`` runs (default 3); the bare timeout the median of 5
measurements, taken before and after the runs (the faster of the two is used: after a long run
its large live heap slows the garbage collector, and so the timeouts).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import simpy


def bare_timeout_s(n: int = 200_000, repeat: int = 5) -> float:
    """Wall seconds of one bare SimPy timeout (a process yielding timeouts back to back),
    median of ``repeat`` measurements of ``n`` timeouts each."""
    def once():
        env = simpy.Environment()

        def proc():
            for _ in range(n):
                yield env.timeout(1.0)

        env.process(proc())
        t0 = time.perf_counter()
        env.run()
        return (time.perf_counter() - t0) / n
    return statistics.median(once() for _ in range(repeat))


def scenario(requests: int, replicas: int, rate: float, policy: str, seed: int) -> dict:
    return {
        "name": f"bench-{policy}-{requests}",
        "seed": seed,
        "model": "llama-3.1-8b",
        "cluster": {"router": "least_outstanding", "pools": [{
            "name": "h100", "hardware": "h100-sxm", "replicas": replicas,
            "scheduler": {"policy": policy, "max_num_seqs": 256},
        }]},
        "workload": {
            "num_requests": requests,
            "arrival": {"process": "poisson", "rate_per_s": rate},
            "prompt_tokens": {"dist": "lognormal", "mean": 1150, "sigma": 1.0, "max": 8000},
            "output_tokens": {"dist": "lognormal", "mean": 210, "sigma": 1.0, "max": 4000},
        },
        "simulation": {"timeline_interval_s": 10.0},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--rate-per-replica", type=float, default=None,
                    help="arrival rate per replica (default: 70%% of measured capacity)")
    ap.add_argument("--policy", default="vllm")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from llmsim.api import simulate

    rate = args.rate_per_replica
    if rate is None:
        # capacity: saturate 2 replicas with a short overload run, take finished req/s
        probe = simulate(scenario(4000, 2, 1000.0, args.policy, 1))
        cap = probe.summary["requests"]["finished"] / probe.summary["simulated_s"] / 2
        rate = 0.7 * cap
        print(f"capacity ≈ {cap:.2f} req/s per replica (saturated probe); using "
              f"{rate:.2f} req/s per replica (70%)")
    timeout_before_s = bare_timeout_s()
    walls = []
    res = None
    for i in range(args.repeat):
        t0 = time.perf_counter()
        res = simulate(scenario(args.requests, args.replicas, rate * args.replicas,
                                args.policy, 42))
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    timeout_after_s = bare_timeout_s()
    # the faster of the two (a large live heap after a long run slows the timeouts down:
    # the garbage collector's full passes walk it), which gives the larger, safer ratio
    timeout_s = min(timeout_before_s, timeout_after_s)
    s = res.summary
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"requests={args.requests} replicas={args.replicas} policy={args.policy} "
          f"rate={rate * args.replicas:.1f} req/s")
    print(f"finished={s['requests']['finished']} simulated_s={s['simulated_s']:.1f} "
          f"events={s['events']} ({s['events'] / args.requests:.2f} per request) p50 ttft={s['ttft_s']['p50']:.3f}s "
          f"p50 tpot={s['tpot_s']['p50'] * 1e3:.1f}ms")
    print(f"wall_s (median of {args.repeat})={wall:.2f}  all={['%.2f' % w for w in walls]}")
    print(f"simulated requests per wall second={args.requests / wall:,.0f}")
    print(f"bare SimPy timeout={timeout_s * 1e6:.2f} us (before the runs "
          f"{timeout_before_s * 1e6:.2f}, after {timeout_after_s * 1e6:.2f}); "
          f"ratio (wall per request / bare timeout)={wall / args.requests / timeout_s:.1f}")
    print(f"peak RSS={peak_rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
