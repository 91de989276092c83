"""`llmsim calibrate`: fit a hardware card's efficiency parameters to measured GPU timings.

``llmsim calibrate DATA [DATA...] --hardware H [--out CARD.yaml] [--holdout RULE]... [--json]``
``llmsim calibrate --carry-from CARD --hardware H [--out CARD.yaml]``

DATA are CSV files or directories of them (operator times in the Vidur layout, NCCL
collectives, attention kernels, whole-step latencies in the Splitwise layout; see
:mod:`llmsim.cost.calibrate_data`). The fit (:func:`llmsim.cost.calibrate.fit`) leaves out the
rows that a ``--holdout`` rule matches (``[FAMILY:]KEY=V1,V2``, keys model, tp, op, file, batch)
and reports the errors on the fitted and the held-out rows, and the project's error targets.

With ``--out`` the whole card of ``--hardware`` is written there with the fitted ``efficiency:``
section and a ``calibration:`` block (this command line, data files with row counts and
SHA-256, hold-out rules, per-stage parameters, errors); the rest of the card is kept as is.
Without ``--out`` the two new sections are printed. ``--json`` prints the result as one JSON
object instead of text.

``--carry-from CARD`` fits nothing: it writes ``--hardware``'s card with the efficiency section
of the calibrated CARD (:func:`llmsim.cost.calibrate.carry_efficiency`), for parts without
measurements; the ``source`` says what was carried and which transfers are unverified.
"""
from __future__ import annotations

import json
import shlex
import sys

from llmsim.errors import InputError, input_problem


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="fit a hardware card's efficiency parameters to "
                       "measured GPU timings and report the errors")
    p.add_argument("data", nargs="*", metavar="DATA",
                   help="measurement CSV files or directories (e.g. ../shared/calibration)")
    p.add_argument("--hardware", required=True,
                   help="hardware card (name or path) whose datasheet numbers are kept")
    p.add_argument("--out", metavar="CARD.yaml", default=None,
                   help="write the fitted card here (may be the card itself)")
    p.add_argument("--holdout", action="append", default=[], metavar="RULE",
                   help="[FAMILY:]KEY=V1,V2 rows left out of the fit and reported separately "
                        "(keys: model, tp, op, file, batch); repeatable")
    p.add_argument("--source", default=None,
                   help="text for efficiency.source (default: what was fitted on what)")
    p.add_argument("--carry-from", metavar="CARD", default=None,
                   help="no fit: carry the efficiency section of a calibrated CARD to "
                        "--hardware (a part without measurements); takes no DATA")
    p.add_argument("--carry-host", action="store_true",
                   help="with --carry-from: also carry the host-side overheads (same serving "
                        "stack); by default the card keeps its own")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _command_line(args) -> str:
    parts = ["llmsim", "calibrate", *args.data, "--hardware", args.hardware]
    if args.carry_from:
        parts += ["--carry-from", args.carry_from]
    if args.carry_host:
        parts += ["--carry-host"]
    for rule in args.holdout:
        parts += ["--holdout", rule]
    if args.out:
        parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


def run(args) -> int:
    import dataclasses

    from llmsim.cost.calibrate import (calibration_record, calibration_yaml, card_path,
                                       describe_fit, efficiency_yaml, fit, parse_holdout,
                                       target_report, write_card)
    from llmsim.cost.calibrate_data import read_measurements
    from llmsim.cost.calibrate_report import error_tables, format_tables, format_targets
    from llmsim.hardware.catalog import load_hardware

    hw = load_hardware(args.hardware)
    if args.out and not str(args.out).lower().endswith((".yaml", ".yml")):
        raise InputError(input_problem("the fitted card must be a .yaml file", where="--out",
                                       value=args.out))
    command = _command_line(args)
    if args.carry_host and not args.carry_from:
        raise InputError(input_problem("--carry-host goes with --carry-from",
                                       where="--carry-host"))
    if args.carry_from:
        return _carry(args, hw, command)
    if not args.data:
        raise InputError(input_problem(
            "give measurement files or directories (e.g. ../shared/calibration), or "
            "--carry-from CARD to carry a calibrated card's efficiency", where="DATA"))
    rules = parse_holdout(args.holdout)
    meas = read_measurements(args.data)
    result = fit(meas, hw, rules, source=args.source)
    if args.source is None:
        result.efficiency = dataclasses.replace(result.efficiency,
                                                source=describe_fit(result, meas, command))
    record = calibration_record(result, meas, command)
    written = None
    if args.out:
        written = write_card(card_path(args.hardware), result.efficiency, record, args.out)
    if args.json:
        payload = {"hardware": hw.name, "command": command,
                   "efficiency": dataclasses.asdict(result.efficiency),
                   "calibration": record, "written": str(written) if written else None}
        print(json.dumps(payload, indent=2, default=float))
        return 0
    ev = result.frame
    n = {s: int((ev["split"] == s).sum()) for s in ("fit", "holdout", "unused")}
    print(f"Calibrated {hw.name} on {len(meas.files)} file(s): {n['fit']} rows fitted, "
          f"{n['holdout']} held out, {n['unused']} not used by any stage")
    for name, skip in meas.skipped.items():
        for why, k in skip.items():
            print(f"  skipped {k} row(s) of {name}: {why}")
    print("\nFitted parameters per stage:")
    for sf in result.stages:
        vals = ", ".join(f"{k}={v:g}" for k, v in sf.params.items())
        print(f"  {sf.stage:<9} {sf.rows:>6} rows  {vals}"
              + ("" if sf.success else f"  (not converged: {sf.message})"))
    print()
    print(format_tables(error_tables(ev)))
    print(format_targets(target_report(ev)))
    if written:
        print(f"\nwrote {written}")
    else:
        print("\n(no --out: the fitted sections follow)\n")
        sys.stdout.write(efficiency_yaml(result.efficiency))
        sys.stdout.write(calibration_yaml(record))
    return 0


def _carry(args, hw, command: str) -> int:
    import dataclasses

    from llmsim.cost.calibrate import (calibration_yaml, card_path, carry_efficiency,
                                       efficiency_yaml, write_card)
    from llmsim.hardware.catalog import load_hardware

    for opt, bad in (("DATA", args.data), ("--holdout", args.holdout)):
        if bad:
            raise InputError(input_problem("--carry-from fits nothing: drop " + opt,
                                           where=opt, value=" ".join(bad)))
    src = load_hardware(args.carry_from)
    eff, record = carry_efficiency(src, hw, command, carry_host=args.carry_host)
    if args.source is not None:
        eff = dataclasses.replace(eff, source=args.source)
    written = write_card(card_path(args.hardware), eff, record, args.out) if args.out else None
    if args.json:
        print(json.dumps({"hardware": hw.name, "command": command,
                          "efficiency": dataclasses.asdict(eff), "calibration": record,
                          "written": str(written) if written else None}, indent=2))
        return 0
    if written:
        print(f"carried the efficiency of {src.name} to {hw.name}; wrote {written}")
    else:
        sys.stdout.write(efficiency_yaml(eff))
        sys.stdout.write(calibration_yaml(record))
    return 0
