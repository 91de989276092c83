"""`llmsim plan SCENARIO [--set KEY=VALUE]... [--json] [--out DIR] [--format parquet|csv]
[--backend local|ray] [--address ADDR] [--jobs N]`.

Answers the scenario's ``plan:`` section (max_rate, min_cost, pareto; docs/planning.md) and
prints each answer with its roofline bound. ``--json`` prints the whole result as one JSON
object; ``--out DIR`` writes ``plan.json``, one table per answer and ``report.html``.
"""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("plan", help="capacity planning: max rate, cheapest deployment, Pareto "
                       "front (the scenario's plan: section)")
    p.add_argument("scenario", help="scenario YAML file with a plan: section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario value by dotted path (repeatable)")
    p.add_argument("--backend", default="local", help="local (process pool, default) or ray")
    p.add_argument("--address", default=None, metavar="ADDR", help="Ray cluster to join")
    p.add_argument("--jobs", default=None, metavar="N",
                   help="parallel runs (local default: number of CPUs; 1 = in this process)")
    p.add_argument("--out", metavar="DIR", help="write plan.json, tables and report.html")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                   help="table format under --out (default parquet)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmsim.commands.args import int_arg
    from llmsim.plan import plan

    jobs = int_arg("--jobs", args.jobs) if args.jobs is not None else None
    res = plan(args.scenario, args.overrides, backend=args.backend, address=args.address,
               jobs=jobs, progress=False if args.no_progress else None)
    paths = res.save(args.out, fmt=args.format) if args.out else {}
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    else:
        print(res.format())
    sys.stdout.flush()
    if paths:
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
