"""``llmsim trace stats FILE [--format F] [--json] [--plot FILE.html]``: rows, span, mean rate,
inter-arrival CV, length percentiles and prefix reuse of a trace file, streaming (see
:mod:`llmsim.workload.tracestats`)."""
from __future__ import annotations

import json
import sys

from llmsim.errors import InputError, input_problem

FORMATS = ("azure2023", "azure2024", "burstgpt", "mooncake", "sharegpt", "lengths", "csv",
           "parquet")


def register(subparsers) -> None:
    p = subparsers.add_parser("trace", help="inspect request traces",
                              description="Inspect request trace files.")
    sub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND",
                           parser_class=type(p))
    s = sub.add_parser("stats", help="statistics of a trace file",
                       description="Rows, span, mean rate, inter-arrival CV, length percentiles "
                       "and prefix reuse (where hash ids exist) of a trace file, read streaming.")
    s.add_argument("file", help="trace file (CSV, JSONL, JSON, Parquet; .gz CSV/JSONL too)")
    s.add_argument("--format", choices=FORMATS, default=None,
                   help="trace format (default: detected from the header)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--plot", metavar="FILE.html", default=None,
                   help="write an offline plotly HTML: arrival rate over time, length histograms")
    s.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="skip (and count) malformed rows instead of stopping at the first")
    s.add_argument("--columns", metavar="ROLE=COL,...", default=None,
                   help="column mapping for --format csv/parquet, e.g. "
                        "arrival=ts,prompt_tokens=in,output_tokens=out")
    s.add_argument("--time-unit", choices=("s", "ms", "us", "ns", "datetime"), default=None,
                   help="unit of the arrival column for --format csv/parquet (default s)")
    s.set_defaults(func=run_stats)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _columns(text: str) -> dict:
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise InputError(input_problem("expected ROLE=COLUMN pairs separated by commas",
                                           where="--columns", value=text))
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def run_stats(args) -> int:
    from llmsim.workload.tracestats import trace_stats
    extra = {}
    if args.columns:
        if args.format not in ("csv", "parquet"):
            raise InputError(input_problem("--columns needs --format csv or parquet",
                                           where="--columns"))
        extra["columns"] = _columns(args.columns)
    if args.time_unit:
        extra["time_unit"] = args.time_unit
    if args.format in ("csv", "parquet") and "columns" not in extra:
        raise InputError(input_problem(f"--format {args.format} needs --columns "
                                       "arrival=...,prompt_tokens=...,output_tokens=...",
                                       where="--columns"))
    st = trace_stats(args.file, args.format, args.on_bad_row, extra or None, args.plot)
    if args.json:
        json.dump(st, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_stats(st))
    return 0


def _f(x, spec=".4g"):
    return "-" if x is None else format(x, spec)


def format_stats(st: dict) -> str:
    lines = [f"file           {st['file']}", f"format         {st['format']}",
             f"rows           {st['rows']:,}"]
    if st.get("conversations") is not None:
        lines.append(f"conversations  {st['conversations']:,}")
    for k in ("skipped_bad_rows", "filtered_rows", "failed_rows"):
        if st.get(k):
            lines.append(f"{k:<15}{st[k]:,}")
    lines += [f"span           {_f(st['span_s'], '.1f')} s",
              f"mean rate      {_f(st['mean_rate_per_s'])} req/s",
              f"inter-arrival  mean {_f(st['interarrival_mean_s'])} s, CV {_f(st['interarrival_cv'])}"]
    lines.append(f"{'tokens':<14} {'mean':>9} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for k in ("prompt_tokens", "output_tokens"):
        d = st.get(k)
        if d:
            lines.append(f"{k.split('_')[0]:<14} {d['mean']:>9.1f} {d['p50']:>8} {d['p90']:>8} "
                         f"{d['p99']:>8} {d['max']:>8}")
    px = st.get("prefix")
    if px:
        lines.append(f"prefix reuse   {px['hash_block_tokens']}-token blocks: "
                     f"{px['block_reuse_fraction']:.1%} of blocks seen before, "
                     f"{px['prefix_hit_fraction']:.1%} as a leading prefix "
                     f"({px['prefix_hit_token_fraction']:.1%} of prompt tokens); "
                     f"{px['requests_with_prefix_hit']:,} requests with a prefix hit")
    for ex in st.get("bad_row_examples") or []:
        lines.append(f"  skipped: {ex}")
    if st.get("plot"):
        lines.append(f"plot           {st['plot']}")
    return "\n".join(lines) + "\n"
