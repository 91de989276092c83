"""`llmsim validate-cost`: how far the cost model is from measured GPU timings.

``llmsim validate-cost DATA [DATA...] [--hardware H] [--holdout RULE]... [--json]
[--plot FILE.html] [--rows FILE.csv]``

Predicts every measured row of DATA (CSV files or directories; layouts as for ``llmsim
calibrate``) with the card of ``--hardware`` (default ``a100-80gb``, the part of the shared
measurements) and prints the median and p90 absolute percentage error per operator family, per
model and per TP degree, split into fitted / held-out / unused rows, and the project's error
targets. The split follows the card's recorded hold-out rules (its ``calibration:`` block)
unless ``--holdout`` is given. When the card records target errors, the command also says
whether this run reproduces them (to 0.1 percentage point).

``--rows FILE.csv`` writes predicted against measured for every row; ``--plot FILE.html``
writes an offline plotly chart of the same; ``--json`` prints the summaries as one JSON object.
"""
from __future__ import annotations

import json

from llmsim.errors import InputError, input_problem

DEFAULT_HARDWARE = "a100-80gb"
_TOL = 1e-3


def register(sub) -> None:
    p = sub.add_parser("validate-cost", help="predicted vs measured GPU timings: errors per "
                       "operator family, model and TP degree")
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="measurement CSV files or directories (e.g. ../shared/calibration)")
    p.add_argument("--hardware", default=DEFAULT_HARDWARE,
                   help=f"hardware card name or path (default {DEFAULT_HARDWARE})")
    p.add_argument("--holdout", action="append", default=None, metavar="RULE",
                   help="[FAMILY:]KEY=V1,V2 rows to report as held out (default: the card's "
                        "recorded hold-out rules); repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.html", default=None,
                   help="write an offline plotly chart of predicted vs measured")
    p.add_argument("--rows", metavar="FILE.csv", default=None,
                   help="write predicted vs measured for every row")
    p.set_defaults(func=run)


def recorded_match(record: dict | None, targets: list[dict]) -> bool | None:
    """Whether the targets' medians equal the card's recorded ones (None: nothing recorded)."""
    if not record or not record.get("targets"):
        return None
    now = {t["target"]: t[t["judged_on"]]["median_ape"] for t in targets}
    for rec in record["targets"]:
        if rec["target"] not in now or abs(now[rec["target"]] - rec["median_ape"]) > _TOL:
            return False
    return True


def run(args) -> int:
    from llmsim.cost.calibrate import evaluate, parse_holdout, read_calibration_record
    from llmsim.cost.calibrate_data import read_measurements
    from llmsim.cost.calibrate_report import (error_tables, format_tables, format_targets,
                                              report_json, write_plot)
    from llmsim.hardware.catalog import load_hardware

    for opt, suffixes in (("--plot", (".html", ".htm")), ("--rows", (".csv",))):
        v = getattr(args, opt[2:])
        if v is not None and not str(v).lower().endswith(suffixes):
            raise InputError(input_problem(f"must end with {' or '.join(suffixes)}",
                                           where=opt, value=v))
    hw = load_hardware(args.hardware)
    record = read_calibration_record(args.hardware)
    if args.holdout is not None:
        texts = args.holdout
    else:
        texts = (record or {}).get("holdout") or []
    rules = parse_holdout(texts, where="--holdout" if args.holdout is not None
                          else f"{args.hardware}: calibration.holdout")
    meas = read_measurements(args.data)
    # rules recorded in the card may not apply to other data: those are ignored
    ev = evaluate(meas.frame, hw, rules=rules, strict=args.holdout is not None)
    payload = report_json(ev)
    match = recorded_match(record, payload["targets"]) if args.holdout is None else None
    if args.rows:
        cols = ["file", "line", "family", "group", "op", "model", "tp", "tokens", "batch",
                "chunk", "context", "size_bytes", "num_workers", "devices_per_node",
                "measured_s", "predicted_s", "ratio", "ape", "split"]
        ev[cols].to_csv(args.rows, index=False)
    if args.plot:
        write_plot(ev, args.plot, f"llmsim cost model vs measurements: {hw.name}")
    if args.json:
        payload.update({"hardware": hw.name, "holdout": [r.text() for r in rules],
                        "recorded_errors_reproduced": match})
        print(json.dumps(payload, indent=2, default=float))
        return 0
    n = payload["rows"]
    print(f"{hw.name}: {len(ev)} measured rows ({n['fit']} fit, {n['holdout']} held out, "
          f"{n['unused']} not used by any fit stage; {n['not_predicted']} not predictable by "
          "this card: collectives of another node topology, models not in the catalog); "
          "hold-out rules: " + (" ".join(r.text() for r in rules) or "none"))
    print()
    print(format_tables(error_tables(ev)))
    print(format_targets(payload["targets"]))
    if match is not None:
        print("\nRecorded errors of the card reproduced: " + ("yes" if match else "NO"))
    for opt in ("rows", "plot"):
        if getattr(args, opt):
            print(f"wrote {getattr(args, opt)}")
    return 0
