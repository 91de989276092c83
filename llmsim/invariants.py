"""Invariants of a simulation run: cheap checks that the simulator did not lose, duplicate or
corrupt anything (DESIGN §11). A violation is a bug in llmsim, never in the user's input.

Contract:

- Every ``check_*`` function is a plain function over plain data (the request table, the pools
  accounting of :class:`~llmsim.engine.simulation.RunOutput`, the timeline, KV managers, the
  summary dict) and returns a list of human-readable violations (empty = all good). Each
  violation names the rule, the request/pool/replica and the offending values.
- :func:`check_run` gathers the run-level checks of one finished ``Simulation`` and raises
  :class:`InvariantError` listing every violation; :func:`check_run_if_enabled` is the single
  hook ``llmsim.api.simulate`` calls after the run and before summarizing.
- :func:`check_summary` / :func:`check_result` check a finished ``Result`` (cost equals the
  billed replica-time, counts add up, the notes say what was not simulated).
- Switch: the checks run when ``scenario.simulation.check_invariants`` is true or the
  environment variable ``LLMSIM_CHECK_INVARIANTS`` is truthy (``1``/``true``/``yes``/``on``);
  a falsy value (``0``/``false``/``no``/``off``) turns the post-run checks off even when the
  scenario asks for them. (The per-step KV range check inside the engine loop follows the
  scenario flag only; see docs/reliability.md.)
- Cost: O(requests) vectorized work plus one re-iteration of the workload (requests are
  regenerated from the same seed to compare requested with generated tokens), i.e. about the
  cost of building the request table.

The rules (docs/reliability.md lists them with their rationale):

R1 every arrived request appears exactly once, in exactly one status of
   ``finished|rejected|unfinished|failed``, with a reason unless it finished; the table holds
   exactly the workload's first N requests and the next one (if any) arrived at or after the end.
R2 time never goes back: ``0 ≤ arrival ≤ first_scheduled ≤ first_token ≤ finish ≤ simulated_s``
   wherever the timestamps are set; a finished request has all four; an unfinished one has no
   finish; every recorded inter-token gap is ≥ 0.
R3 tokens: a finished request generated exactly the output tokens it asked for, no request
   generated more; the prompt is the workload's; first token set ⇔ at least one output token.
R4 KV blocks: ``0 ≤ free ≤ capacity`` on every (virtual) engine; after a drained run every block
   is free, no scheduler holds work and no request is unfinished.
R5 billing: billed and busy replica-seconds are finite and ≥ 0; without faults no pool is billed
   for more than ``replicas × simulated_s``; busy ≤ billed; mean KV usage in [0, 1].
R6 timeline: KV usage in [0, 1], queue lengths ≥ 0, time and cumulative counters never decrease
   per replica.
R7 (summary) cost = Σ billed_replica_s × gpus_per_replica × usd_per_gpu_hour / 3600; counts add
   up to arrivals; unfinished/rejected/failed requests and overload are stated in the notes.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

ENV_VAR = "LLMSIM_CHECK_INVARIANTS"
STATUSES = ("finished", "rejected", "unfinished", "failed")
#: Relative tolerance of time comparisons (simulated clocks add floats: ``now + (t - now)``
#: may differ from ``t`` in the last bit).
TIME_RTOL = 1e-9
#: Relative tolerance of money/time sums.
SUM_RTOL = 1e-9
#: At most this many examples are listed per rule (the count of the rest follows).
MAX_EXAMPLES = 5

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class InvariantError(AssertionError):
    """An invariant of the simulation was violated: a bug in llmsim (exit code 1)."""

    def __init__(self, violations: Sequence[str], context: str = ""):
        self.violations = list(violations)
        n = len(self.violations)
        head = (f"llmsim internal error: {n} invariant{'s' if n != 1 else ''} violated"
                + (f" ({context})" if context else ""))
        body = "\n".join(f"  - {v}" for v in self.violations)
        tail = ("This is a bug in llmsim, not in the scenario; please report it with the "
                f"scenario file. {ENV_VAR}=0 skips these checks.")
        super().__init__(f"{head}:\n{body}\n{tail}")


# ------------------------------------------------------------------------------- switch
def env_setting() -> bool | None:
    """True/False when ``LLMSIM_CHECK_INVARIANTS`` is set to a truthy/falsy value, else None.
    An unrecognised value is treated as truthy (checking is the safe side)."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    v = raw.strip().lower()
    if v in _FALSE:
        return False
    return True


def invariants_enabled(scenario) -> bool:
    """Whether the post-run checks run for ``scenario`` (see module docstring)."""
    env = env_setting()
    if env is not None:
        return env
    sim = getattr(scenario, "simulation", None)
    return bool(getattr(sim, "check_invariants", False))


def check_run_if_enabled(sim, run) -> bool:
    """The ``llmsim.api.simulate`` hook: :func:`check_run` when enabled. Returns whether the
    checks ran; raises :class:`InvariantError` on a violation."""
    if not invariants_enabled(sim.scenario):
        return False
    check_run(sim, run)
    return True


# ------------------------------------------------------------------------------- helpers
def _f(x) -> str:
    """Short float text for messages."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "unset"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.9g}"
    return str(x)


def _rule(out: list, rule: str, items: Sequence[str]) -> None:
    """Append one violation for ``rule`` listing the first examples of ``items``."""
    if not items:
        return
    shown = "; ".join(items[:MAX_EXAMPLES])
    more = f" (and {len(items) - MAX_EXAMPLES} more)" if len(items) > MAX_EXAMPLES else ""
    out.append(f"{rule}: {shown}{more}")


def _col(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].to_numpy(dtype=np.float64, na_value=np.nan)


def _rid(df: pd.DataFrame, i: int) -> str:
    v = df["request_id"].iloc[i]
    return f"request {v.item() if isinstance(v, np.generic) else v!r}"


def _later(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows where both are set and ``a`` is later than ``b`` beyond float tolerance."""
    tol = TIME_RTOL * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    with np.errstate(invalid="ignore"):
        return ~np.isnan(a) & ~np.isnan(b) & (a - b > tol)


def _is_blank(values) -> np.ndarray:
    return np.array([v is None or (isinstance(v, float) and math.isnan(v))
                     or (isinstance(v, str) and not v.strip()) for v in values], dtype=bool)


# ------------------------------------------------------------------------------- R1–R3
def check_requests(df: pd.DataFrame, *, simulated_s: float, drained: bool = False,
                   pool_names: Iterable[str] | None = None) -> list[str]:
    """R1 (statuses, reasons, unique ids), R2 (timestamp order) and the token rules of R3 that
    need no workload: one row per request of the raw or derived request table."""
    out: list[str] = []
    n = len(df)
    if n == 0:
        return out
    ids = df["request_id"]
    dup = ids[ids.duplicated(keep="first")]
    if len(dup):
        _rule(out, "R1 a request appears more than once in the request table",
              [f"request {v!r}" for v in dup.unique().tolist()])
    status = df["status"].to_numpy(dtype=object)
    known = np.isin(status, STATUSES)
    _rule(out, "R1 every request ends in exactly one of " + "|".join(STATUSES),
          [f"{_rid(df, i)}: status {status[i]!r}" for i in np.flatnonzero(~known)])
    fin = status == "finished"
    if "reason" in df.columns:
        blank = _is_blank(df["reason"].tolist())
        _rule(out, "R1 a request that did not finish carries a reason",
              [f"{_rid(df, i)}: status {status[i]}, reason {df['reason'].iloc[i]!r}"
               for i in np.flatnonzero(known & ~fin & blank)])
    if drained:
        _rule(out, "R4 a drained run (no duration limit, drain: true) leaves no request "
                   "unfinished", [_rid(df, i) for i in np.flatnonzero(status == "unfinished")])
    if pool_names is not None and "pool" in df.columns:
        names = set(pool_names)
        pools = df["pool"].tolist()
        blank = _is_blank(pools)
        _rule(out, "R1 a request's pool is a pool of the cluster, and a finished request has one",
              [f"{_rid(df, i)} ({status[i]}): pool {p!r}" for i, p in enumerate(pools)
               if (not blank[i] and p not in names) or (blank[i] and fin[i])])

    arr = _col(df, "arrival_s")
    sch = _col(df, "first_scheduled_s")
    tok = _col(df, "first_token_s")
    end = _col(df, "finish_s")
    bad = [i for i in np.flatnonzero(~np.isfinite(arr) | (arr < 0))]
    _rule(out, "R2 arrival_s is a finite time >= 0",
          [f"{_rid(df, i)}: arrival_s {_f(arr[i])}" for i in bad])
    names = ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s")
    cols = (arr, sch, tok, end)
    for a, b in itertools.combinations(range(4), 2):
        rows = np.flatnonzero(_later(cols[a], cols[b]))
        _rule(out, f"R2 time never goes back: {names[a]} <= {names[b]}",
              [f"{_rid(df, i)} ({status[i]}): {names[a]} {_f(cols[a][i])} > {names[b]} "
               f"{_f(cols[b][i])}" for i in rows])
    sim = np.full(n, float(simulated_s))
    for name, c in zip(names, cols):
        rows = np.flatnonzero(_later(c, sim))
        _rule(out, f"R2 {name} is not after the end of the simulation ({_f(simulated_s)} s)",
              [f"{_rid(df, i)}: {name} {_f(c[i])}" for i in rows])
    miss = fin & (np.isnan(sch) | np.isnan(tok) | np.isnan(end))
    _rule(out, "R2 a finished request has first_scheduled_s, first_token_s and finish_s",
          [f"{_rid(df, i)}: first_scheduled_s {_f(sch[i])}, first_token_s {_f(tok[i])}, "
           f"finish_s {_f(end[i])}" for i in np.flatnonzero(miss)])
    rows = np.flatnonzero((status == "unfinished") & ~np.isnan(end))
    _rule(out, "R2 an unfinished request has no finish_s",
          [f"{_rid(df, i)}: finish_s {_f(end[i])}" for i in rows])
    rows = np.flatnonzero((status == "rejected") & np.isnan(end))
    _rule(out, "R2 a rejected request has the time of its rejection in finish_s",
          [_rid(df, i) for i in rows])
    rows = np.flatnonzero(~np.isnan(tok) & np.isnan(sch))
    _rule(out, "R2 a request with a first token was scheduled",
          [f"{_rid(df, i)}: first_token_s {_f(tok[i])}" for i in rows])

    nout = _col(df, "num_output_tokens")
    nin = _col(df, "num_prompt_tokens")
    rows = np.flatnonzero(~(nin >= 1))
    _rule(out, "R3 a prompt has at least one token",
          [f"{_rid(df, i)}: num_prompt_tokens {_f(nin[i])}" for i in rows])
    rows = np.flatnonzero(~(nout >= 0))
    _rule(out, "R3 num_output_tokens >= 0",
          [f"{_rid(df, i)}: {_f(nout[i])}" for i in rows])
    rows = np.flatnonzero(fin & ~(nout >= 1))
    _rule(out, "R3 a finished request generated at least one token",
          [f"{_rid(df, i)}: num_output_tokens {_f(nout[i])}" for i in rows])
    has_tok = ~np.isnan(tok)
    rows = np.flatnonzero(has_tok != (nout > 0))
    _rule(out, "R3 first_token_s is set exactly when num_output_tokens > 0",
          [f"{_rid(df, i)} ({status[i]}): first_token_s {_f(tok[i])}, num_output_tokens "
           f"{_f(nout[i])}" for i in rows])
    for name in ("num_cached_tokens", "num_preemptions"):
        if name in df.columns:
            c = _col(df, name)
            rows = np.flatnonzero(~(c >= 0))
            _rule(out, f"R3 {name} >= 0", [f"{_rid(df, i)}: {_f(c[i])}" for i in rows])
    if "num_cached_tokens" in df.columns:
        c = _col(df, "num_cached_tokens")
        rows = np.flatnonzero(c > nin)
        _rule(out, "R3 cached tokens do not exceed the prompt",
              [f"{_rid(df, i)}: num_cached_tokens {_f(c[i])} > num_prompt_tokens "
               f"{_f(nin[i])}" for i in rows])
    return out


def requested_tokens(workload, n: int) -> pd.DataFrame:
    """The first ``n + 1`` requests of a (re-iterable, deterministic) workload as a frame with
    ``request_id, arrival_s, num_prompt_tokens, max_tokens``."""
    reqs = list(itertools.islice(iter(workload), n + 1))
    return pd.DataFrame({
        "request_id": [r.request_id for r in reqs],
        "arrival_s": np.array([r.arrival_s for r in reqs], dtype=float),
        "num_prompt_tokens": np.array([r.num_prompt_tokens for r in reqs], dtype=np.int64),
        "max_tokens": np.array([r.max_tokens for r in reqs], dtype=np.int64),
    })


def check_against_workload(df: pd.DataFrame, wanted: pd.DataFrame, *,
                           simulated_s: float) -> list[str]:
    """R1 (the table holds exactly the workload's first N requests; the next one could not have
    arrived yet) and R3 (prompt as asked; finished ⇒ generated == requested; never more).
    ``wanted`` is :func:`requested_tokens` of N = len(df)."""
    out: list[str] = []
    n = len(df)
    head = wanted.iloc[:n]
    if len(head) < n:
        out.append(f"R1 the request table has {n} rows but the workload yields only "
                   f"{len(head)} requests")
        return out
    if n < len(wanted):
        nxt_id = wanted["request_id"].iloc[n]
        nxt_id = nxt_id.item() if isinstance(nxt_id, np.generic) else nxt_id
        nxt_t = float(wanted["arrival_s"].iloc[n])
        if _later(np.array([float(simulated_s)]), np.array([nxt_t]))[0] and \
                df["request_id"].is_unique:
            out.append(f"R1 request {nxt_id!r} arrived at {_f(nxt_t)} s, "
                       f"before the simulation ended ({_f(simulated_s)} s), but is not in "
                       "the request table (an arrival was lost)")
    if not df["request_id"].is_unique:
        return out   # reported by check_requests; a join would multiply rows
    m = df.merge(head, on="request_id", how="left", suffixes=("", "_wl"), indicator=True)
    rows = np.flatnonzero((m["_merge"] != "both").to_numpy())
    _rule(out, "R1 every row of the request table is a request of the workload",
          [_rid(m, i) for i in rows])
    both = (m["_merge"] == "both").to_numpy()
    st = m["status"].to_numpy(dtype=object)
    a, aw = _col(m, "arrival_s"), _col(m, "arrival_s_wl")
    rows = np.flatnonzero(both & (a != aw))
    _rule(out, "R2 arrival_s is the workload's arrival time",
          [f"{_rid(m, i)}: {_f(a[i])} in the table, {_f(aw[i])} in the workload" for i in rows])
    p, pw = _col(m, "num_prompt_tokens"), _col(m, "num_prompt_tokens_wl")
    rows = np.flatnonzero(both & (p != pw))
    _rule(out, "R3 num_prompt_tokens is the workload's prompt length",
          [f"{_rid(m, i)}: {_f(p[i])} in the table, {_f(pw[i])} in the workload" for i in rows])
    g, want = _col(m, "num_output_tokens"), _col(m, "max_tokens")
    rows = np.flatnonzero(both & (st == "finished") & (g != want))
    _rule(out, "R3 a finished request generated exactly the output tokens it requested",
          [f"{_rid(m, i)}: generated {_f(g[i])}, requested {_f(want[i])}" for i in rows])
    rows = np.flatnonzero(both & (g > want))
    _rule(out, "R3 no request generates more output tokens than it requested",
          [f"{_rid(m, i)} ({st[i]}): generated {_f(g[i])}, requested {_f(want[i])}"
           for i in rows])
    return out


# ------------------------------------------------------------------------------- R4
def check_kv(engines: Iterable[tuple], *, drained: bool = False) -> list[str]:
    """R4 over ``(name, scheduler[, alive])`` tuples (each scheduler has ``kv`` with
    ``num_blocks`` and ``num_free_blocks``). After a drained run every block of a live engine is
    free and no live scheduler holds work (a replica lost to a fault keeps its last state)."""
    out: list[str] = []
    rng, leak, busy = [], [], []
    for name, sched, *rest in engines:
        alive = rest[0] if rest else True
        kv = getattr(sched, "kv", None)
        if kv is None:
            continue
        free, total = kv.num_free_blocks, kv.num_blocks
        if not 0 <= free <= total:
            rng.append(f"{name}: free {free} of {total} blocks")
        elif drained and alive and free != total:
            leak.append(f"{name}: {total - free} of {total} blocks still in use")
        if drained and alive:
            running = len(getattr(sched, "running", ()) or ())
            waiting = len(getattr(sched, "waiting", ()) or ())
            if running or waiting:
                busy.append(f"{name}: {running} running, {waiting} waiting")
    _rule(out, "R4 KV blocks are never negative nor above capacity", rng)
    _rule(out, "R4 every KV block is free after a drained run (a leak)", leak)
    _rule(out, "R4 no scheduler holds requests after a drained run", busy)
    return out


def engine_schedulers(sim) -> list[tuple[str, object, bool]]:
    """``(name, scheduler, alive)`` of every (virtual) engine of every replica a Simulation
    ever had (``alive`` False for a replica lost to a fault)."""
    out = []
    for r in getattr(sim, "replicas", ()):
        engines = getattr(r, "engines", ())
        alive = bool(getattr(r, "alive", True))
        for ve in engines:
            name = getattr(r, "name", "?")
            if len(engines) > 1:
                name += f" engine {getattr(ve, 'index', '?')}"
            out.append((name, ve.scheduler, alive))
    return out


# ------------------------------------------------------------------------------- R5
def check_pools(pools: Sequence[Mapping], *, simulated_s: float, drained: bool = False,
                faults: bool = False) -> list[str]:
    """R5 over the engine's pool accounting dicts (``billed_replica_s``, ``busy_replica_s``,
    ``replicas``, ``gpus_per_replica``, ``usd_per_gpu_hour``, optional ``kv_usage_mean``)."""
    out: list[str] = []
    bad, over, busy, kvm = [], [], [], []
    for p in pools:
        name = p.get("name", "?")
        for k in ("billed_replica_s", "busy_replica_s", "replicas", "gpus_per_replica"):
            v = p.get(k)
            if v is None or not math.isfinite(float(v)) or float(v) < 0:
                bad.append(f"pool {name}: {k} {_f(v)}")
        price = p.get("usd_per_gpu_hour")
        if price is not None and not (math.isfinite(float(price)) and float(price) >= 0):
            bad.append(f"pool {name}: usd_per_gpu_hour {_f(price)}")
        billed = float(p.get("billed_replica_s") or 0.0)
        b = float(p.get("busy_replica_s") or 0.0)
        cap = float(p.get("replicas") or 0) * float(simulated_s)
        if not faults and billed > cap * (1 + SUM_RTOL) + 1e-12:
            over.append(f"pool {name}: billed {_f(billed)} replica-s > {p.get('replicas')} "
                        f"replicas x {_f(simulated_s)} s")
        if b > billed * (1 + SUM_RTOL) + 1e-12:
            busy.append(f"pool {name}: busy {_f(b)} replica-s > billed {_f(billed)}")
        u = p.get("kv_usage_mean")
        if u is not None and not (-1e-12 <= float(u) <= 1 + 1e-9):
            kvm.append(f"pool {name}: kv_usage_mean {_f(u)}")
    _rule(out, "R5 pool accounting is finite and >= 0", bad)
    _rule(out, "R5 without faults no pool is billed beyond its replicas' lifetime", over)
    _rule(out, "R5 a pool is never busy longer than it was billed", busy)
    _rule(out, "R5 mean KV usage is a fraction in [0, 1]", kvm)
    return out


# ------------------------------------------------------------------------------- R6 / ITL
def check_timeline(tl: pd.DataFrame) -> list[str]:
    """R6 over the timeline frame (``time_s, pool, replica, num_waiting, num_running,
    kv_usage``, cumulative ``num_finished``/``tokens_out``)."""
    out: list[str] = []
    if tl is None or not len(tl):
        return out
    if "kv_usage" in tl.columns:
        u = _col(tl, "kv_usage")
        rows = np.flatnonzero(~((u >= -1e-12) & (u <= 1 + 1e-9)))
        _rule(out, "R6 timeline kv_usage is in [0, 1]",
              [f"{tl['pool'].iloc[i]}/{tl['replica'].iloc[i]} at {_f(tl['time_s'].iloc[i])} s: "
               f"{_f(u[i])}" for i in rows])
    for c in ("num_waiting", "num_running"):
        if c in tl.columns:
            v = _col(tl, c)
            rows = np.flatnonzero(~(v >= 0))
            _rule(out, f"R6 timeline {c} >= 0",
                  [f"{tl['pool'].iloc[i]}/{tl['replica'].iloc[i]}: {_f(v[i])}" for i in rows])
    mono = [c for c in ("time_s", "num_finished", "tokens_out") if c in tl.columns]
    bad = []
    for (pool, rep), g in tl.groupby(["pool", "replica"], sort=False):
        g = g.sort_values("time_s", kind="stable")
        for c in mono:
            d = np.diff(g[c].to_numpy(dtype=np.float64))
            if (d < 0).any():
                bad.append(f"{pool}/{rep}: {c} decreases")
    _rule(out, "R6 per replica, time and cumulative counters never decrease", bad)
    return out


def check_itl(gaps_s, weights) -> list[str]:
    """R2 on the ITL sample: every gap finite and >= 0, every weight >= 0."""
    out: list[str] = []
    g = np.asarray(gaps_s, dtype=np.float64)
    w = np.asarray(weights)
    if g.shape != w.shape:
        out.append(f"R2 ITL gaps and weights have different lengths ({g.size} vs {w.size})")
        return out
    rows = np.flatnonzero(~(np.isfinite(g) & (g >= 0)))
    _rule(out, "R2 time never goes back: every inter-token gap is >= 0",
          [f"gap {_f(g[i])} s x {w[i]}" for i in rows])
    rows = np.flatnonzero(~(w >= 0))
    _rule(out, "R2 ITL weights are >= 0", [f"weight {w[i]}" for i in rows])
    return out


def check_token_conservation(df: pd.DataFrame, *, tokens_out: int | None = None,
                             itl_weights=None) -> list[str]:
    """R3 across the engine: the tokens the engines say they produced equal the tokens in the
    request table, and the ITL sample has exactly one gap per output token after a request's
    first (Σ weights = Σ max(num_output_tokens − 1, 0))."""
    out: list[str] = []
    nout = _col(df, "num_output_tokens") if len(df) else np.zeros(0)
    total = int(np.nansum(nout))
    if tokens_out is not None and int(tokens_out) != total:
        out.append(f"R3 the engines produced {int(tokens_out):,} output tokens but the request "
                   f"table holds {total:,}")
    if itl_weights is not None:
        w = int(np.asarray(itl_weights).sum())
        want = int(np.nansum(np.maximum(nout - 1, 0)))
        if w != want:
            out.append(f"R3 the ITL sample holds {w:,} gaps but the requests produced {want:,} "
                       "tokens after their first")
    return out


# ------------------------------------------------------------------------------- run
def _scenario_flags(scenario) -> tuple[bool, bool]:
    """(drained, faults) of a scenario: drained = no simulated-time limit and drain: true."""
    sim = getattr(scenario, "simulation", None)
    drained = (getattr(sim, "duration_s", None) is None and bool(getattr(sim, "drain", True)))
    faults_cfg = getattr(getattr(scenario, "cluster", None), "faults", None)
    faults = getattr(faults_cfg, "active", None)
    if faults is None:
        faults = getattr(faults_cfg, "spot", None) is not None
    return drained, bool(faults)


def run_violations(sim, run) -> list[str]:
    """Every violation of R1–R6 in a finished ``Simulation`` ``sim`` and its ``RunOutput``."""
    scn = sim.scenario
    drained, faults = _scenario_flags(scn)
    df = run.requests
    simulated_s = float(run.simulated_s)
    pool_names = [p.get("name") for p in run.pools]
    out = check_requests(df, simulated_s=simulated_s, drained=drained, pool_names=pool_names)
    arrived = getattr(sim, "arrived", None)
    if arrived is not None and arrived != len(df) and df["request_id"].is_unique:
        out.append(f"R1 {arrived:,} requests arrived but the request table has {len(df):,} rows")
    workload = getattr(sim, "workload", None)
    if workload is not None:
        out += check_against_workload(df, requested_tokens(workload, len(df)),
                                      simulated_s=simulated_s)
    out += check_kv(engine_schedulers(sim), drained=drained)
    if drained:
        left = [f"{r.name}: {r.num_outstanding}" for r in getattr(sim, "replicas", ())
                if getattr(r, "num_outstanding", 0) and getattr(r, "alive", True)]
        _rule(out, "R4 no replica has outstanding requests after a drained run", left)
    out += check_pools(run.pools, simulated_s=simulated_s, drained=drained, faults=faults)
    out += check_timeline(run.timeline)
    out += check_itl(run.itl_gaps_s, run.itl_weights)
    # With speculative decoding the tokens accepted in one step arrive together: the ITL
    # sample's weights then count steps, not tokens, and only the token totals are compared.
    speculative = any(getattr(getattr(p, "scheduler", None), "speculative", None) is not None
                      for p in getattr(getattr(scn, "cluster", None), "pools", ()))
    if df["request_id"].is_unique:
        tokens = sum(getattr(s, "tokens_out", 0) for _, s, _ in engine_schedulers(sim))
        out += check_token_conservation(
            df, tokens_out=tokens, itl_weights=None if speculative else run.itl_weights)
    return out


def check_run(sim, run) -> None:
    """Raise :class:`InvariantError` listing every violation of R1–R6 (see module docstring)."""
    out = run_violations(sim, run)
    if out:
        scn = sim.scenario
        raise InvariantError(out, f"scenario '{getattr(scn, 'name', '?')}', seed "
                                  f"{getattr(scn, 'seed', '?')}")


# ------------------------------------------------------------------------------- summary
def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=SUM_RTOL, abs_tol=1e-12)


def check_summary(summary: Mapping) -> list[str]:
    """R7 on a summary dict (DESIGN §9): counts add up; gpus = replicas × gpus_per_replica;
    GPU-hours and USD per pool and in total equal billed replica-time × GPUs × price; the notes
    state unfinished, rejected and failed requests and the overload."""
    out: list[str] = []
    req = summary.get("requests", {})
    parts = sum(int(req.get(s, 0)) for s in STATUSES)
    if parts != int(req.get("arrived", 0)):
        out.append(f"R7 statuses add up to the arrivals: {parts} != arrived "
                   f"{req.get('arrived')} ({req})")
    hours = usd = 0.0
    priced = True
    for name, p in (summary.get("pools") or {}).items():
        need = ("billed_replica_s", "gpus_per_replica", "replicas")
        if any(k not in p for k in need):
            out.append(f"R7 pool {name} lacks {', '.join(k for k in need if k not in p)}")
            continue
        if int(p["gpus"]) != int(p["replicas"]) * int(p["gpus_per_replica"]):
            out.append(f"R7 pool {name}: gpus {p['gpus']} != replicas {p['replicas']} x "
                       f"gpus_per_replica {p['gpus_per_replica']}")
        h = float(p["billed_replica_s"]) * float(p["gpus_per_replica"]) / 3600.0
        if not _close(p.get("gpu_hours"), h):
            out.append(f"R7 pool {name}: gpu_hours {_f(p.get('gpu_hours'))} != billed "
                       f"{_f(p['billed_replica_s'])} s x {p['gpus_per_replica']} GPUs / 3600 "
                       f"= {_f(h)}")
        hours += h
        price = p.get("usd_per_gpu_hour")
        if price is None:
            priced = False
            continue
        u = h * float(price)
        if not _close(p.get("usd"), u):
            out.append(f"R7 pool {name}: usd {_f(p.get('usd'))} != {_f(h)} GPU-h x "
                       f"${_f(price)}/GPU-h = {_f(u)}")
        usd += u
    cost = summary.get("cost", {})
    if not _close(cost.get("gpu_hours"), hours):
        out.append(f"R7 cost.gpu_hours {_f(cost.get('gpu_hours'))} != sum over pools {_f(hours)}")
    if priced and not _close(cost.get("usd"), usd):
        out.append(f"R7 cost equals the billed replica-time: cost.usd {_f(cost.get('usd'))} != "
                   f"sum of billed_replica_s x gpus x price = {_f(usd)}")
    notes = [str(n) for n in summary.get("notes", [])]
    text = "\n".join(notes)
    for status, word in (("unfinished", "unfinished"), ("rejected", "rejected"),
                         ("failed", "failed")):
        if int(req.get(status, 0)) and word not in text:
            out.append(f"R7 the notes state that {req[status]} requests were {status} "
                       f"(notes: {notes})")
    if summary.get("overload") and not any(n.startswith("OVERLOAD") for n in notes):
        out.append("R7 an overloaded run says so in the notes (no note starts with OVERLOAD)")
    if req.get("finished", 0) == 0 and req.get("arrived", 0):
        for k in ("ttft_s", "e2e_s"):
            if (summary.get(k) or {}).get("p50") is not None:
                out.append(f"R7 no request finished but {k}.p50 is {summary[k]['p50']}")
    return out


def check_result(result) -> None:
    """R1–R3 on ``result.requests`` and R7 on ``result.summary``; raises
    :class:`InvariantError`. For tests and notebooks (the run-level hook needs the engine)."""
    s = result.summary
    out = check_requests(result.requests, simulated_s=s["simulated_s"])
    out += check_summary(s)
    out += check_timeline(result.timeline)
    out += check_itl(result.itl_gaps_s, result.itl_weights)
    df = result.requests
    if len(df) and {"ttft_s", "e2e_s", "queue_s"} <= set(df.columns):
        for col, a, b in (("ttft_s", "first_token_s", "arrival_s"),
                          ("e2e_s", "finish_s", "arrival_s"),
                          ("queue_s", "first_scheduled_s", "arrival_s")):
            fin = (df["status"] == "finished").to_numpy()
            want = (_col(df, a) - _col(df, b))[fin]
            got = _col(df, col)[fin]
            if not np.allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True):
                out.append(f"R7 derived column {col} = {a} - {b} for finished requests")
    if out:
        raise InvariantError(out, f"result '{getattr(result, 'name', '?')}'")
