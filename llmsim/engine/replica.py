"""A replica: one model instance (tp × pp GPUs) running the engine loop on SimPy.

Contract: the engine loop is ``schedule → cost model → timeout → update``; the scheduler, KV
manager and cost model are plain objects (no SimPy). With pipeline parallelism (pp > 1) a replica
runs pp *virtual engines* (as vLLM does), each with its own scheduler and 1/pp of the KV blocks,
so up to pp micro-batches are in flight: a micro-batch occupies the first stage for
``stage_time_s`` and completes after ``step_time_s`` (its latency through all stages). With
pp == 1 there is exactly one process per replica.
"""
from __future__ import annotations

from llmsim.workload.request import FINISHED


class VirtualEngine:
    __slots__ = ("replica", "scheduler", "index", "wake")

    def __init__(self, replica, scheduler, index):
        self.replica = replica
        self.scheduler = scheduler
        self.index = index
        self.wake = None


class Replica:
    """Engine of one model instance. Router view: ``num_outstanding``, ``kv_usage``,
    ``capacity_weight``."""

    def __init__(self, env, *, pool: str, index: int, schedulers, cost_model, recorder,
                 timeline_interval_s: float, capacity_weight: float = 1.0, on_end=None,
                 check_invariants: bool = False):
        self.env = env
        self.pool = pool
        self.index = index
        self.name = f"{pool}/{index}"
        self.cost = cost_model
        self.recorder = recorder
        self.capacity_weight = capacity_weight
        self.on_end = on_end
        self.check_invariants = check_invariants
        self.engines = [VirtualEngine(self, s, i) for i, s in enumerate(schedulers)]
        self.num_outstanding = 0
        self.num_finished = 0
        self.num_steps = 0
        self.busy_s = 0.0
        self.kv_usage_integral = 0.0
        self._kv_t = 0.0
        self._stage_free_s = 0.0
        self._busy_until_s = 0.0
        self.timeline_interval_s = timeline_interval_s
        self._next_sample_s = 0.0
        self.procs = [env.process(self._loop(ve)) for ve in self.engines]

    # -------------------------------------------------------------- router view --------
    @property
    def kv_usage(self) -> float:
        if len(self.engines) == 1:
            return self.engines[0].scheduler.kv.usage
        used = sum(e.scheduler.kv.num_used_blocks for e in self.engines)
        total = sum(e.scheduler.kv.num_blocks for e in self.engines)
        return used / total if total else 0.0

    @property
    def tokens_out(self) -> int:
        return sum(e.scheduler.tokens_out for e in self.engines)

    # -------------------------------------------------------------- arrivals -----------
    def submit(self, req) -> None:
        """Called at the request's arrival time."""
        req.pool = self.pool
        req.replica = self.index
        if len(self.engines) == 1:
            ve = self.engines[0]
        else:  # vLLM: the virtual engine with the fewest unfinished requests
            ve = min(self.engines, key=lambda e: e.scheduler.num_running + e.scheduler.num_waiting)
        self._account_kv()
        sched = ve.scheduler
        if not sched.add_request(req, self.env.now):   # rejected at admission
            sched.finished.remove(req)
            self.recorder.request_ended(req)
            if self.on_end is not None:
                self.on_end(req)
            return
        self.num_outstanding += 1
        if ve.wake is not None and not ve.wake.triggered:
            ve.wake.succeed()

    def _collect(self, sched) -> None:
        ended = sched.finished
        if not ended:
            return
        rec = self.recorder
        for req in ended:
            if req.status == FINISHED:
                self.num_finished += 1
            self.num_outstanding -= 1
            rec.request_ended(req)
            if self.on_end is not None:
                self.on_end(req)
        ended.clear()

    def _account_kv(self) -> None:
        now = self.env.now
        self.kv_usage_integral += self.kv_usage * (now - self._kv_t)
        self._kv_t = now

    def _sample(self) -> None:
        now = self.env.now
        interval = self.timeline_interval_s
        if now < self._next_sample_s:
            return
        nw = sum(e.scheduler.num_waiting for e in self.engines)
        nr = sum(e.scheduler.num_running for e in self.engines)
        row = (self.pool, self.index, nw, nr, self.kv_usage, self.num_finished, self.tokens_out)
        rec = self.recorder
        while self._next_sample_s <= now:
            rec.sample((self._next_sample_s,) + row)
            self._next_sample_s += interval

    # -------------------------------------------------------------- engine loop --------
    def _loop(self, ve: VirtualEngine):
        env = self.env
        sched = ve.scheduler
        cost = self.cost
        pipelined = len(self.engines) > 1
        empty_in_a_row = 0
        while True:
            if not sched.has_work():
                self._sample()
                ve.wake = env.event()
                yield ve.wake
                ve.wake = None
                continue
            now = env.now
            out = sched.schedule(now)
            self._collect(sched)
            if out.is_empty:
                empty_in_a_row += 1
                if empty_in_a_row > 3:
                    raise RuntimeError(f"scheduler of {self.name} stalled with "
                                       f"{sched.num_waiting} waiting, {sched.num_running} running")
                continue
            empty_in_a_row = 0
            self._account_kv()
            agg = out.agg
            dt = cost.step_time_s(agg)
            if pipelined:
                start = max(now, self._stage_free_s)
                self._stage_free_s = start + cost.stage_time_s(agg)
                end = start + dt
            else:
                end = now + dt
            # busy time = union of in-flight intervals
            b0 = max(now, self._busy_until_s)
            if end > b0:
                self.busy_s += end - b0
                self._busy_until_s = end
            self.num_steps += 1
            yield env.timeout(end - now)
            self._account_kv()
            sched.update_from_output(out, env.now)
            if self.check_invariants:
                sched.kv.check()
            self._collect(sched)
            self._sample()
