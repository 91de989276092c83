"""Python API: ``simulate(scenario) -> Result``.

``scenario`` may be a path to a YAML file, a dict, or a ``Scenario`` from ``load_scenario``.
A ``Result`` has ``requests`` (one row per request, DESIGN §8), ``timeline`` (per-replica
samples), ``summary`` (DESIGN §9 dict), ``itl_gaps_s``/``itl_weights`` (the exact weighted ITL
sample) and ``summary_frame()``.

Streaming mode (``simulate(..., stream_dir=DIR)``), for runs too long to hold one row per
request: rows are written to ``DIR/requests.parquet`` (or ``.csv``) in chunks of 65,536 as
requests end (same columns and values as the in-memory table, derived columns included, in the
order the requests ended, unfinished last: sort by ``request_id`` to compare) and are not kept.
The summary comes from a streaming accumulator (:mod:`llmsim.metrics.streaming`): the same keys,
exact counts/means/attainment/cost, percentiles from histograms with 0.1% bins (≤ 0.05% off),
and ``summary["approximations"]`` saying so. The Result then has ``requests = None``,
``requests_path`` (the file), ``requests_sample`` (a seeded uniform sample of at most 100,000
rows, which the HTML report plots), and ``itl_gaps_s``/``itl_weights`` holding the ITL
histogram (bin values, token counts) instead of the exact sample. The invariant checks over the
request table (``llmsim.invariants``) need the table and are skipped in streaming mode (a note
says so when they were asked for).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.engine.simulation import Simulation
from llmsim.invariants import check_run_if_enabled
from llmsim.metrics.summary import add_derived_columns, summarize, summary_frame
from llmsim.outputs import output_dir, write_table
from llmsim.scenario import load_scenario


@dataclass
class Result:
    name: str
    requests: pd.DataFrame
    timeline: pd.DataFrame
    summary: dict
    itl_gaps_s: np.ndarray
    itl_weights: np.ndarray
    scenario: object = field(repr=False, default=None)
    #: Streaming mode only (see module docstring): the request file and a row sample.
    requests_path: Path | None = None
    requests_sample: pd.DataFrame | None = field(repr=False, default=None)
    #: One row per engine step when ``simulation.record_steps`` is true, else None.
    steps: pd.DataFrame | None = field(repr=False, default=None)

    def summary_frame(self) -> pd.DataFrame:
        return summary_frame(self.summary)

    def save(self, out_dir, *, fmt: str = "parquet", report: bool = True) -> dict:
        """Write requests.<fmt>, timeline.<fmt> (steps.<fmt> when recorded), summary.json and
        report.html into out_dir.

        Streaming results copy (or convert chunk by chunk) their request file unless it already
        is ``out_dir/requests.<fmt>``; their report plots ``requests_sample``."""
        out = output_dir(out_dir, fmt)
        paths = {}
        if self.requests is None and self.requests_path is not None:
            from llmsim.metrics.recorder import copy_request_file
            paths["requests"] = copy_request_file(self.requests_path, out / f"requests.{fmt}")
        for name, df in (("requests", self.requests), ("timeline", self.timeline),
                         ("steps", self.steps)):
            if df is None:
                continue
            paths[name] = write_table(df, out / f"{name}.{fmt}", fmt)
        p = out / "summary.json"
        p.write_text(json.dumps(self.summary, indent=2) + "\n")
        paths["summary"] = p
        if report:
            from llmsim.report import write_html
            p = out / "report.html"
            write_html(self if self.requests is not None else self._report_view(), p)
            paths["report"] = p
        return paths

    def _report_view(self):
        """What the HTML report reads, for a streaming result: the row sample as ``requests``,
        the approximations shown among the notes."""
        from types import SimpleNamespace
        summary = dict(self.summary)
        summary["notes"] = (list(summary.get("notes") or [])
                            + [f"approximation: {a}" for a in summary.get("approximations") or []])
        sample = self.requests_sample
        if sample is None:
            from llmsim.metrics.recorder import request_rows_frame
            sample = add_derived_columns(request_rows_frame([]))
        return SimpleNamespace(name=self.name, requests=sample, timeline=self.timeline,
                               summary=summary, itl_gaps_s=self.itl_gaps_s,
                               itl_weights=self.itl_weights)


def _as_scenario(scenario, overrides=()):
    from llmsim.scenario import Scenario
    if isinstance(scenario, Scenario) and not overrides:
        return scenario
    if isinstance(scenario, Scenario):
        return load_scenario(scenario.to_dict(), overrides)
    return load_scenario(scenario, overrides)


def _class_slo(classes: dict) -> dict | None:
    """Per-class SLO targets of the workload's classes (None when no class has one)."""
    return {k: v.get("slo") for k, v in classes.items() if v.get("slo")} or None


def simulate(scenario, overrides=(), *, progress: bool | None = False, stream_dir=None,
             stream_format: str = "parquet") -> Result:
    """Run one scenario to completion and return its Result.

    ``stream_dir``: stream the request rows to ``stream_dir/requests.<stream_format>``
    (``parquet`` or ``csv``) instead of holding them (streaming mode, see module docstring)."""
    scn = _as_scenario(scenario, overrides)
    if stream_dir is not None:
        return _simulate_streaming(scn, progress, Path(stream_dir), stream_format)
    sim = Simulation(scn, progress=progress)
    run = sim.run()
    check_run_if_enabled(sim, run)   # invariants (llmsim/invariants.py); raises InvariantError
    slo = scn.slo.model_dump() if scn.slo is not None else {}
    class_slo = _class_slo(run.class_slo)
    requests = add_derived_columns(run.requests, slo, class_slo)
    summary = summarize(requests, itl_gaps_s=run.itl_gaps_s, itl_weights=run.itl_weights,
                        pools=run.pools, slo=slo, simulated_s=run.simulated_s,
                        wall_s=run.wall_s, events=run.events, scenario=scn.name, seed=scn.seed,
                        class_slo=class_slo, notes=run.notes,
                        extra={"workload": run.workload_stats} if run.workload_stats else None)
    return Result(scn.name, requests, run.timeline, summary, run.itl_gaps_s, run.itl_weights,
                  scn, steps=run.steps)


#: Spawn key of the seed of the streaming row sample (the engine spawns children 0–3).
_SAMPLE_SPAWN_KEY = 1001


def _simulate_streaming(scn, progress, out_dir: Path, fmt: str) -> Result:
    """``simulate`` in streaming mode (see module docstring)."""
    from llmsim.invariants import invariants_enabled
    from llmsim.metrics.recorder import StreamingRecorder
    output_dir(out_dir, fmt, where="stream_format")
    path = out_dir / f"requests.{fmt}"
    seed = np.random.SeedSequence(scn.seed, spawn_key=(_SAMPLE_SPAWN_KEY,))

    def factory(with_tenant: bool = False):
        return StreamingRecorder(path, with_tenant=with_tenant, fmt=fmt, seed=seed)

    sim = Simulation(scn, progress=progress, recorder_factory=factory)
    rec = sim.recorder
    slo = scn.slo.model_dump() if scn.slo is not None else {}
    class_slo = _class_slo(dict(getattr(sim.workload, "classes", {}) or {}))
    rec.bind_slo(slo, class_slo)
    try:
        run = sim.run()
    except BaseException:
        rec.abort()
        raise
    notes = list(run.notes)
    check = invariants_enabled(scn)
    if check:
        notes.append("the per-request invariant checks (R1–R6) were skipped: they need the "
                     "request table, which a streaming run does not hold")
    summary = rec.totals.summary(
        itl=rec.itl.hist, pools=run.pools, simulated_s=run.simulated_s, wall_s=run.wall_s,
        events=run.events, scenario=scn.name, seed=scn.seed, notes=notes,
        extra={"workload": run.workload_stats} if run.workload_stats else None)
    n = rec.reservoir.seen
    k = min(n, rec.reservoir.size)
    summary["approximations"].append(
        "report.html plots the TTFT/TPOT/E2E CDFs and request statuses of "
        + (f"a seeded uniform random sample of {k:,} of the {n:,} requests" if k < n
           else f"all {n:,} requests")
        + " and the ITL CDF from the ITL histogram")
    if check:
        from llmsim.invariants import InvariantError, check_summary
        bad = check_summary(summary)
        if bad:
            raise InvariantError(bad, f"scenario '{scn.name}', seed {scn.seed}")
    return Result(scn.name, None, run.timeline, summary, run.itl_gaps_s, run.itl_weights, scn,
                  requests_path=path, requests_sample=rec.reservoir.frame(), steps=run.steps)
