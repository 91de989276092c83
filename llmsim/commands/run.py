"""`llmsim run SCENARIO [--set K=V]... [--out DIR] [--json] [--format parquet|csv]
[--stream | --no-stream]`.

Streaming (rows written to DIR/requests.<format> as requests end, summary from a streaming
accumulator, flat memory; see ``llmsim.api``) is used with ``--stream``, and automatically when
``--out`` is given with ``--format parquet`` and the workload may hold more than
:data:`AUTO_STREAM_REQUESTS` requests (see :func:`expected_num_requests`); ``--no-stream`` keeps
every row in memory.
"""
from __future__ import annotations

import json
import math
import sys

#: ``--out`` with parquet streams automatically above this many (possible) requests.
AUTO_STREAM_REQUESTS = 2_000_000

_EPILOG = f"""\
streaming: with --stream the request rows are written to DIR/requests.<format> in chunks as
requests end and are not kept in memory (memory stays flat for runs of millions of requests);
the summary's percentiles then come from histograms with 0.1% bins (within 0.05% of exact;
summary.json lists this under "approximations") and report.html plots a seeded sample of
100,000 requests. Rows in the file are in the order requests ended (sort by request_id).

Streaming is automatic when --out is given with --format parquet and the workload may hold
more than {AUTO_STREAM_REQUESTS:,} requests: workload.num_requests above that; without
num_requests, peak arrival rate x duration above it; or a size not known in advance
(traces, sessions). --no-stream turns the automatic choice off."""


def register(sub) -> None:
    import argparse
    p = sub.add_parser("run", help="simulate a scenario and print its summary", epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
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
    g = p.add_mutually_exclusive_group()
    g.add_argument("--stream", action="store_true",
                   help="stream request rows to DIR (needs --out); see below")
    g.add_argument("--no-stream", action="store_true",
                   help="hold every request row in memory even for very large workloads")
    p.set_defaults(func=run)


def _peak_rate_per_s(arrival) -> float | None:
    """An upper bound of the mean arrival rate of an arrival config (None when unknown)."""
    if arrival is None:
        return None
    if getattr(arrival, "rate_per_s", None) is not None:            # poisson, gamma, ...
        return float(arrival.rate_per_s)
    if getattr(arrival, "mean_rate_per_s", None) is not None:       # diurnal
        return float(arrival.mean_rate_per_s) * (1.0 + float(getattr(arrival, "amplitude", 1.0)))
    if getattr(arrival, "on_rate_per_s", None) is not None:         # on/off
        return max(float(arrival.on_rate_per_s), float(getattr(arrival, "off_rate_per_s", 0.0)))
    points = getattr(arrival, "points", None)                        # piecewise
    if points:
        return max(float(r) for _, r in points)
    return None


def expected_num_requests(scenario) -> int | None:
    """Most requests the scenario's workload can produce, when known in advance: its
    ``num_requests``; else (peak arrival rate) × (earliest of workload.duration_s and
    simulation.duration_s), summed over sources; ``None`` for traces, sessions (several
    requests per arrival) and arrival processes without a rate."""
    wl = scenario.workload
    if wl.num_requests is not None:
        return int(wl.num_requests)
    limits = [d for d in (wl.duration_s, scenario.simulation.duration_s) if d is not None]
    if not limits:
        return None
    horizon = min(limits)
    if wl.sources is None:
        parts = [wl]
        rates = [_peak_rate_per_s(wl.arrival)] if wl.trace is None else [None]
    else:
        parts = list(wl.sources)
        rates = []
        if any(s.share is not None for s in wl.sources):
            rates.append(_peak_rate_per_s(wl.arrival))
        for s in wl.sources:
            if s.trace is not None:
                rates.append(None)
            elif s.rate_per_s is not None:
                rates.append(float(s.rate_per_s))
            elif s.arrival is not None:
                rates.append(_peak_rate_per_s(s.arrival))
    if any(getattr(p, "sessions", None) is not None for p in parts) or any(
            r is None for r in rates):
        return None
    return int(math.ceil(sum(rates) * horizon)) + len(rates)


def should_stream(args, scenario) -> bool:
    """The streaming rule of ``llmsim run`` (module docstring)."""
    if args.stream:
        return True
    if args.no_stream or not args.out or args.format != "parquet":
        return False
    n = expected_num_requests(scenario)
    return n is None or n > AUTO_STREAM_REQUESTS


def run(args) -> int:
    from llmsim.api import simulate
    from llmsim.errors import InputError, input_problem
    from llmsim.metrics.format import format_summary
    from llmsim.scenario import load_scenario

    if args.stream and not args.out:
        raise InputError(input_problem("--stream writes the request rows into a folder: give "
                                       "--out DIR", where="--stream"))
    scenario = load_scenario(args.scenario, args.overrides)
    progress = None if not args.no_progress else False
    stream = should_stream(args, scenario)
    result = simulate(scenario, progress=progress, stream_dir=args.out if stream else None,
                      stream_format=args.format)
    if args.out:
        paths = result.save(args.out, fmt=args.format, report=not args.no_report)
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        print(format_summary(result.summary))
        if args.out:
            if stream:
                print(f"\nstreamed {result.summary['requests']['arrived']:,} request rows "
                      "(in the order they ended); percentiles come from histograms, see "
                      "'approximations' in summary.json", file=sys.stderr)
            print("\nwrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
