"""`llmsim validate SCENARIO [--set KEY=VALUE]...`: check a scenario without simulating.

Exit 0 with ``OK: <name>: N pools, M replicas, model X`` and one memory line per pool (weights
per GPU, KV-cache capacity in tokens per replica); exit 2 with every problem on stderr.
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("validate", help="check a scenario (schema, catalog names, memory fit, "
                       "trace files) without simulating")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario value by dotted path, e.g. "
                        "cluster.pools.0.replicas=8 (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmsim.scenario import load_scenario

    sc = load_scenario(args.scenario, args.overrides)
    for line in summary_lines(sc):
        print(line)
    return 0


def summary_lines(sc) -> list[str]:
    """The OK line and one line per pool (see module docstring)."""
    pools = sc.cluster.pools
    n_rep = sum(p.replicas for p in pools)
    model = sc.resolved_model()
    lines = [f"OK: {sc.name}: {len(pools)} pool{'s' if len(pools) != 1 else ''}, "
             f"{n_rep} replica{'s' if n_rep != 1 else ''}, model {model.name}"]
    plans = sc.memory_plans()
    for p in pools:
        plan = plans[p.name]
        hw = p.resolved_hardware()
        q = p.quant_config()
        lines.append(
            f"  pool {p.name}: {p.replicas} x {hw.name} (tp={p.parallel.tp}, pp={p.num_stages}"
            f", {p.num_gpus_per_replica} GPU/replica), {p.role}, "
            f"{p.effective_scheduler().policy}/{p.effective_memory().manager}: "
            + _memory_text(plan, q))
    return lines


def _memory_text(plan, quant) -> str:
    return (f"weights {plan.weights_bytes_per_gpu / 1e9:.2f} GB/GPU ({quant.weight_dtype}), "
            f"KV cache {int(plan.kv_capacity_tokens):,} tokens/replica ({quant.kv_cache_dtype})")
