"""Fault injectors: spot preemptions and peer churn (DESIGN §7).

Contract. An injector decides *when* replicas are hit; the cluster (:mod:`llmsim.engine.cluster`)
decides what happens to their requests. Each injector owns one ``numpy.random.Generator``
(spawned from the scenario seed) and draws from it in a fixed order, so runs are deterministic.

- Rate-driven: every replica of an affected pool draws, when it comes up, an exponential
  lifetime (mean ``3600 / rate_per_hour`` s; for churn the rate is per peer, so a pipeline of
  ``P`` stages fails at ``P`` times the rate, the lost stage drawn uniformly). A rate of 0 draws
  nothing and schedules nothing: the run equals the run without the injector.
- Trace-driven: rows ``time_s, pool[, count]`` (CSV with a header; ``count`` defaults to 1) hit
  ``count`` live replicas of ``pool`` drawn uniformly (fewer if fewer are live; the shortfall
  is reported in :attr:`FaultInjector.missed`).
- Events: one SimPy timeout (with a callback, no process) per scheduled hit.

Spot: the hit is a *notice*; the replica is gone ``warning_s`` later. Churn: the hit is the
failure itself (no notice).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from llmsim.errors import InputError, input_problem

TRACE_COLUMNS = ("time_s", "pool", "count")


def resolve_trace_path(ref, base_dir) -> Path:
    """A fault trace reference of a scenario as a path (relative ones resolve against the
    scenario's directory)."""
    from llmsim.scenario_schema import resolve_path_ref
    p = Path(resolve_path_ref(ref, base_dir))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def read_fault_trace(path, pool_names, *, where_key: str = "trace") -> list[tuple]:
    """Rows ``(time_s, pool, count)`` of a fault trace, sorted by time (stable). Raises
    :class:`InputError` naming the file and row for a missing header column, a time that is not
    a number >= 0, an unknown pool or a count that is not an integer >= 1."""
    p = Path(path)
    problems = []
    rows = []
    names = list(pool_names)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(input_problem(f"cannot read the fault trace: {exc}", where=str(p),
                                       key=where_key))
    except UnicodeDecodeError:
        from llmsim.workload.readers.base import not_utf8
        raise not_utf8(p, where_key) from None
    at = [0]                    # physical line number of the last line the csv reader took

    def lines():
        for at[0], line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield line

    reader = csv.reader(lines())
    header = next(reader, None)
    if header is None:
        raise InputError(input_problem("the fault trace is empty; expected a header "
                                       "'time_s,pool[,count]' and one row per event",
                                       where=str(p), key=where_key))
    header = [h.strip() for h in header]
    for col in ("time_s", "pool"):
        if col not in header:
            problems.append(input_problem(
                f"missing column '{col}'; the header must name time_s, pool and optionally "
                f"count (got {', '.join(header)})", where=str(p), line=at[0], key=col))
    for i, col in enumerate(header):
        if col not in TRACE_COLUMNS or col in header[:i]:
            what = "unknown column" if col not in TRACE_COLUMNS else "column named twice"
            problems.append(input_problem(
                f"{what}; the header names time_s, pool and optionally count, once each",
                where=str(p), line=at[0], key=col))
    if problems:
        raise InputError(problems)
    it, ip = header.index("time_s"), header.index("pool")
    ic = header.index("count") if "count" in header else None
    for row in reader:
        lineno = at[0]
        if not row:
            continue
        cells = [c.strip() for c in row]
        if len(cells) > len(header):
            problems.append(input_problem(f"row has {len(cells)} fields, the header "
                                          f"{len(header)}", where=str(p), line=lineno,
                                          value=cells[len(header):]))
            continue
        try:
            t = float(cells[it])
            if not math.isfinite(t) or t < 0:
                raise ValueError
        except (ValueError, IndexError):
            problems.append(input_problem("time_s must be a number of seconds >= 0",
                                          where=str(p), line=lineno, key="time_s",
                                          value=cells[it] if it < len(cells) else None))
            continue
        pool = cells[ip] if ip < len(cells) else ""
        if pool not in names:
            problems.append(input_problem(f"unknown pool; pools are: {', '.join(names)}",
                                          where=str(p), line=lineno, key="pool", value=pool))
            continue
        count = 1
        if ic is not None and ic < len(cells) and cells[ic] != "":
            try:
                count = int(cells[ic])
                if count < 1:
                    raise ValueError
            except ValueError:
                problems.append(input_problem("count must be an integer >= 1", where=str(p),
                                              line=lineno, key="count", value=cells[ic]))
                continue
        rows.append((t, pool, count))
    if problems:
        raise InputError(problems)
    if not rows:
        raise InputError(input_problem("the fault trace has a header but no rows",
                                       where=str(p), key=where_key))
    rows.sort(key=lambda r: r[0])
    return rows


class FaultInjector:
    """Schedules hits on the replicas of ``pools`` (names) and calls ``on_hit(replica, stage)``
    (``stage``: index of the lost pipeline stage for churn, None for spot).

    ``rate_per_hour``: per peer when ``per_stage`` (churn), else per replica; or ``trace`` rows
    from :func:`read_fault_trace`. The cluster calls :meth:`replica_up` for every replica that
    comes up (the initial ones at time 0 included) and :meth:`start` once."""

    def __init__(self, env, rng, *, kind: str, pools, on_hit, rate_per_hour=None, trace=None,
                 per_stage: bool = False, live_replicas=None, eligible=None):
        self.env = env
        self.rng = rng
        self.kind = kind
        self.pools = set(pools)
        self.on_hit = on_hit
        self.rate_per_hour = rate_per_hour
        self.trace = list(trace or [])
        self.per_stage = per_stage
        self.live_replicas = live_replicas      # pool name -> list of its live replicas
        self.eligible = eligible or (lambda r: r.alive)   # may this replica be hit now?
        self.num_hits = 0
        self.missed = 0                         # trace hits with no live replica to take them

    def start(self) -> None:
        for t, pool, count in self.trace:
            if pool in self.pools:
                ev = self.env.timeout(t - self.env.now)
                ev.callbacks.append(lambda _e, p=pool, c=count: self._trace_hit(p, c))

    def replica_up(self, replica) -> None:
        """Draw the lifetime of a replica that just came up (rate-driven only)."""
        if replica.pool not in self.pools or not self.rate_per_hour:
            return
        n = replica.num_stages if self.per_stage else 1
        life_s = float(self.rng.exponential(3600.0 / (self.rate_per_hour * n)))
        stage = int(self.rng.integers(n)) if self.per_stage else None
        ev = self.env.timeout(life_s)
        ev.callbacks.append(lambda _e, r=replica, s=stage: self._hit(r, s))

    def _hit(self, replica, stage) -> None:
        if not self.eligible(replica):
            return
        self.num_hits += 1
        self.on_hit(replica, stage)

    def _trace_hit(self, pool: str, count: int) -> None:
        live = [r for r in self.live_replicas(pool) if self.eligible(r)]
        k = min(count, len(live))
        self.missed += count - k
        if not k:
            return
        pick = self.rng.choice(len(live), size=k, replace=False)
        for i in pick:
            r = live[int(i)]
            stage = int(self.rng.integers(r.num_stages)) if self.per_stage else None
            self._hit(r, stage)
