"""The planner's answers: text for the terminal, JSON, tables and the HTML report.

Contract: :class:`PlanResult` holds the :class:`~llmsim.planning.max_rate.MaxRateAnswer`,
:class:`~llmsim.planning.min_cost.MinCostAnswer` and :class:`~llmsim.planning.pareto.ParetoAnswer`
that were asked for (None otherwise). :meth:`PlanResult.format` prints each answer with the
roofline bound next to the simulated value; :meth:`PlanResult.as_dict` is the ``--json``
document (NaN → null); :meth:`PlanResult.save` writes ``plan.json``, the tables
(``max_rate.<fmt>``, ``min_cost.<fmt>``, ``pareto.<fmt>``) and ``report.html``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from llmsim.outputs import output_dir, write_table
from llmsim.metrics.format import fmt_ms, fmt_num, fmt_pct, fmt_usd, slo_targets_text
from llmsim.planning.metrics import storable

__all__ = ["PlanResult", "json_safe"]


def json_safe(x):
    """``x`` with NaN/inf → None, numpy scalars → Python, tuples → lists (for JSON)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (ValueError, AttributeError):
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def _ci(ci) -> str:
    lo, hi = ci
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f" [{100 * lo:.1f}%, {100 * hi:.1f}%]"


def _rate(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else \
        f"{x:.4g} req/s"


@dataclass
class PlanResult:
    scenario_name: str
    slo_targets: dict
    attainment_target: float
    seeds: list
    max_rate: object = None
    min_cost: object = None
    pareto: object = None
    base_scenario: object = field(repr=False, default=None)
    shape: object = field(repr=False, default=None)

    # ------------------------------------------------------------------------------------
    def format(self) -> str:
        """Readable multi-line text (no trailing newline)."""
        out = [f"llmsim plan: {self.scenario_name}",
               f"  SLO: {slo_targets_text(self.slo_targets)}; met when the mean attainment over "
               f"{len(self.seeds)} seed(s) is >= {fmt_pct(self.attainment_target)}"]
        if self.max_rate is not None:
            out += [""] + self._format_max_rate()
        if self.min_cost is not None:
            out += [""] + self._format_min_cost()
        if self.pareto is not None:
            out += [""] + self._format_pareto()
        return "\n".join(out)

    def _format_max_rate(self) -> list[str]:
        a = self.max_rate
        lines = [f"Max rate ({a.rate_key}):"]
        if a.rate_per_s is not None:
            lines.append(f"  simulated: {_rate(a.rate_per_s)} meets the SLO (attainment "
                         f"{fmt_pct(a.attainment)}{_ci(a.attainment_ci)}; goodput "
                         f"{fmt_num(a.goodput_requests_per_s)} req/s)")
        else:
            lines.append("  simulated: no rate tried meets the SLO")
        if a.fail_rate_per_s is not None:
            lines.append(f"  fails at:  {_rate(a.fail_rate_per_s)} (attainment "
                         f"{fmt_pct(a.fail_attainment)}{_ci(a.fail_attainment_ci)})")
        lines.append(f"  roofline:  {_rate(a.bound_rate_per_s)} request capacity; "
                     f"attainment at most {fmt_pct(a.attainment_bound)} (latency floors)")
        lines.append(f"  {len(a.evaluations)} rates simulated")
        lines += [f"  note: {n}" for n in a.notes]
        return lines

    def _format_min_cost(self) -> list[str]:
        a = self.min_cost
        lines = [f"Min cost at {_rate(a.target_rate_per_s)}:"]
        b = a.best
        if b is not None:
            e = b.evaluation
            lines.append(f"  simulated: {b.label}: {fmt_usd(b.usd_per_hour)}/h, {b.gpus} GPU(s); "
                         f"attainment {fmt_pct(e.attainment)}{_ci(e.attainment_ci)}, TTFT p99 "
                         f"{fmt_ms(e.metrics.get('ttft_s_p99'))} ms, TPOT p99 "
                         f"{fmt_ms(e.metrics.get('tpot_s_p99'))} ms")
            lines.append(f"             roofline capacity of this deployment "
                         f"{_rate(b.bound_rate_per_s)}")
        else:
            lines.append("  simulated: no candidate meets the SLO at this rate")
        if a.roofline_usd_per_hour is not None:
            lines.append(f"  roofline:  cheapest not ruled out: {a.roofline_label} at "
                         f"{fmt_usd(a.roofline_usd_per_hour)}/h")
        else:
            lines.append("  roofline:  every candidate is ruled out by the roofline")
        counts = a.candidates["status"].value_counts().to_dict()
        lines.append("  candidates: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        lines += [f"  note: {n}" for n in a.notes]
        return lines

    def _format_pareto(self) -> list[str]:
        a = self.pareto
        lines = ["Pareto front (output tokens/s per GPU vs tokens/s per user):",
                 "  tok/s/user  tok/s/GPU  roofline tok/s/GPU  SLO  candidate @ rate"]
        for r in a.front.itertuples():
            lines.append(f"  {fmt_num(r.tokens_per_s_per_user):>10}  "
                         f"{fmt_num(r.output_tokens_per_s_per_gpu):>9}  "
                         f"{fmt_num(r.bound_tokens_per_s_per_gpu):>18}  "
                         f"{'yes' if r.meets_slo else 'no':>3}  {r.candidate} @ "
                         f"{r.rate_per_s:g} req/s")
        lines.append(f"  {len(a.points)} points simulated, {len(a.front)} on the front")
        lines += [f"  note: {n}" for n in a.notes]
        return lines

    # ------------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        d = {"scenario": self.scenario_name, "slo_targets": self.slo_targets,
             "attainment_target": self.attainment_target, "seeds": self.seeds}
        for k in ("max_rate", "min_cost", "pareto"):
            a = getattr(self, k)
            d[k] = a.as_dict() if a is not None else None
        return json_safe(d)

    def save(self, out_dir, *, fmt: str = "parquet", report: bool = True) -> dict:
        """Write ``plan.json``, one table per answer and ``report.html`` into ``out_dir``."""
        out = output_dir(out_dir, fmt)
        paths = {}
        p = out / "plan.json"
        p.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        paths["plan"] = p
        tables = {"max_rate": self.max_rate.evaluations if self.max_rate else None,
                  "min_cost": self.min_cost.candidates if self.min_cost else None,
                  "pareto": self.pareto.points if self.pareto else None}
        for name, df in tables.items():
            if df is None:
                continue
            paths[name] = write_table(storable(df), out / f"{name}.{fmt}", fmt)
        if report:
            from llmsim.report.sweep import write_plan_html
            paths["report"] = write_plan_html(self, out / "report.html")
        return paths
