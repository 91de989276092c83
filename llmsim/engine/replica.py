"""A replica: one model instance (tp × pp GPUs) running the engine loop on SimPy.

Contract: the engine loop is ``schedule → cost model → timeout → update``; the scheduler, KV
manager and cost model are plain objects (no SimPy). With pipeline parallelism (pp > 1) a replica
runs pp *virtual engines* (as vLLM does), each with its own scheduler and 1/pp of the KV blocks,
so up to pp micro-batches are in flight: a micro-batch occupies the first stage for
``stage_time_s`` and completes after ``step_time_s`` (its latency through all stages). With
pp == 1 there is exactly one process per replica.

Cluster hooks (issue 7; the policy lives in :mod:`llmsim.engine.cluster`):

- ``role == 'prefill'``: after a step, every request whose prefill completed (first token
  sampled) is detached with its KV still allocated and handed to the cluster, which moves the
  KV to a decode replica; the blocks are freed when the move completes.
- Incoming contexts (disaggregated hand-offs, migrations) wait in ``VirtualEngine.incoming``
  until the scheduler can reserve a slot and blocks for them (backpressure), then move over the
  network; once moved they wait in ``ready`` and join the decode group at the next step
  boundary. Both happen only at step boundaries. A context joining the batch ends a
  macro-step at the end of the step in flight (as an arrival does); a reservation does not
  change the batch, so inside a macro-step it is done at that boundary by a timeout callback
  (:meth:`Replica._boundary_in_run`) and the macro-step goes on where it stays exact; while a
  context waits for room here, macro-steps stop at the next finish (which frees room).
- Macro-steps apply the finishes inside them lazily; :meth:`Replica.sync` brings the state to
  what single stepping shows at a given time (the cluster calls it before routing).
- ``kill(now)`` (spot preemption, lost peer): the steps of a macro-step that ended by ``now``
  are applied, the step in flight is abandoned, the engine processes stop and every request is
  evicted and returned to the cluster.

The engine reads the simulated time as ``env._now``, the attribute SimPy 4's ``Environment.now``
property returns: from compiled code the property costs a Python call (≈ 10 per request), the
attribute a dict lookup. (Like :meth:`Replica._retarget`, this relies on SimPy 4's internals.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections import deque

import simpy

from llmsim.engine.events import Environment, FastEvent, event, start_process, timeout
from llmsim.errors import InputError, input_problem
from llmsim.scheduling.base import Scheduler, SchedulerOutput
from llmsim.scheduling.runs import DecodeRunPlan, bisect_right_int
from llmsim.workload.request import FINISHED, Request

if TYPE_CHECKING:    # (cluster.py imports this module: the types only, for the compiled build)
    from llmsim.engine.cluster import Cluster, Handoff

KILL = "replica lost"     # interrupt cause that stops an engine process
INF = float("inf")
#: most timeline rows one replica may add at once (an idle gap, or a tiny interval): beyond it
#: the run stops with an input error instead of filling memory (1M rows cover 116 days at 10 s)
MAX_TIMELINE_CATCH_UP = 1_000_000


class VirtualEngine:
    __slots__ = ("replica", "scheduler", "index", "wake", "incoming", "ready", "inflight",
                 "holding", "control")

    def __init__(self, replica: Replica, scheduler: Scheduler, index: int) -> None:
        self.replica = replica
        self.scheduler = scheduler
        self.index = index
        self.wake: FastEvent | None = None   # what the engine sleeps on; None once woken (or running)
        self.incoming: deque = deque()   # hand-offs waiting for a slot and blocks here
        self.ready: list = []           # hand-offs whose KV has arrived, to join at the next boundary
        self.inflight = 0         # hand-offs with blocks reserved here, KV on the wire
        self.holding = 0          # hand-offs whose KV this engine holds until it has moved
        self.control: Any = None       # a cluster request to run at the next boundary ('migrate')


class Replica:
    """Engine of one model instance. Router view: ``num_outstanding``, ``kv_usage``,
    ``capacity_weight``."""

    def __init__(self, env, *, pool: str, index: int, schedulers, cost_model, recorder,
                 timeline_interval_s: float, capacity_weight: float = 1.0, on_end=None,
                 check_invariants: bool = False, macro_steps: bool = True,
                 horizon_s: float = float("inf"), max_run_steps: int = 256,
                 role: str = "mixed", cluster=None, born_s: float = 0.0, num_stages: int = 1,
                 step_sink: list | None = None):
        self.env: Environment = env
        self.step_sink = step_sink   # a list receiving one tuple per step (record_steps)
        self.pool = pool
        self.index = index
        self.name = f"{pool}/{index}"
        self.cost = cost_model
        self.recorder = recorder
        self.capacity_weight = capacity_weight
        self.on_end = on_end
        self.check_invariants = check_invariants
        self.macro_steps = macro_steps
        self.horizon_s = horizon_s
        self.max_run_steps = max_run_steps
        self.role = role
        self.handoff = role == "prefill"
        self.cluster: Cluster | None = cluster
        self.num_stages = num_stages
        self.alive = True
        self.accepting = True
        self.born_s = born_s
        self.died_s: float | None = None
        self.outbound: dict = {}    # req -> hand-off whose KV is held here until it has moved
        self.inbound: dict = {}     # req -> hand-off whose KV is moving here
        # set by the cluster: network ports and region
        self.region: Any = None
        self.port_out: Any = None
        self.port_in: Any = None
        self.fabric_latency_s = 0.0
        self._run_proc: Any = None
        self._run_plan: Any = None   # DecodeRunPlan of the macro-step in flight
        self._run_out: Any = None
        self._run_k = 0         # the macro-step ends after step k ...
        self._run_a = 0         # ... and has applied steps 1..a (sync)
        self.fin_due_s = INF    # end of the first unapplied step of the run that finishes one
        self.joinable = True    # set by the cluster: its pool can take joining contexts (not static)
        self._boundary_due: Any = None   # (plan, j): _boundary_in_run is due at the end of step j
        self.num_arrivals = 0
        self.num_cuts = 0       # work queued here during a macro-step (sizes _run_cap)
        self.num_runs = 0
        self.engines = [VirtualEngine(self, s, i) for i, s in enumerate(schedulers)]
        # the engine every request goes to when there is one (no pipeline parallelism)
        self._sole_engine: VirtualEngine | None = self.engines[0] if len(self.engines) == 1 else None
        if self.handoff:
            for s in schedulers:
                s.hands_off = s.fast_hand_off
        self.num_outstanding = 0
        self.num_finished = 0
        self.num_steps = 0
        self.busy_s = 0.0
        self.kv_usage_integral = 0.0
        self._kv_t = born_s
        self._stage_free_s = born_s
        self._busy_until_s = born_s
        self.timeline_interval_s = timeline_interval_s
        k = -(-born_s // timeline_interval_s) if born_s > 0 else 0
        self._next_sample_s = k * timeline_interval_s
        self.procs = [start_process(env, self._loop(ve)) for ve in self.engines]

    # -------------------------------------------------------------- router view --------
    @property
    def kv_usage(self) -> float:
        if self._run_proc is not None:
            self.sync(self.env._now)
        if self._sole_engine is not None:
            return self._sole_engine.scheduler.kv.usage
        used = sum(e.scheduler.kv.num_used_blocks for e in self.engines)
        total = sum(e.scheduler.kv.num_blocks for e in self.engines)
        return used / total if total else 0.0

    @property
    def tokens_out(self) -> int:
        return sum(e.scheduler.tokens_out for e in self.engines)

    # -------------------------------------------------------------- arrivals -----------
    def _pick_engine(self) -> VirtualEngine:
        if self._sole_engine is not None:
            return self._sole_engine
        # vLLM: the virtual engine with the fewest unfinished requests
        return min(self.engines, key=lambda e: e.scheduler.num_running + e.scheduler.num_waiting)

    def submit(self, req: Request) -> None:
        """Called at the request's arrival time."""
        req.pool = self.pool
        req.replica = self.index
        ve: VirtualEngine = self._sole_engine or self._pick_engine()
        self._account_kv()
        sched = ve.scheduler
        self.num_arrivals += 1
        now = self.env._now
        if not sched.add_request(req, now):   # rejected at admission
            sched.finished.remove(req)
            self.recorder.request_ended(req)
            if self.on_end is not None:
                self.on_end(req)
            return
        self.num_outstanding += 1
        if self._run_proc is not None:
            self._interrupt_run(now)
        wake = ve.wake
        if wake is not None:
            ve.wake = None
            wake.succeed()

    def submit_recovered(self, req, last_token_s, front: bool) -> None:
        """Queue a request whose KV was lost on another replica (recomputed here)."""
        req.pool = self.pool
        req.replica = self.index
        ve = self._pick_engine()
        self._account_kv()
        self.num_arrivals += 1
        ve.scheduler.add_recovered(req, last_token_s, front)
        self.num_outstanding += 1
        self.poke(ve)

    def enqueue_incoming(self, h: Handoff) -> None:
        """A context computed elsewhere wants to continue here (hand-off ``h``).

        Its slot and blocks are reserved at the next step boundary. Inside a macro-step that
        boundary is handled without ending the macro-step (:meth:`_boundary_in_run`): a
        reservation does not change the batch."""
        ve: VirtualEngine = self._sole_engine or self._pick_engine()
        h.dst = self
        h.dst_ve = ve
        ve.incoming.append(h)
        self.num_outstanding += 1
        self.num_arrivals += 1
        if self._run_proc is ve and self._run_plan is not None:
            plan: DecodeRunPlan = self._run_plan     # (typed: native calls when compiled)
            now = self.env._now
            j = plan.first_end_at_least(now, self._run_a + 1, self._run_k + 1)
            if j < self._run_k:
                due = (plan, j)
                if self._boundary_due != due:
                    self._boundary_due = due
                    ev = timeout(self.env, plan.end(j) - now)
                    ev.callbacks.append(lambda _e: self._boundary_in_run(due))
                return
        self.poke(ve)

    def poke(self, ve: VirtualEngine) -> None:
        """Work was queued for ``ve``: end a macro-step at the end of the step in flight and
        wake the engine if it sleeps. An engine asleep with nothing it could run (a prefill
        replica whose hand-off has moved) is not woken: it only takes the timeline samples
        its wake-up would take."""
        now = self.env._now
        if self._run_proc is not None:
            self._interrupt_run(now)
        wake = ve.wake
        if wake is not None:
            sched = ve.scheduler
            if (sched.running or sched.waiting or sched.swapped or ve.incoming or ve.ready
                    or ve.control is not None):
                ve.wake = None
                wake.succeed()
            elif now >= self._next_sample_s:
                self._sample()

    def release_kv(self, ve: VirtualEngine, req: Request, num_kv_tokens: int) -> None:
        """Free the KV blocks ``ve`` holds for ``req`` at any time (a context that has moved
        away, a transfer abandoned). Inside a macro-step the step in flight is billed, as
        single stepping bills it when it starts, with the blocks in use before the release
        (its KV-use share is added when the step is applied, after the release)."""
        sched = ve.scheduler
        if self._run_proc is not ve:
            sched.release_kv(req, num_kv_tokens)
            return
        self.sync(self.env._now)
        kv = sched.kv
        before = kv.num_free_blocks
        sched.release_kv(req, num_kv_tokens)
        plan: DecodeRunPlan = self._run_plan
        d = plan.dur(self._run_a + 1)               # step _run_a + 1, in flight
        self.kv_usage_integral += (kv.num_free_blocks - before) / kv.num_blocks * d

    def _collect(self, sched: Scheduler) -> None:
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
        """Integrate KV usage over the time since the last call (idle periods, end of run)."""
        now = self.env._now
        if now > self._kv_t:
            self.kv_usage_integral += self.kv_usage * (now - self._kv_t)
            self._kv_t = now

    def _sample(self) -> None:
        now = self.env._now
        interval = self.timeline_interval_s
        if now < self._next_sample_s:
            return
        n = (now - self._next_sample_s) // interval + 1
        if n > MAX_TIMELINE_CATCH_UP:
            raise InputError(input_problem(
                f"the timeline would need {n:,.0f} rows for {self.name} at once, to cover "
                f"{now - self._next_sample_s:,.6g} s of simulated time at {interval:g} s per row "
                f"(more than {MAX_TIMELINE_CATCH_UP:,}): raise timeline_interval_s, or check "
                "the trace's timestamps, time unit and speedup",
                key="simulation.timeline_interval_s", value=interval))
        nw = sum(e.scheduler.num_waiting for e in self.engines)
        nr = sum(e.scheduler.num_running for e in self.engines)
        row = (self.pool, self.index, nw, nr, self.kv_usage, self.num_finished, self.tokens_out)
        rec = self.recorder
        while self._next_sample_s <= now:
            rec.sample((self._next_sample_s,) + row)
            self._next_sample_s += interval

    # -------------------------------------------------------------- step boundary ------
    def _boundary(self, ve: VirtualEngine) -> None:
        """Cluster work due at a step boundary: a control request, contexts that arrived
        (join the decode group), contexts waiting for room (reserve, start their move)."""
        sched = ve.scheduler
        cluster = self.cluster
        assert cluster is not None       # contexts move only between replicas of a cluster
        if ve.control is not None:
            what, ve.control = ve.control, None
            cluster.control(self, ve, what)
        if ve.ready:
            for h in ve.ready:
                req = h.req
                sched.join_prefilled(req, h.last_token_s)
                req.pool = self.pool
                req.replica = self.index
            ve.ready.clear()
        inc = ve.incoming
        while inc:
            h = inc[0]
            if not sched.reserve_prefilled(h.req, h.tokens, ve.inflight + len(ve.ready)):
                break
            inc.popleft()
            ve.inflight += 1
            cluster.start_move(h)

    def _hand_off(self, ve: VirtualEngine, out: SchedulerOutput) -> None:
        """Prefill role: detach the requests whose prefill just completed; the cluster moves
        their KV to a decode replica."""
        sched = ve.scheduler
        cluster = self.cluster
        assert cluster is not None
        for req in sched.just_prefilled(out):
            tokens, last = sched.detach_running(req)
            cluster.hand_off(self, ve, req, tokens, last, "disagg")

    # -------------------------------------------------------------- engine loop --------
    def _loop(self, ve: VirtualEngine):
        try:
            yield from self._engine(ve)
        except simpy.Interrupt as intr:
            if intr.cause is not KILL:
                raise

    def _engine(self, ve: VirtualEngine):
        env = self.env
        sched = ve.scheduler
        kv = sched.kv
        cost = self.cost
        decode_step_s: Any = getattr(cost, "decode_step_s", None)    # None: pipeline cost model
        pipelined = len(self.engines) > 1
        macro = self.macro_steps and not pipelined and sched.supports_macro
        handoff = self.handoff
        # decode-only steps of a standard scheduler are timed from CostModel.decode_step_line
        plain_decode = sched.supports_macro and not pipelined and decode_step_s is not None
        empty_in_a_row = 0
        while True:
            if ve.incoming or ve.ready or ve.control is not None:
                self._boundary(ve)
            if not (sched.running or sched.waiting or sched.swapped):     # has_work()
                if env._now >= self._next_sample_s:
                    self._sample()
                self._account_kv()
                ve.wake = event(env)
                yield ve.wake
                ve.wake = None
                self._account_kv()
                continue
            now: float = env._now
            out = sched.schedule(now)
            if sched.finished:
                self._collect(sched)
            if not out.prefills and not out.num_decodes:
                if ve.holding or ve.inflight:
                    # blocks are held for contexts on the wire: wait until one has moved
                    empty_in_a_row = 0
                    self._sample()
                    self._account_kv()
                    ve.wake = event(env)
                    yield ve.wake
                    ve.wake = None
                    self._account_kv()
                    continue
                empty_in_a_row += 1
                if empty_in_a_row > 3:
                    raise RuntimeError(f"scheduler of {self.name} stalled with "
                                       f"{sched.num_waiting} waiting, {sched.num_running} running")
                continue
            empty_in_a_row = 0
            agg = out.agg
            dt: float
            if out.prefills or not plain_decode:
                dt = cost.step_time_s(agg) + out.extra_s
            else:   # pure decode: the same time from the memoised decode line (~1e-15)
                dt = decode_step_s(out.num_decodes, agg.decode_ctx_sum) + out.extra_s
            if self.step_sink is not None:
                self.step_sink.append((self.pool, self.index, ve.index, now, dt,
                                       agg.prefill_seqs, agg.prefill_tokens, agg.decode_seqs,
                                       agg.decode_ctx_sum, out.num_preempted, kv.usage))
            if pipelined:
                start = max(now, self._stage_free_s)
                self._stage_free_s = start + cost.stage_time_s(agg)
                end = start + dt
                b0 = max(now, self._busy_until_s)   # busy = union of in-flight intervals
                if end > b0:
                    self.busy_s += end - b0
                    self._busy_until_s = end
                k0 = max(now, self._kv_t)    # KV use over the union of in-flight intervals
                if end > k0:
                    self.kv_usage_integral += self.kv_usage * (end - k0)
                    self._kv_t = end
                self.num_steps += 1
                yield timeout(env, end - now)
            elif (macro and not out.prefills and not out.num_preempted and not sched.waiting
                  and not out.extra_s):
                t_end: float | None = self._start_run(ve, sched, out, now, dt)
                while t_end is not None:
                    yield timeout(env, t_end - env._now)
                    t_end = self._continue_run(sched)   # extends the run, or ends it
                continue
            else:
                self.busy_s += dt
                self.kv_usage_integral += kv.num_used_blocks / kv.num_blocks * dt
                self._kv_t = now + dt
                self._busy_until_s = now + dt
                self.num_steps += 1
                yield timeout(env, dt)
            now = env._now           # the step's end
            sched.update_from_output(out, now)
            if handoff and out.prefills:
                self._hand_off(ve, out)
            if self.check_invariants:
                kv.check()
            if sched.finished:
                self._collect(sched)
            if now >= self._next_sample_s:
                self._sample()

    def _start_run(self, ve: VirtualEngine, sched: Scheduler, out: SchedulerOutput, now: float,
                   dt: float) -> float:
        """Start an exact macro-step: steps run as one SimPy timeout, to the time returned
        (the engine then calls :meth:`_continue_run` when it fires).

        The plan (:class:`~llmsim.scheduling.runs.DecodeRunPlan`) goes through request
        finishes unless an incoming context waits for room a finish could
        free (the batch shrinks at known steps) and stops before a block shortage, at the step
        that crosses the next timeline sample or the run's horizon; it is planned
        ``_run_cap()`` steps at a time. An arrival routed here meanwhile cuts the run at the
        end of the step it arrived in (:meth:`_interrupt_run`). Finishes inside the run are
        applied when someone looks (:meth:`sync`, called by the cluster before it routes and by
        :attr:`kv_usage`) or when the run ends; the state after it is the state single steps
        would leave (step times from ``CostModel.decode_step_pieces`` equal ``step_time_s`` to
        ~1e-15)."""
        plan = sched.plan_decode_run(now, now + dt, min(self._next_sample_s, self.horizon_s),
                                     self.cost.decode_step_pieces,
                                     not ve.incoming)
        plan.extend(self._run_cap())
        self._run_plan = plan
        self._run_out = out
        self._run_a = 0
        self._run_k = 0
        self._run_proc = ve
        return self._set_run_end()

    def _set_run_end(self) -> float:
        """The run ends with its last planned step (or the one before, when that one would
        end past the horizon); returns that end."""
        plan: DecodeRunPlan = self._run_plan
        k = plan.num_steps
        if k > 1 and plan.t_last >= self.horizon_s:
            k -= 1      # a step ending past the horizon is never applied: stop before it
            plan.open = False
        self._run_k = k
        self._update_fin_due()
        t = plan.end(k)
        self._kv_t = self._busy_until_s = t
        return t

    def _update_fin_due(self) -> None:
        """``fin_due_s``: the end of the first step of the run, applied after ``_run_a`` and
        before its last step ``_run_k``, after which a request finishes (INF if none)."""
        plan: DecodeRunPlan = self._run_plan
        fins = plan.fin_steps
        i = bisect_right_int(fins, self._run_a, 0)
        self.fin_due_s = plan.end(fins[i]) if i < len(fins) and fins[i] < self._run_k else INF

    def _continue_run(self, sched: Scheduler) -> float | None:
        """The run's timeout fired at the end of step ``_run_k``: plan more steps if the plan
        can go on and nothing cut the run (returns the new end), else apply what is left
        (None)."""
        plan: DecodeRunPlan = self._run_plan
        if plan.open:
            k = self._run_k
            plan.extend(self._run_cap())
            if plan.num_steps > k:
                return self._set_run_end()
        if self._run_a < self._run_k:      # else _boundary_in_run applied the last step
            self._apply_run(sched, self._run_k)
        self._run_proc = None
        self._run_plan = None
        self.fin_due_s = INF
        if self.check_invariants:
            sched.kv.check()
        if sched.finished:
            self._collect(sched)
        if self.env._now >= self._next_sample_s:
            self._sample()
        return None

    def _apply_run(self, sched: Scheduler, k: int) -> None:
        """Apply steps ``_run_a+1 .. k`` of the macro-step, the last one ending the run at
        ``plan.end(k)``, with the accounting single stepping would do."""
        plan: DecodeRunPlan = self._run_plan
        busy, integral = self.busy_s, self.kv_usage_integral
        if k - 1 > self._run_a:       # else the steps before the last one are applied
            busy, integral = sched.run_decode_steps(plan, self._run_a, k - 1, busy, integral)
        kv = sched.kv
        d = plan.dur(k)
        self.busy_s = busy + d
        self.kv_usage_integral = integral + kv.num_used_blocks / kv.num_blocks * d
        t = plan.end(k)
        self._kv_t = self._busy_until_s = t
        self.num_steps += k - self._run_a
        self.num_runs += 1
        self._run_a = k
        sched.update_from_output(self._run_out, t)

    def sync(self, now: float) -> None:
        """Bring a replica inside a macro-step to the state single stepping shows at ``now``:
        apply the steps that ended by then (finishes included) except the run's last one,
        which its own process applies."""
        if self._run_proc is None:
            return
        plan: DecodeRunPlan = self._run_plan
        j = plan.first_end_after(now, self._run_a + 1, self._run_k) - 1
        if j > self._run_a:
            self._apply_steps(j)

    def _apply_steps(self, j: int) -> None:
        """Apply steps ``_run_a + 1 .. j`` (``j`` < ``_run_k``) of the macro-step in flight,
        with the blocks of step ``j + 1`` reserved."""
        ve: VirtualEngine = self._run_proc
        plan: DecodeRunPlan = self._run_plan
        a = self._run_a
        sched = ve.scheduler
        self.busy_s, self.kv_usage_integral = sched.run_decode_steps(
            plan, a, j, self.busy_s, self.kv_usage_integral)
        self.num_steps += j - a
        self._run_a = j
        self._update_fin_due()
        if self.check_invariants:
            sched.kv.check()
        if sched.finished:
            self._collect(sched)

    def _boundary_in_run(self, due) -> None:
        """The step boundary after which contexts queued in ``incoming`` during a macro-step
        reserve their room, handled without ending the macro-step where single stepping would
        not change the batch there.

        Single stepping does, at the boundary ``plan.end(j)``: the boundary work of
        :meth:`_boundary` (reserve, start the moves) on the state after step ``j``, then the
        decode step ``j + 1`` (its blocks reserved, preempting if they do not fit). Here: steps
        up to ``j`` are applied, the blocks of step ``j + 1`` are given back for the boundary
        work and taken again after it. The macro-step goes on when the rest of it still fits
        for sure; it ends after step ``j + 1`` when only that step is sure to fit, and at
        ``j`` when step ``j + 1`` would preempt (the engine then resumes now and schedules as
        usual). While a context still waits for room, the macro-step ends at the next finish
        (which frees room), where the engine tries again."""
        plan: DecodeRunPlan = due[0]
        j: int = due[1]
        if self._boundary_due == due:
            self._boundary_due = None
        ve: VirtualEngine | None = self._run_proc
        if (ve is None or self._run_plan is not plan or self._run_k <= j or not ve.incoming
                or ve.ready or ve.control is not None):
            return      # the macro-step ends at this boundary: the engine does the work
        self._apply_steps(j)
        sched = ve.scheduler
        kv = sched.kv
        r = sched._phase_count[sched.D % sched.block_size] \
            if kv.decode_grows and sched.nd else 0
        kv.num_free_blocks += r
        sched._decode_reserved = 0
        free = kv.num_free_blocks
        self._boundary(ve)
        taken = free - kv.num_free_blocks
        k = self._run_k
        free = kv.num_free_blocks - r
        if free < 0:
            # step j + 1 would preempt: end the macro-step here, step j already applied
            kv.num_free_blocks = free + r
            self._run_k = j
            plan.open = False
            self.fin_due_s = INF
            t = plan.end(j)
            self._kv_t = self._busy_until_s = t
            self._retarget(t)
            return
        kv.num_free_blocks = free
        if kv.decode_grows and sched.nd:
            sched._decode_reserved = 1
        stop = k
        if taken and not plan.take_blocks(taken):
            stop = j + 1           # only step j + 1 is sure to fit
        if ve.incoming:
            plan.open = False      # a finish may make room: stop there and try again
            i = bisect_right_int(plan.fin_steps, j, 0)
            if i < len(plan.fin_steps) and plan.fin_steps[i] < stop:
                stop = plan.fin_steps[i]
        if stop < k:
            self._run_k = stop
            t = plan.end(stop)
            self._kv_t = self._busy_until_s = t
            self._update_fin_due()
            self._retarget(t)

    def _run_cap(self) -> int:
        """Steps to plan at a time for a macro-step: about the mean number of steps between
        two cuts of a macro-step at this replica (an arrival or a hand-off usually cuts the run
        short), 4 to ``max_run_steps``. A run that gets this far without a cut plans more
        (:meth:`_continue_run`): the same steps, their times equal but for the last bit (a
        segment split where the plan is extended starts its line from a new base), so changing
        this rule changes results in the last digits."""
        n = self.num_cuts
        if not n:
            return self.max_run_steps
        cap = self.num_steps // n
        return 4 if cap < 4 else (self.max_run_steps if cap > self.max_run_steps else cap)

    def _interrupt_run(self, t: float) -> None:
        """An arrival at ``t`` was queued on a replica inside a macro-step: end the macro-step
        at the end of the step that contains ``t`` (never one already applied)."""
        plan: DecodeRunPlan = self._run_plan
        k = self._run_k
        j = plan.first_end_at_least(t, self._run_a + 1, k + 1)
        self.num_cuts += 1
        plan.open = False      # the run ends at the end of step j: no more planning
        if j < k:
            self._run_k = j
            t_j = plan.end(j)
            self._kv_t = self._busy_until_s = t_j
            self._update_fin_due()
            self._retarget(t_j)

    def _retarget(self, t: float) -> None:
        """Make the engine process, suspended on the macro-step's timeout, resume at ``t``
        instead (earlier). Same effect as interrupting it and yielding a new timeout, without
        the interrupt event and exception: the process's ``_resume`` callback moves from the old
        timeout (which then fires with no callback) to a new one. Relies on SimPy 4's
        ``Process._target`` / ``_resume``, which ``Process.interrupt`` uses the same way."""
        proc = self.procs[0]
        old = proc._target
        old.callbacks.remove(proc._resume)
        ev = timeout(self.env, t - self.env._now)
        ev.callbacks.append(proc._resume)
        proc._target = ev

    def trim_to(self, t: float) -> None:
        """The run stopped at ``t`` with a step in flight: take the part of it past ``t`` off
        the busy time and the KV-use integral (a cut run never bills more than it ran).
        Inside a macro-step (after :meth:`sync` to ``t``) the step in flight was not billed
        yet: its part before ``t`` is billed here, as :meth:`kill` does."""
        ve = self._run_proc
        if ve is not None:
            plan: DecodeRunPlan = self._run_plan
            j = self._run_a
            if j < self._run_k and plan.end(j) <= t:
                d = t - plan.end(j)             # step j + 1, in flight since its end
                kv = ve.scheduler.kv
                self.busy_s += d
                self.kv_usage_integral += kv.num_used_blocks / kv.num_blocks * d
                self._busy_until_s = self._kv_t = t
        over = self._busy_until_s - t
        if over > 0:
            self.busy_s = max(0.0, self.busy_s - over)   # no negative rounding residue
            self._busy_until_s = t
        over = self._kv_t - t
        if over > 0:
            self.kv_usage_integral = max(0.0, self.kv_usage_integral - self.kv_usage * over)
            self._kv_t = t

    # -------------------------------------------------------------- loss ---------------
    def kill(self, now: float) -> list:
        """The replica is lost at ``now``: apply the steps of a macro-step that ended by then,
        abandon the step in flight (its time is taken off ``busy_s`` and the KV integral), stop
        the engine processes and evict every scheduled request. Returns ``[(req,
        last_token_s)]`` (see ``Scheduler.evict_all``); hand-offs are the cluster's business."""
        ve = self._run_proc
        if ve is not None:
            plan: DecodeRunPlan = self._run_plan
            k = self._run_k
            j = plan.first_end_after(now, self._run_a + 1, k + 1) - 1
            if j >= k:      # the run has ended (its process would resume at this time)
                if k > self._run_a:
                    self._apply_run(ve.scheduler, k)
            else:
                # steps up to j ended (step j + 1's blocks reserved); step j + 1 is in
                # flight: single stepping billed it when it started and takes the part after
                # `now` off below, so bill the part before `now` here
                if j > self._run_a:
                    self._apply_steps(j)
                d = now - plan.end(j)
                if d > 0:
                    kv = ve.scheduler.kv
                    self.busy_s += d
                    self.kv_usage_integral += kv.num_used_blocks / kv.num_blocks * d
                self._busy_until_s = self._kv_t = now
            self._run_proc = None
            self._run_plan = None
            self.fin_due_s = INF
        over = self._busy_until_s - now
        if over > 0:
            self.busy_s -= over
            self._busy_until_s = now
        over = self._kv_t - now
        if over > 0:
            self.kv_usage_integral -= self.kv_usage * over
            self._kv_t = now
        self._account_kv()
        active = self.env.active_process
        for p in self.procs:
            if p.is_alive and p is not active:
                p.interrupt(KILL)
        self.alive = False
        self.accepting = False
        self.died_s = now
        evicted = []
        for e in self.engines:
            if e.scheduler.finished:
                self._collect(e.scheduler)
            evicted.extend(e.scheduler.evict_all())
            e.wake = None
        self.num_outstanding = 0
        return evicted
