"""`llmsim run SCENARIO [--set K=V]... [--out DIR] [--json] [--format parquet|csv]`."""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("run", help="simulate a scenario and print its summary")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario value by dotted path (repeatable)")
    p.add_argument("--out", metavar="DIR", help="write requests, timeline, summary.json and "
                   "report.html into DIR")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                   help="table format under --out (default parquet)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-report", action="store_true", help="skip report.html under --out")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmsim.api import simulate
    from llmsim.metrics.format import format_summary
    from llmsim.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides)
    progress = None if not args.no_progress else False
    result = simulate(scenario, progress=progress)
    if args.out:
        paths = result.save(args.out, fmt=args.format, report=not args.no_report)
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        print(format_summary(result.summary))
        if args.out:
            print("\nwrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
