"""The SimPy world: workload feeder → router → pools of replicas → recorder.

Contract: ``Simulation(scenario).run()`` returns a :class:`RunOutput` (raw frames and counters);
``llmsim.api`` turns it into a ``Result`` with the summary. Processes: one feeder, one engine
loop per replica (per virtual engine with pipeline parallelism); network transfers and fault
injectors use timeouts with callbacks (:mod:`llmsim.engine.network`,
:mod:`llmsim.engine.faults`); the control plane (routing, disaggregated hand-offs, migrations,
lost replicas) is :class:`llmsim.engine.cluster.Cluster`. Randomness: one
``numpy.random.Generator`` per component spawned from the scenario seed (workload, router, and
one per fault injector from a third child seed).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from llmsim.cost import CostModel
from llmsim.cost.memory import kv_bytes_per_token, memory_plan
from llmsim.engine.cluster import STAT_KEYS, Cluster, feed
from llmsim.engine.events import Environment
from llmsim.engine.faults import FaultInjector, read_fault_trace, resolve_trace_path
from llmsim.engine.gcpolicy import run_collection_thresholds
from llmsim.engine.network import (Network, Topology, card_hop_coeffs,
                                   port_capacity_bytes_per_s)
from llmsim.engine.pipeline import (PipelineCostModel, decode_capacity_tokens_per_s,
                                    hop_link_coeffs, is_decentralized, stage_layout,
                                    stage_memory_plan, stage_weight_bytes)
from llmsim.engine.replica import Replica
from llmsim.engine.router import make_router
from llmsim.metrics.recorder import Recorder
from llmsim.scheduling.factory import build_schedulers, scheduler_settings
from llmsim.workload import build_workload
from llmsim.workload.request import UNFINISHED


@dataclass
class PoolRuntime:
    """Everything the engine keeps about one pool; ``replicas`` are all the replicas it ever
    had (lost ones included), ``live`` those alive now."""

    name: str
    hardware: object
    role: str
    replicas: list
    gpus_per_replica: int
    usd_per_gpu_hour: float
    memory: object
    cost_model: object
    extra: dict = field(default_factory=dict)
    cfg: object = None
    sched_cfg: object = None
    policy: str = "vllm"
    region: str = "default"
    stages: list = field(default_factory=list)
    hardware_name: str = ""
    kv_bytes_per_token: float = 0.0
    port_capacity_bytes_per_s: float = 1.0
    fabric_latency_s: float = 0.0
    weight_load_s: list = field(default_factory=list)
    capacity_weight: float = 1.0
    template: object = None
    live: list = field(default_factory=list)
    next_index: int = 0
    pending_bills: list = field(default_factory=list)
    stats: dict = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0))


STEP_COLUMNS = ["pool", "replica", "engine", "start_s", "duration_s", "prefill_seqs",
                "prefill_tokens", "decode_seqs", "decode_ctx_tokens", "num_preempted",
                "kv_usage"]


@dataclass
class RunOutput:
    requests: object
    timeline: object
    itl_gaps_s: np.ndarray
    itl_weights: np.ndarray
    pools: list
    simulated_s: float
    wall_s: float
    events: int
    notes: list
    workload_stats: dict
    class_slo: dict
    steps: object = None          # DataFrame of engine steps when simulation.record_steps


def _pool_price(pool_cfg, hw) -> float:
    return float(pool_cfg.price_usd_per_gpu_hour())


class Simulation:
    def __init__(self, scenario, *, progress: bool | None = None, recorder_factory=None):
        self.scenario = scenario
        self.progress = sys.stderr.isatty() if progress is None else progress
        seeds = np.random.SeedSequence(scenario.seed).spawn(4)
        self._workload_seed = seeds[0]
        self.router_rng = np.random.default_rng(seeds[1])
        self._fault_seeds = seeds[2].spawn(2)          # spot, churn
        self.env = Environment()   # SimPy's interface, compiled (engine/events.py)
        self.model = scenario.resolved_model()
        sim = scenario.simulation
        self.recorder = None
        self.workload = build_workload(scenario.workload, self._workload_seed, scenario.base_dir)
        with_tenant = bool(getattr(self.workload, "classes", None))
        self.recorder = (recorder_factory or Recorder)(with_tenant=with_tenant)
        self.step_rows = [] if scenario.simulation.record_steps else None
        net = scenario.cluster.network
        self.network = Network(self.env)
        self.topology = Topology(net.links, net.cross_region)
        self.pools: list[PoolRuntime] = []
        for pool_cfg in scenario.cluster.pools:
            self.pools.append(self._build_pool(pool_cfg, sim))
        cap = [p.extra["decode_capacity"] for p in self.pools]
        for p in self.pools:
            p.capacity_weight = p.extra["decode_capacity"] / max(cap)
        self.router = make_router(scenario.cluster.router, self.router_rng)
        self.cluster = Cluster(self)
        self._build_injectors()
        self.replicas = self.cluster.replicas          # every replica ever (shared list)
        for p in self.pools:
            for _ in range(p.cfg.replicas):
                self.cluster.add_replica(p, born_s=0.0)
        for inj in self.cluster.injectors:
            inj.start()
        self.arrived = 0
        self.feeder = self.env.process(feed(self))   # (in cluster.py: compiled with the engine)

    # ------------------------------------------------------------------ pools -----------
    def _build_pool(self, pool_cfg, sim) -> PoolRuntime:
        model = self.model
        quant = pool_cfg.quant_config()
        policy, budget, chunked, manager = scheduler_settings(pool_cfg)
        mem = pool_cfg.memory
        s = pool_cfg.scheduler
        stages = stage_layout(pool_cfg, model)
        P = len(stages)
        if is_decentralized(pool_cfg):
            plan = stage_memory_plan(model, stages, quant,
                                     gpu_memory_utilization=mem.gpu_memory_utilization,
                                     block_size=mem.block_size, max_num_batched_tokens=budget,
                                     max_num_seqs=s.max_num_seqs, pool_name=pool_cfg.name)
            hops = [hop_link_coeffs(self.topology, stages, j) for j in range(P)]
            cost = PipelineCostModel(model, stages, quant, hops)
            names = []
            for st in stages:
                if st.hardware.name not in names:
                    names.append(st.hardware.name)
            hw_name = "+".join(names)
            sched_cfg = pool_cfg.model_copy(
                update={"parallel": pool_cfg.parallel.model_copy(update={"pp": P})})
        else:
            hw = pool_cfg.resolved_hardware()
            parallel = pool_cfg.parallel_config()
            plan = memory_plan(model, hw, parallel, quant,
                               gpu_memory_utilization=mem.gpu_memory_utilization,
                               block_size=mem.block_size, max_num_batched_tokens=budget)
            cost = CostModel(model, hw, parallel, quant)
            hw_name = hw.name
            sched_cfg = pool_cfg
        hw0 = stages[0].hardware
        # network port of a replica: each stage's GPUs move their share of the KV in parallel
        kind = self.scenario.cluster.network.kv_transfer
        coeffs = [card_hop_coeffs(getattr(st.hardware, kind), st.hardware.efficiency)
                  for st in stages]
        port = port_capacity_bytes_per_s([(c[1], st.tp, st.num_layers / model.num_layers)
                                          for c, st in zip(coeffs, stages)])
        fabric_latency = max(c[0] for c in coeffs)
        faults = self.scenario.cluster.faults
        load = []
        for st, wb in zip(stages, stage_weight_bytes(model, stages, quant)):
            bw = (faults.weight_load_gb_per_s * 1e9 if faults.weight_load_gb_per_s is not None
                  else st.hardware.host_link.bandwidth_bytes_per_s)
            load.append(wb / bw)
        capacity = decode_capacity_tokens_per_s(cost, plan.kv_capacity_tokens,
                                                s.max_num_seqs, P)
        template = build_schedulers(sched_cfg, model, plan, sim, None)[0]
        extra = {"decode_capacity": capacity, "policy": policy, "kv_manager": manager,
                 "num_gpu_blocks": plan.num_gpu_blocks,
                 "kv_capacity_tokens": plan.kv_capacity_tokens}
        if pool_cfg.region != "default" or is_decentralized(pool_cfg):
            extra["region"] = pool_cfg.region
        if is_decentralized(pool_cfg):
            extra["stages"] = [{"hardware": st.hardware.name, "tp": st.tp, "region": st.region,
                                "num_layers": st.num_layers} for st in stages]
        return PoolRuntime(
            pool_cfg.name, hw0, pool_cfg.role, [], pool_cfg.num_gpus_per_replica,
            _pool_price(pool_cfg, hw0), plan, cost, extra=extra, cfg=pool_cfg,
            sched_cfg=sched_cfg, policy=policy, region=pool_cfg.region, stages=stages,
            hardware_name=hw_name, kv_bytes_per_token=kv_bytes_per_token(model, quant),
            port_capacity_bytes_per_s=port, fabric_latency_s=fabric_latency,
            weight_load_s=load, template=template)

    def new_replica(self, pool: PoolRuntime, index: int, born_s: float) -> Replica:
        """A replica of ``pool`` (its engine processes start now); the cluster registers it."""
        sim = self.scenario.simulation
        schedulers = build_schedulers(pool.sched_cfg, self.model, pool.memory, sim,
                                      self.recorder.itl)
        return Replica(self.env, pool=pool.name, index=index, schedulers=schedulers,
                       cost_model=pool.cost_model, recorder=self.recorder,
                       timeline_interval_s=sim.timeline_interval_s,
                       capacity_weight=pool.capacity_weight,
                       check_invariants=sim.check_invariants,
                       macro_steps=sim.macro_steps and not sim.record_steps,
                       horizon_s=(sim.duration_s if sim.duration_s is not None
                                  else float("inf")),
                       role=pool.role, born_s=born_s, num_stages=len(pool.stages),
                       step_sink=self.step_rows)

    def _build_injectors(self) -> None:
        faults = self.scenario.cluster.faults
        cl = self.cluster
        names = [p.name for p in self.pools]

        def live(name):
            return cl.by_name[name].live

        def trace(ref):
            return read_fault_trace(resolve_trace_path(ref, self.scenario.base_dir), names)

        if faults.spot is not None:
            spot = faults.spot
            cl.injectors.append(FaultInjector(
                self.env, np.random.default_rng(self._fault_seeds[0]), kind="spot",
                pools=spot.pools or names, on_hit=lambda r, _s: cl.notice(r),
                rate_per_hour=spot.rate_per_hour,
                trace=trace(spot.trace) if spot.trace else None, live_replicas=live,
                eligible=lambda r: r.alive and r.accepting))
        if faults.churn is not None:
            churn = faults.churn
            cl.injectors.append(FaultInjector(
                self.env, np.random.default_rng(self._fault_seeds[1]), kind="churn",
                pools=churn.pools or names, on_hit=lambda r, s: cl.lose(r, "churn", s),
                rate_per_hour=churn.rate_per_hour,
                trace=trace(churn.trace) if churn.trace else None, per_stage=True,
                live_replicas=live))

    # ------------------------------------------------------------------ feeder ----------
    # ------------------------------------------------------------------ run -------------
    def _run_events(self) -> None:
        """Run the event loop until the scenario's end: its duration, every request ended
        (drain), or the last arrival."""
        env = self.env
        sim = self.scenario.simulation
        if sim.duration_s is not None:
            env.run(until=sim.duration_s)
        elif sim.drain:
            if self.cluster.done is not None:     # fault timers never run dry: stop when done
                try:
                    env.run(until=self.cluster.done)
                except RuntimeError as exc:
                    if "No scheduled events left" not in str(exc):
                        raise
            else:
                env.run()
        else:
            env.run(until=self.feeder)

    def run(self) -> RunOutput:
        t0 = time.perf_counter()
        with run_collection_thresholds():
            self._run_events()
            wall_s = time.perf_counter() - t0
            # the tables are built and the raw rows let go before the collector's thresholds
            # come back (see Recorder.release)
            out = self._output(wall_s)
            self.recorder.release()
        return out

    def _output(self, wall_s: float) -> RunOutput:
        """The run's tables and pool figures, once the event loop has stopped."""
        simulated_s = self.env.now
        notes = []
        for r in self.replicas:
            if r.alive:
                r.sync(simulated_s)     # finishes inside a macro-step in flight
                r.trim_to(simulated_s)
                r._account_kv()
        unfinished = self.cluster.unfinished()
        for req in unfinished:
            req.status = UNFINISHED
            req.reason = ("still running when the simulation stopped"
                          if req.first_scheduled_s is not None
                          else "still waiting when the simulation stopped")
        requests = self.recorder.requests_frame(unfinished)
        timeline = self.recorder.timeline_frame()
        gaps, weights = self.recorder.itl.arrays()
        pools = [self._pool_output(p, simulated_s) for p in self.pools]
        notes.extend(self._cluster_notes(requests, simulated_s))
        for p in pools:
            if "usd_at_on_demand" in p:
                usd = p["billed_replica_s"] * p["gpus_per_replica"] * p["usd_per_gpu_hour"] / 3600
                notes.append(f"spot pool '{p['name']}' cost ${usd:.4g} at spot prices, "
                             f"${p['usd_at_on_demand']:.4g} at on-demand prices")
        wstats = dict(getattr(self.workload, "stats", {}) or {})
        steps = None
        if self.step_rows is not None:
            import pandas as pd
            steps = pd.DataFrame(self.step_rows, columns=STEP_COLUMNS)
        return RunOutput(requests, timeline, gaps, weights, pools, simulated_s, wall_s,
                         self._num_events(), notes, wstats,
                         dict(getattr(self.workload, "classes", {}) or {}), steps)

    def _pool_output(self, p: PoolRuntime, end_s: float) -> dict:
        reps = p.replicas
        if all(r.born_s == 0.0 and r.died_s is None for r in reps) and not p.pending_bills:
            billed = end_s * len(reps)
        else:
            billed = sum(min(end_s if r.died_s is None else r.died_s, end_s) - r.born_s
                         for r in reps)
            billed += sum(max(0.0, end_s - b) for b in p.pending_bills)
        out = {
            "name": p.name, "hardware": p.hardware_name, "role": p.role,
            "replicas": p.cfg.replicas, "gpus_per_replica": p.gpus_per_replica,
            "billed_replica_s": billed,
            "busy_replica_s": sum(r.busy_s for r in reps),
            "usd_per_gpu_hour": p.usd_per_gpu_hour,
            "kv_usage_mean": (sum(r.kv_usage_integral for r in reps) / billed
                              if billed > 0 else 0.0),
            "num_steps": sum(r.num_steps for r in reps),
            "preemptions": sum(ve.scheduler.num_preemptions for r in reps
                               for ve in r.engines),
            "weights_gb_per_gpu": p.memory.weights_bytes_per_gpu / 1e9,
            **p.extra,
        }
        scheds = [ve.scheduler for r in reps for ve in r.engines]
        queried = sum(getattr(sc, "prefix_query_tokens", 0) for sc in scheds)
        if queried:   # prefix caching on: prompt tokens looked up vs found in the cache
            hit = sum(getattr(sc, "prefix_hit_tokens", 0) for sc in scheds)
            out["prefix_hit_tokens"] = hit
            out["prefix_query_tokens"] = queried
            out["prefix_hit_rate"] = hit / queried
        if p.cfg.price == "spot":
            od = p.cfg.model_copy(update={"price": "on_demand"}).price_usd_per_gpu_hour()
            out["usd_at_on_demand"] = billed * p.gpus_per_replica * od / 3600.0
        st = p.stats
        if self.scenario.cluster.faults.active:
            for k in ("spot_notices", "replicas_lost", "replicas_added", "migrations",
                      "migration_fallbacks", "restarts", "resumes", "requeued", "failed"):
                out[k] = st[k]
            out["replicas_live_at_end"] = len(p.live)
        if p.role == "decode" or st["kv_transfers_in"]:
            n = st["kv_transfers_in"]
            out["kv_transfers_in"] = n
            out["kv_transfer_gb_in"] = st["kv_transfer_bytes_in"] / 1e9
            out["kv_transfer_s_mean"] = st["kv_transfer_s_sum"] / n if n else None
            out["kv_wait_s_mean"] = st["kv_wait_s_sum"] / n if n else None
        return out

    def _cluster_notes(self, requests, simulated_s: float) -> list:
        cl = self.cluster
        notes = []
        st = {k: sum(p.stats[k] for p in self.pools) for k in STAT_KEYS}
        if st["kv_transfers_in"] and any(p.role == "decode" for p in self.pools):
            n = st["kv_transfers_in"]
            notes.append(
                f"disaggregated serving: {n:,} KV transfers from prefill to decode replicas "
                f"({st['kv_transfer_bytes_in'] / 1e9:.3g} GB; mean "
                f"{st['kv_transfer_s_sum'] / n * 1e3:.3g} ms on the wire after "
                f"{st['kv_wait_s_sum'] / n * 1e3:.3g} ms waiting for decode-side room); TTFT "
                "is measured on the prefill side, the transfer delays the second token")
        if not self.scenario.cluster.faults.active:
            return notes
        missed = sum(inj.missed for inj in cl.injectors)
        parts = []
        if st["spot_notices"]:
            parts.append(f"{st['spot_notices']} spot preemption notices")
        parts.append(f"{st['replicas_lost']} replicas lost, {st['replicas_added']} "
                     "replacements up")
        if st["migrations"] or self.cluster.spot_mode == "migrate":
            parts.append(f"{st['migrations']} requests migrated (KV moved), "
                         f"{st['migration_fallbacks']} fell back to recompute")
        parts.append(f"{st['restarts']} restarted and {st['resumes']} resumed (context "
                     f"recomputed elsewhere), {st['requeued']} queued requests re-routed, "
                     f"{st['failed']} failed")
        if missed:
            parts.append(f"{missed} trace events found no live replica")
        note = "faults: " + "; ".join(parts)
        if not cl.affected:
            note += ". No request was running on a replica when it was preempted or lost"
        elif len(requests):
            from llmsim.metrics.summary import add_derived_columns
            slo = self.scenario.slo.model_dump() if self.scenario.slo is not None else {}
            df = add_derived_columns(requests, slo)
            hit = df["request_id"].isin(cl.affected).to_numpy()
            met = df["slo_met"].to_numpy(dtype=bool)
            a = met[hit].mean()
            note += (f". {int(hit.sum()):,} requests were on a replica when it was preempted "
                     f"or lost: SLO attainment {100 * a:.1f}%")
            if (~hit).any():
                note += f" vs {100 * met[~hit].mean():.1f}% for the others"
        notes.append(note)
        return notes

    def _num_events(self) -> int:
        """Events scheduled during the run (the environment's event id counter)."""
        return self.env._eid
