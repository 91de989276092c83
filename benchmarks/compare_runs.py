"""Do two checkouts give the same results? Runs the same scenarios under each and compares
the request tables and summaries, bitwise or to a relative tolerance.

    git worktree add --detach /tmp/old HEAD~1        # (needs ../shared next to it for Mooncake)
    python benchmarks/compare_runs.py /tmp/old [NEW_ROOT] [--rtol 1e-9] [--requests 3000]

A speed change that keeps results bitwise identical shows SAME everywhere. One that reorders
float sums (the summary's ITL mean over a sample recorded in another order) or restarts a
decode line from another base (a plan cut elsewhere) shows CLOSE: every number within
``--rtol`` relative, every label equal. DIFFERENT names the first column or summary key that
differs; the exit status is then 1.

Scenarios: the chat workload of ``bench_simulate.py`` (``--requests``, 16 replicas), the whole
Mooncake trace with ``bench_shapes.py``'s overrides (when ``../shared/traces`` is there) and
every ``scenarios/*.yaml`` of NEW_ROOT (as each checkout has it). Each checkout runs in its own
process, importing its own ``llmsim``; the summary's ``wall_s`` and ``events`` (SimPy's count)
are not compared.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IGNORED_SUMMARY_KEYS = ("wall_s", "events")


def _child(root: Path, out: Path, requests: int) -> None:
    """Runs in a subprocess with ``root`` first on sys.path: writes each scenario's request
    table (parquet) and summary (JSON) to ``out``."""
    sys.path[:0] = [str(root), str(root / "benchmarks")]
    os.environ["LLMSIM_CHECK_INVARIANTS"] = "0"
    import llmsim
    if not Path(llmsim.__file__).resolve().is_relative_to(root.resolve()):
        sys.exit(f"imported llmsim from {llmsim.__file__}, not from {root}")
    from bench_shapes import MOONCAKE
    from bench_simulate import scenario

    from llmsim.api import simulate
    runs = [("chat", lambda: simulate(scenario(requests, 16, 16 * 10.3, "vllm", 42)))]
    if (root.parent / "shared" / "traces").is_dir():
        runs.append(("mooncake", lambda: simulate(str(root / "scenarios/prefix_caching.yaml"),
                                                  MOONCAKE)))
    for f in sorted((root / "scenarios").glob("*.yaml")):
        runs.append((f.stem, lambda f=f: simulate(str(f))))
    for name, run in runs:
        res = run()
        res.requests.to_parquet(out / f"{name}.requests.parquet")
        summary = {k: v for k, v in res.summary.items() if k not in IGNORED_SUMMARY_KEYS}
        (out / f"{name}.summary.json").write_text(json.dumps(summary, sort_keys=True,
                                                             default=str))


def _run(root: Path, out: Path, requests: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONHASHSEED="0")
    cmd = [sys.executable, __file__, "--child", str(root), str(out), "--requests", str(requests)]
    done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"run under {root} failed:\n{done.stderr[-3000:]}")


def _close(a: float, b: float, rtol: float) -> bool:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return True
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def compare_summaries(a, b, rtol: float, path: str = "") -> tuple[str, str]:
    """(``SAME``/``CLOSE``/``DIFFERENT``, the first differing key path or the largest relative
    difference) of two JSON-like values."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return "DIFFERENT", f"{path or 'summary'}: keys {sorted(a.keys() ^ b.keys())}"
        items = [(a[k], b[k], f"{path}.{k}" if path else k) for k in sorted(a)]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return "DIFFERENT", f"{path}: {len(a)} vs {len(b)} entries"
        items = [(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            not isinstance(a, bool) and not isinstance(b, bool):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return "SAME", ""
        return ("CLOSE", path) if _close(a, b, rtol) else ("DIFFERENT", f"{path}: {a!r} vs {b!r}")
    else:
        return ("SAME", "") if a == b else ("DIFFERENT", f"{path}: {a!r} vs {b!r}")
    verdict, where = "SAME", ""
    for x, y, p in items:
        v, w = compare_summaries(x, y, rtol, p)
        if v == "DIFFERENT":
            return v, w
        if v == "CLOSE" and verdict == "SAME":
            verdict, where = v, w
    return verdict, where


def compare_tables(a, b, rtol: float) -> tuple[str, str]:
    """(``SAME``/``CLOSE``/``DIFFERENT``, detail) of two request tables: labels must be equal,
    numbers equal or within ``rtol`` relative (NaN equals NaN)."""
    import numpy as np
    import pandas as pd
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return "DIFFERENT", f"columns/rows {list(a.columns)}×{len(a)} vs {list(b.columns)}×{len(b)}"
    verdict, worst = "SAME", (0.0, "")
    for c in a.columns:
        x, y = a[c], b[c]
        if x.equals(y):
            continue
        if not (pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y)) or \
                pd.api.types.is_bool_dtype(x):
            return "DIFFERENT", f"column {c}"
        xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
        if not np.array_equal(np.isnan(xv), np.isnan(yv)):
            return "DIFFERENT", f"column {c}: missing values differ"
        ok = ~np.isnan(xv)
        scale = np.maximum(np.abs(xv[ok]), np.abs(yv[ok]))
        rel = np.abs(xv[ok] - yv[ok]) / np.where(scale > 0, scale, 1.0)
        m = float(rel.max()) if rel.size else 0.0
        if m > rtol:
            i = int(np.flatnonzero(ok)[rel.argmax()])
            return "DIFFERENT", f"column {c}, row {i}: {xv[i]:.17g} vs {yv[i]:.17g}"
        verdict = "CLOSE"
        if m >= worst[0]:
            worst = (m, f"column {c}: max relative difference {m:.1e}")
    return verdict, worst[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("old", nargs="?", type=Path)
    ap.add_argument("new", nargs="?", type=Path, default=HERE.parent)
    ap.add_argument("--rtol", type=float, default=1e-9)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(Path(args.child[0]), Path(args.child[1]), args.requests)
        return 0
    if args.old is None:
        ap.error("give the checkout to compare with (OLD_ROOT)")
    for root in (args.old, args.new):
        if not (root / "llmsim" / "__init__.py").is_file():
            ap.error(f"{root} is not a checkout of llmsim (no llmsim/__init__.py in it)")
    import pandas as pd
    with tempfile.TemporaryDirectory() as tmp:
        outs = []
        for k, root in enumerate((args.old, args.new)):
            out = Path(tmp) / str(k)
            out.mkdir()
            _run(root.resolve(), out, args.requests)
            outs.append(out)
        names = sorted(p.name[:-len(".summary.json")] for p in outs[1].glob("*.summary.json"))
        worst = "SAME"
        for name in names:
            sa, sb = (o / f"{name}.summary.json" for o in outs)
            if not sa.exists():
                print(f"{name:28s} MISSING in {args.old}")
                worst = "DIFFERENT"
                continue
            tv, tw = compare_tables(pd.read_parquet(outs[0] / f"{name}.requests.parquet"),
                                    pd.read_parquet(outs[1] / f"{name}.requests.parquet"),
                                    args.rtol)
            sv, sw = compare_summaries(json.loads(sa.read_text()), json.loads(sb.read_text()),
                                       args.rtol)
            order = ("SAME", "CLOSE", "DIFFERENT")
            v = max(tv, sv, key=order.index)
            worst = max(worst, v, key=order.index)
            detail = "; ".join(w for w in (tw and f"requests: {tw}", sw and f"summary: {sw}")
                               if w)
            print(f"{name:28s} {v:9s} {detail}")
    print(f"overall: {worst} (rtol {args.rtol:g})")
    return 1 if worst == "DIFFERENT" else 0


if __name__ == "__main__":
    sys.exit(main())
