"""`llmsim sweep SCENARIO --grid KEY=V1,V2,... [--seeds N] [--backend local|ray] [--address ADDR]
[--jobs N] [--set KEY=VALUE]... [--out DIR] [--format parquet|csv] [--json]`.

Runs every point of the grid (cartesian product of the ``--grid`` keys) with N seeds and prints
one line per point: the mean and confidence interval of the key metrics. ``--out DIR`` writes
``runs.<fmt>`` (one tidy row per run), ``points.<fmt>``, ``sweep.json`` and ``report.html``.
``--json`` prints ``{"scenario", "grid_keys", "seeds", "points": [...], "runs": [...]}``.
Failed runs are listed on stderr with their error; the exit code is 0 when at least one run
succeeded, 1 when every run failed.
"""
from __future__ import annotations

import json
import sys

from llmsim.commands.args import int_arg


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a scenario over a grid of settings and seeds")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a dotted scenario key and the values to try (repeatable; the points "
                        "are every combination)")
    p.add_argument("--seeds", default="1", metavar="N",
                   help="runs per point, with seeds derived from the scenario seed (default 1)")
    p.add_argument("--backend", default="local", help="local (process pool, default) or ray")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join (e.g. auto or ray://head:10001); default: start "
                        "a local Ray")
    p.add_argument("--jobs", default=None, metavar="N",
                   help="parallel runs (local default: number of CPUs; 1 = in this process)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario value for every point (repeatable)")
    p.add_argument("--out", metavar="DIR", help="write runs, points, sweep.json and report.html")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                   help="table format under --out (default parquet)")
    p.add_argument("--keep", default="8", metavar="N",
                   help="runs (first seed of the first N points) kept for the side-by-side "
                        "figures of report.html (default 8; 0 = none)")
    p.add_argument("--json", action="store_true", help="print points and runs as JSON")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=run)


def _points_text(res) -> str:
    from llmsim.metrics.format import fmt_ms, fmt_num, fmt_pct
    from llmsim.report.sweep import mean_ci_text

    header = ["point", "runs", "req/s", "TTFT p99 ms", "TPOT p99 ms", "SLO met", "USD/1M tok"]
    rows = []
    for r in res.points.to_dict("records"):
        if r["failed"] == r["runs"]:
            rows.append([r["label"], f"{r['runs']}", "failed", "", "", "", ""])
            continue
        rows.append([r["label"], f"{r['runs'] - r['failed']}/{r['runs']}"]
                    + [mean_ci_text(r, m, f) for m, f in (
                        ("requests_per_s", fmt_num), ("ttft_s_p99", fmt_ms),
                        ("tpot_s_p99", fmt_ms), ("attainment", fmt_pct),
                        ("usd_per_million_output_tokens", fmt_num))])
    widths = [max(len(str(x[i])) for x in [header] + rows) for i in range(len(header))]
    lines = [f"llmsim sweep: {res.scenario_name} ({len(res.points)} points x {len(res.seeds)} "
             f"seeds; mean [{100 * res.confidence:.0f}% interval])"]
    for row in [header] + rows:
        lines.append("  " + "  ".join([str(row[0]).ljust(widths[0])]
                                      + [str(c).rjust(w) for c, w in zip(row[1:], widths[1:])]))
    return "\n".join(lines)


def run(args) -> int:
    from llmsim.errors import InputError, input_problem
    from llmsim.planning.grid import parse_grid_args
    from llmsim.planning.result import json_safe
    from llmsim.sweep import sweep

    seeds = int_arg("--seeds", args.seeds)
    jobs = int_arg("--jobs", args.jobs) if args.jobs is not None else None
    keep = int_arg("--keep", args.keep, 0)
    if not args.grid:
        raise InputError(input_problem("give at least one --grid KEY=V1,V2,...",
                                       where="--grid"))
    grid = parse_grid_args(args.grid)
    progress = False if args.no_progress else None
    res = sweep(args.scenario, grid, seeds=seeds, overrides=args.overrides,
                backend=args.backend, address=args.address, jobs=jobs, progress=progress,
                keep_results=keep if args.out else 0)
    paths = res.save(args.out, fmt=args.format) if args.out else {}
    if args.json:
        doc = {"scenario": res.scenario_name, "grid_keys": res.grid_keys, "seeds": res.seeds,
               "points": res.points.to_dict("records"), "runs": res.frame.to_dict("records")}
        print(json.dumps(json_safe(doc), indent=2))
    else:
        print(_points_text(res))
    sys.stdout.flush()
    for r in res.failed.itertuples():
        print(f"failed: {r.label} (seed {r.seed}): {r.error}", file=sys.stderr)
    if paths:
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0 if res.frame["error"].isna().any() else 1
