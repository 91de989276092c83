"""The SimPy world: workload feeder → router → pools of replicas → recorder.

Contract: ``Simulation(scenario).run()`` returns a :class:`RunOutput` (raw frames and counters);
``llmsim.api`` turns it into a ``Result`` with the summary. Processes: one feeder, one engine
loop per replica (per virtual engine with pipeline parallelism). Randomness: one
``numpy.random.Generator`` per component spawned from the scenario seed.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import simpy

from llmsim.cost import CostModel
from llmsim.cost.memory import memory_plan
from llmsim.engine.replica import Replica
from llmsim.engine.router import make_router
from llmsim.metrics.recorder import Recorder
from llmsim.scheduling.factory import build_schedulers, scheduler_settings
from llmsim.workload import build_workload
from llmsim.workload.request import UNFINISHED

@dataclass
class PoolRuntime:
    name: str
    hardware: object
    role: str
    replicas: list
    gpus_per_replica: int
    usd_per_gpu_hour: float
    memory: object
    cost_model: object
    extra: dict = field(default_factory=dict)


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


def _pool_price(pool_cfg, hw) -> float:
    price = pool_cfg.price
    if price == "on_demand":
        return hw.price_on_demand_usd_per_h
    if price == "spot":
        return hw.price_spot_usd_per_h
    return float(price.usd_per_hour)


class Simulation:
    def __init__(self, scenario, *, progress: bool | None = None, recorder_factory=None):
        self.scenario = scenario
        self.progress = sys.stderr.isatty() if progress is None else progress
        seeds = np.random.SeedSequence(scenario.seed).spawn(4)
        self._workload_seed = seeds[0]
        self.router_rng = np.random.default_rng(seeds[1])
        self.env = simpy.Environment()
        self.model = scenario.resolved_model()
        sim = scenario.simulation
        self.recorder = None
        self.workload = build_workload(scenario.workload, self._workload_seed, scenario.base_dir)
        with_tenant = bool(getattr(self.workload, "classes", None))
        self.recorder = (recorder_factory or Recorder)(with_tenant=with_tenant)
        self.pools: list[PoolRuntime] = []
        self.replicas: list[Replica] = []
        for pool_cfg in scenario.cluster.pools:
            self.pools.append(self._build_pool(pool_cfg, sim))
        cap = [p.extra["decode_capacity"] for p in self.pools]
        for p in self.pools:
            w = p.extra["decode_capacity"] / max(cap)
            for r in p.replicas:
                r.capacity_weight = w
        self.router = make_router(scenario.cluster.router, self.router_rng)
        self.arrived = 0
        self.feeder = self.env.process(self._feed())

    def _build_pool(self, pool_cfg, sim) -> PoolRuntime:
        model = self.model
        hw = pool_cfg.resolved_hardware()
        parallel = pool_cfg.parallel_config()
        quant = pool_cfg.quant_config()
        policy, budget, chunked, manager = scheduler_settings(pool_cfg)
        mem = pool_cfg.memory
        plan = memory_plan(model, hw, parallel, quant,
                           gpu_memory_utilization=mem.gpu_memory_utilization,
                           block_size=mem.block_size, max_num_batched_tokens=budget)
        cost = CostModel(model, hw, parallel, quant)
        s = pool_cfg.scheduler
        replicas = []
        for i in range(pool_cfg.replicas):
            schedulers = build_schedulers(pool_cfg, model, plan, sim, self.recorder.itl)
            replicas.append(Replica(self.env, pool=pool_cfg.name, index=i, schedulers=schedulers,
                                    cost_model=cost, recorder=self.recorder,
                                    timeline_interval_s=sim.timeline_interval_s,
                                    check_invariants=sim.check_invariants,
                                    macro_steps=sim.macro_steps and not sim.record_steps,
                                    horizon_s=(sim.duration_s if sim.duration_s is not None
                                               else float("inf"))))
        self.replicas.extend(replicas)
        # roofline decode capacity (tokens/s) at a full batch, for capacity-weighted routing
        from llmsim.cost.types import BatchAggregates
        b = max(1, min(s.max_num_seqs, 256))
        agg = BatchAggregates(decode_seqs=b, decode_ctx_sum=b * 1024, num_sampled=b)
        decode_capacity = b / cost.stage_time_s(agg)
        return PoolRuntime(pool_cfg.name, hw, pool_cfg.role, replicas, parallel.num_gpus,
                           _pool_price(pool_cfg, hw), plan, cost,
                           extra={"decode_capacity": decode_capacity, "policy": policy,
                                  "kv_manager": manager,
                                  "num_gpu_blocks": plan.num_gpu_blocks,
                                  "kv_capacity_tokens": plan.kv_capacity_tokens})

    # ------------------------------------------------------------------ feeder ----------
    def _feed(self):
        env = self.env
        router = self.router
        replicas = self.replicas
        limit = self.scenario.simulation.duration_s
        bar = None
        if self.progress:
            from tqdm import tqdm
            total = getattr(self.scenario.workload, "num_requests", None)
            bar = tqdm(total=total, unit="req", desc="simulating", file=sys.stderr,
                       mininterval=0.5, leave=False)
        n = 0
        for req in self.workload:
            t = req.arrival_s
            if limit is not None and t > limit:
                break
            if t > env.now:
                yield env.timeout(t - env.now)
            n += 1
            router.choose(req, replicas).submit(req)
            if bar is not None and n % 1000 == 0:
                bar.update(1000)
        self.arrived = n
        if bar is not None:
            bar.update(n % 1000)
            bar.close()

    # ------------------------------------------------------------------ run -------------
    def run(self) -> RunOutput:
        t0 = time.perf_counter()
        env = self.env
        sim = self.scenario.simulation
        if sim.duration_s is not None:
            env.run(until=sim.duration_s)
        elif sim.drain:
            env.run()
        else:
            env.run(until=self.feeder)
        simulated_s = env.now
        wall_s = time.perf_counter() - t0
        notes = []
        unfinished = []
        for r in self.replicas:
            r._account_kv()
            for ve in r.engines:
                unfinished.extend(ve.scheduler.drain_unfinished())
        for req in unfinished:
            req.status = UNFINISHED
            req.reason = ("still running when the simulation stopped"
                          if req.first_scheduled_s is not None
                          else "still waiting when the simulation stopped")
        if unfinished:
            notes.append(f"{len(unfinished)} requests had not finished when the simulation "
                         f"stopped at {simulated_s:.1f} s; they are counted as unfinished")
        requests = self.recorder.requests_frame(unfinished)
        timeline = self.recorder.timeline_frame()
        gaps, weights = self.recorder.itl.arrays()
        pools = []
        for p in self.pools:
            reps = p.replicas
            billed = simulated_s * len(reps)
            pools.append({
                "name": p.name, "hardware": p.hardware.name, "role": p.role,
                "replicas": len(reps), "gpus_per_replica": p.gpus_per_replica,
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
            })
        wstats = dict(getattr(self.workload, "stats", {}) or {})
        return RunOutput(requests, timeline, gaps, weights, pools, simulated_s, wall_s,
                         self._num_events(), notes, wstats,
                         dict(getattr(self.workload, "classes", {}) or {}))

    def _num_events(self) -> int:
        """Events SimPy scheduled (its internal event id counter; 0 if unavailable)."""
        eid = getattr(self.env, "_eid", None)
        try:
            return int(next(eid)) - 1 if eid is not None else 0
        except TypeError:
            return 0
