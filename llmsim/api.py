"""Python API: ``simulate(scenario) -> Result``.

``scenario`` may be a path to a YAML file, a dict, or a ``Scenario`` from ``load_scenario``.
A ``Result`` has ``requests`` (one row per request, DESIGN §8), ``timeline`` (per-replica
samples), ``summary`` (DESIGN §9 dict), ``itl_gaps_s``/``itl_weights`` (the exact weighted ITL
sample) and ``summary_frame()``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.engine.simulation import Simulation
from llmsim.metrics.summary import add_derived_columns, summarize, summary_frame
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

    def summary_frame(self) -> pd.DataFrame:
        return summary_frame(self.summary)

    def save(self, out_dir, *, fmt: str = "parquet", report: bool = True) -> dict:
        """Write requests.<fmt>, timeline.<fmt>, summary.json and report.html into out_dir."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, df in (("requests", self.requests), ("timeline", self.timeline)):
            p = out / f"{name}.{fmt}"
            if fmt == "parquet":
                df.to_parquet(p, index=False)
            else:
                df.to_csv(p, index=False)
            paths[name] = p
        p = out / "summary.json"
        p.write_text(json.dumps(self.summary, indent=2) + "\n")
        paths["summary"] = p
        if report:
            from llmsim.report import write_html
            p = out / "report.html"
            write_html(self, p)
            paths["report"] = p
        return paths


def _as_scenario(scenario, overrides=()):
    from llmsim.scenario import Scenario
    if isinstance(scenario, Scenario) and not overrides:
        return scenario
    if isinstance(scenario, Scenario):
        return load_scenario(scenario.to_dict(), overrides)
    return load_scenario(scenario, overrides)


def simulate(scenario, overrides=(), *, progress: bool | None = False) -> Result:
    """Run one scenario to completion and return its Result."""
    scn = _as_scenario(scenario, overrides)
    run = Simulation(scn, progress=progress).run()
    slo = scn.slo.model_dump() if scn.slo is not None else {}
    class_slo = {k: v.get("slo") for k, v in run.class_slo.items() if v.get("slo")} or None
    requests = add_derived_columns(run.requests, slo, class_slo)
    summary = summarize(requests, itl_gaps_s=run.itl_gaps_s, itl_weights=run.itl_weights,
                        pools=run.pools, slo=slo, simulated_s=run.simulated_s,
                        wall_s=run.wall_s, events=run.events, scenario=scn.name, seed=scn.seed,
                        class_slo=class_slo, notes=run.notes,
                        extra={"workload": run.workload_stats} if run.workload_stats else None)
    return Result(scn.name, requests, run.timeline, summary, run.itl_gaps_s, run.itl_weights,
                  scn)
