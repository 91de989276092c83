"""The cluster's control plane: routing, disaggregated hand-offs, migrations, lost replicas.

Contract (DESIGN §7, docs/cluster.md). Plain Python on top of the replicas' engine loops; it
adds no process of its own (timers are SimPy timeouts with callbacks).

- **Routing.** A new request goes to a replica of a ``mixed`` or ``prefill`` pool chosen by the
  router among the live replicas that accept work (``entry``). With no such replica it waits
  until one comes up (or fails when none will).
- **Disaggregated serving.** A ``prefill`` replica hands each request over right after its
  prefill (its first token is sampled there: TTFT is measured on the prefill side). The router
  picks a ``decode`` replica; the request waits in that replica's incoming queue until it can
  reserve a sequence slot and KV blocks (backpressure: the prefill replica keeps holding the KV
  meanwhile), then ``kv_transfer_bytes`` move over the network (:mod:`llmsim.engine.network`),
  then it joins the decode group at the next step boundary. The second token is delayed by the
  wait and the transfer (it shows in ITL / TPOT).
- **Spot preemption** (:meth:`Cluster.notice`): the replica stops taking requests and hands its
  queue back to the router; it keeps serving what runs for ``warning_s``. With ``migrate`` it
  detaches its decoders in time for their KV to move before it is gone (the lead is the time to
  move a full KV cache over the slowest path to a candidate, estimated when the notice comes);
  requests in prefill, and moves that do not complete in time, fall back to ``resume``. Then
  :meth:`Cluster.lose` removes the replica.
- **Lost replica** (:meth:`Cluster.lose`, also churn): steps in flight are lost; every request
  it held comes back through the router and recomputes its context (prompt + tokens generated
  so far; streamed tokens are kept): ``resume`` puts it at the head of the new replica's queue,
  ``restart`` at the tail. Contexts it was sending are abandoned (the receiver's reservation is
  released) and recomputed; contexts it was receiving are re-sent elsewhere. With ``replace``
  a replacement comes up after ``provisioning_s`` + weight loading and is billed from the end
  of provisioning.
- **Billing**: a replica is billed from ``born_s`` until it is gone (or the end of the run).
- Every request that arrives ends exactly once: finished, rejected or failed (recorded through
  the recorder and :meth:`request_ended`), or still held somewhere at the end (unfinished).
"""
from __future__ import annotations

import sys
from collections import deque
from typing import Any

from llmsim.engine.events import Environment, timeout
from llmsim.engine.network import Network, Resource, Topology, Transfer
from llmsim.engine.replica import Replica, VirtualEngine
from llmsim.engine.router import Router
from llmsim.workload.request import FAILED, REJECTED, Request

PENDING, MOVING, READY = "pending", "moving", "ready"


class Handoff:
    """A request whose KV context moves from ``src`` to another replica (kind ``disagg`` or
    ``migrate``). ``tokens``: KV tokens held at the source; ``last_token_s``: time of its last
    token (the ITL of its next token counts from it)."""

    __slots__ = ("req", "kind", "src", "src_ve", "tokens", "last_token_s", "num_bytes", "dst",
                 "dst_ve", "transfer", "state", "created_s", "moving_s")

    def __init__(self, req: Request, kind: str, src: Replica, src_ve: VirtualEngine,
                 tokens: int, last_token_s: float | None, num_bytes: float,
                 now: float) -> None:
        self.req = req
        self.kind = kind
        self.src = src
        self.src_ve = src_ve
        self.tokens = tokens
        self.last_token_s = last_token_s
        self.num_bytes = num_bytes
        self.dst: Replica | None = None
        self.dst_ve: VirtualEngine | None = None
        self.transfer: Transfer | None = None
        self.state = PENDING
        self.created_s = now
        self.moving_s: float | None = None


STAT_KEYS = ("spot_notices", "replicas_lost", "replicas_added", "migrations",
             "migration_fallbacks", "restarts", "resumes", "requeued", "failed",
             "kv_transfers_in", "kv_transfer_bytes_in", "kv_transfer_s_sum", "kv_wait_s_sum")


class Cluster:
    """Control plane of one simulation (module docstring). ``sim`` provides ``env``, ``router``,
    ``recorder``, ``network``, ``topology``, ``pools`` (PoolRuntime list), ``scenario`` and
    ``new_replica(pool, index, born_s)``."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.env: Environment = sim.env
        self.router = sim.router
        self.recorder = sim.recorder
        self.network: Network = sim.network
        self.topology: Topology = sim.topology
        self.pools = sim.pools
        self.by_name = {p.name: p for p in self.pools}
        faults = sim.scenario.cluster.faults
        self.faults = faults
        self.replicas: list = []        # every replica ever created, creation order
        self.live: list = []            # live replicas, creation order
        self.entry: list = []
        self.decode_targets: list = []
        self.migrate_targets: list = []
        self.decode_pools = [p for p in self.pools if p.role == "decode"]
        self.awaiting: deque = deque()  # hand-offs with no live destination yet
        self.orphans: deque = deque()   # (req, last_token_s, front, is_arrival) with no replica
        self.arrived = 0
        self.ended = 0
        self.feeder_finished = False
        self.done = self.env.event() if faults.active else None
        self.pending_up = 0             # replacements on their way
        self.affected: set = set()      # request ids whose replica was preempted or lost
        self.injectors: list = []
        self.spot_mode: Any = faults.spot.on_preempt if faults.spot is not None else None
        self.churn_mode: Any = faults.churn.on_failure if faults.churn is not None else None

    # ------------------------------------------------------------------ membership -------
    def add_replica(self, pool, born_s: float = 0.0):
        r = self.sim.new_replica(pool, pool.next_index, born_s)
        pool.next_index += 1
        r.region = pool.region
        r.port_out = Resource(f"{r.name} out", pool.port_capacity_bytes_per_s)
        r.port_in = Resource(f"{r.name} in", pool.port_capacity_bytes_per_s)
        r.fabric_latency_s = pool.fabric_latency_s
        r.joinable = pool.policy != "static"
        r.on_end = self.request_ended
        r.cluster = self
        pool.replicas.append(r)
        pool.live.append(r)
        self.replicas.append(r)
        self.live.append(r)
        self._refresh()
        for inj in self.injectors:
            inj.replica_up(r)
        return r

    def _refresh(self) -> None:
        live = self.live
        self.entry = [r for r in live if r.accepting and r.role != "decode"]
        self.decode_targets = [r for r in live if r.accepting and r.role == "decode"]
        self.migrate_targets = [r for r in live if r.accepting and r.role != "prefill"
                                and r.joinable]

    def _fitting(self, cands, req) -> list:
        """The candidates whose pool can ever hold ``req`` (scheduler admission check)."""
        if not cands:
            return cands
        ok: dict = {}
        out = []
        for r in cands:
            f = ok.get(r.pool)
            if f is None:
                f = ok[r.pool] = self.by_name[r.pool].template.admission_problem(req) is None
            if f:
                out.append(r)
        return out

    def _synced(self, replicas: list[Replica]) -> list[Replica]:
        """``replicas`` after each has applied the request finishes of its macro-step that are
        due by now (:meth:`Replica.sync`), so the router sees what single stepping shows."""
        now: float = self.env._now   # SimPy 4: what env.now returns (see replica.py)
        for r in replicas:
            if r.fin_due_s <= now:
                r.sync(now)
        return replicas

    def _choose(self, req: Request, replicas: list[Replica]) -> Replica:
        """The router's pick among ``replicas`` (a built-in router's ``choose`` is a native
        call in the compiled build; a custom one's, a Python call)."""
        router = self.router
        if isinstance(router, Router):
            return router.choose(req, replicas)     # (narrowed: compiled, a native call)
        return router.choose(req, replicas)

    # ------------------------------------------------------------------ arrivals ---------
    def dispatch(self, req: Request) -> None:
        """A new request arrives (called by the feeder at its arrival time)."""
        self.arrived += 1
        self._route_arrival(req)

    def _route_arrival(self, req: Request) -> None:
        entry = self.entry
        if not entry:
            if self.pending_up:
                self.orphans.append((req, None, False, True))
            else:
                self._fail(req, "no live replica to serve it (every replica able to take new "
                                "requests was lost and none is being replaced)")
            return
        r: Replica = self._choose(req, self._synced(entry))
        if r.handoff and self.decode_pools:
            reason = self._decode_problem(req)
            if reason is not None:
                req.pool, req.replica = r.pool, r.index
                self._end(req, REJECTED, reason)
                return
        r.submit(req)

    def _decode_problem(self, req):
        first = None
        for p in self.decode_pools:
            why = p.template.admission_problem(req)
            if why is None:
                return None
            first = first or f"no decode pool can hold it: {why}"
        return first

    def feeder_done(self) -> None:
        self.feeder_finished = True
        self._check_done()

    def request_ended(self, req) -> None:
        self.ended += 1
        if self.done is not None:
            self._check_done()

    def _check_done(self) -> None:
        if (self.done is not None and self.feeder_finished and self.ended >= self.arrived
                and not self.done.triggered):
            self.done.succeed()

    def _end(self, req, status, reason) -> None:
        req.status = status
        req.reason = reason
        req.finish_s = self.env.now
        if req.pool is None:
            req.pool = next((p.name for p in self.pools if p.role != "decode"),
                            self.pools[0].name)
        self.recorder.request_ended(req)
        self.request_ended(req)

    def _fail(self, req, reason) -> None:
        self._end(req, FAILED, reason)
        pool = self.by_name.get(req.pool)
        if pool is not None:
            pool.stats["failed"] += 1

    # ------------------------------------------------------------------ hand-offs --------
    def hand_off(self, src: Replica, ve: VirtualEngine, req: Request, tokens: int,
                 last_token_s: float | None, kind: str) -> None:
        """``src`` detached ``req`` keeping ``tokens`` KV tokens: move them elsewhere."""
        pool = self.by_name[src.pool]
        now: float = self.env._now    # SimPy 4: what env.now returns
        h = Handoff(req, kind, src, ve, tokens, last_token_s,
                    tokens * pool.kv_bytes_per_token, now)
        src.outbound[req] = h
        ve.holding += 1
        self._place(h)

    def _place(self, h: Handoff) -> None:
        h.state = PENDING
        h.dst = None
        h.dst_ve = None
        cands = self.decode_targets if h.kind == "disagg" else self.migrate_targets
        if len(self.decode_pools) > 1 or h.kind != "disagg":
            cands = self._fitting(cands, h.req)
        if not cands:
            if h.kind == "disagg" and not self.pending_up:
                self._release_src(h)
                self._fail(h.req, "no decode replica left to continue it after its prefill")
                return
            self.awaiting.append(h)
            return
        dst: Replica = self._choose(h.req, self._synced(cands))
        dst.enqueue_incoming(h)

    def start_move(self, h: Handoff) -> None:
        """The destination reserved room for ``h`` (at a step boundary): start the transfer."""
        h.state = MOVING
        h.moving_s = self.env._now    # SimPy 4: what env.now returns
        dst = h.dst
        assert dst is not None
        dst.inbound[h.req] = h
        h.transfer = self.network.start(h.num_bytes, self.topology.path(h.src, dst),
                                        self._moved, h)

    def _release_src(self, h: Handoff) -> None:
        """The source stops holding the KV of ``h`` (moved, or abandoned)."""
        src = h.src
        src_ve = h.src_ve
        del src.outbound[h.req]
        src_ve.holding -= 1
        src.num_outstanding -= 1
        if src.alive:
            src._account_kv()
            src.release_kv(src_ve, h.req, h.tokens)
            src.poke(src_ve)

    def _moved(self, tr: Transfer) -> None:
        h: Handoff = tr.meta
        h.transfer = None        # done with it: no Handoff <-> Transfer cycle left for the GC
        req = h.req
        self._release_src(h)
        dst = h.dst
        dst_ve = h.dst_ve
        assert dst is not None and dst_ve is not None
        del dst.inbound[req]
        dst_ve.inflight -= 1
        h.state = READY
        dst_ve.ready.append(h)
        dst.poke(dst_ve)
        if h.kind == "migrate":
            self.by_name[h.src.pool].stats["migrations"] += 1
            return
        st: dict[str, Any] = self.by_name[dst.pool].stats        # disaggregated hand-offs
        st["kv_transfers_in"] += 1
        st["kv_transfer_bytes_in"] += h.num_bytes
        done_s = tr.done_s
        moving_s = h.moving_s
        assert done_s is not None and moving_s is not None
        st["kv_transfer_s_sum"] += done_s - tr.start_s
        st["kv_wait_s_sum"] += moving_s - h.created_s

    def _cancel_at_dst(self, h: Handoff) -> None:
        """Undo what the destination side of ``h`` holds (queue entry, reservation, transfer)."""
        dst = h.dst
        dst_ve = h.dst_ve
        if h.state == PENDING:
            if dst is None:
                try:
                    self.awaiting.remove(h)
                except ValueError:
                    pass
            else:
                assert dst_ve is not None
                dst_ve.incoming.remove(h)
                dst.num_outstanding -= 1
        elif h.state == MOVING:
            assert dst is not None and dst_ve is not None and h.transfer is not None
            self.network.abort(h.transfer)
            h.transfer = None
            del dst.inbound[h.req]
            dst_ve.inflight -= 1
            dst.release_kv(dst_ve, h.req, h.tokens)
            dst.num_outstanding -= 1
            dst.poke(dst_ve)
        h.dst = None
        h.dst_ve = None

    # ------------------------------------------------------------------ recovery ---------
    def _requeue(self, req, last_token_s, front: bool) -> None:
        """Route a request that holds no KV to a live replica that can take it."""
        cands = self._fitting(self.entry, req)
        if not cands:
            if self.pending_up:
                self.orphans.append((req, last_token_s, front, False))
            else:
                self._fail(req, "its replica was lost and no live replica can take it")
            return
        r = self._choose(req, self._synced(cands))
        r.submit_recovered(req, last_token_s, front)

    def recover(self, req, last_token_s, mode: str, origin: str) -> None:
        """``req`` lost its KV on a replica of pool ``origin``: recompute it elsewhere."""
        self.affected.add(req.request_id)
        st = self.by_name[origin].stats
        st["resumes" if mode == "resume" else "restarts"] += 1
        self._requeue(req, last_token_s, mode == "resume")

    def _flush(self) -> None:
        """Retry what waited for a replica (after one came up or the last one was lost)."""
        if self.awaiting:
            pending = list(self.awaiting)
            self.awaiting.clear()
            for h in pending:
                self._place(h)
        if self.orphans:
            pending = list(self.orphans)
            self.orphans.clear()
            for req, last, front, is_arrival in pending:
                if is_arrival:
                    self._route_arrival(req)
                else:
                    self._requeue(req, last, front)

    # ------------------------------------------------------------------ spot ------------
    def notice(self, r) -> None:
        """Spot preemption notice for ``r``: drain, (migrate,) and lose it ``warning_s``
        later."""
        if not r.alive or not r.accepting:
            return
        spot = self.faults.spot
        pool = self.by_name[r.pool]
        pool.stats["spot_notices"] += 1
        r.accepting = False
        self._refresh()
        for ve in r.engines:
            for req, last in ve.scheduler.take_waiting():
                r.num_outstanding -= 1
                pool.stats["requeued"] += 1
                self._requeue(req, last, False)
            while ve.incoming:
                h = ve.incoming.popleft()
                r.num_outstanding -= 1
                self._place(h)
        if self.spot_mode == "migrate":
            lead = self._migrate_lead(r)
            at = max(0.0, spot.warning_s - lead)
            ev = self.env.timeout(at)
            ev.callbacks.append(lambda _e, rep=r: self._start_migration(rep))
        ev = self.env.timeout(spot.warning_s)
        ev.callbacks.append(lambda _e, rep=r: self.lose(rep, "spot"))

    def _migrate_lead(self, r) -> float:
        """Seconds needed to move a full KV cache of ``r`` over its slowest path to a
        candidate destination when nothing else uses the network."""
        cands = [t for t in self.migrate_targets if t is not r]
        if not cands:
            return 0.0
        pool = self.by_name[r.pool]
        nbytes = pool.memory.kv_capacity_tokens * pool.kv_bytes_per_token
        return max(self.topology.path(r, t).idle_time_s(nbytes) for t in cands)

    def _start_migration(self, r) -> None:
        if not r.alive:
            return
        for ve in r.engines:
            ve.control = "migrate"
            r.poke(ve)

    def control(self, r, ve, what) -> None:
        """Run a control request at a step boundary of ``ve`` (from the engine loop)."""
        if what != "migrate":
            raise ValueError(f"unknown control request {what!r}")
        sched = ve.scheduler
        stats = self.by_name[r.pool].stats
        if not r.joinable:       # static batching: no hand-offs; recompute everything
            for req, last in sched.evict_all():
                r.num_outstanding -= 1
                stats["migration_fallbacks"] += 1
                self.recover(req, last, "resume", r.pool)
            return
        for req, last in sched.take_waiting() + sched.take_swapped():
            r.num_outstanding -= 1
            stats["migration_fallbacks"] += 1
            self.recover(req, last, "resume", r.pool)
        for req, decoding in sched.running_requests():
            if decoding:
                tokens, last = sched.detach_running(req)
                self.affected.add(req.request_id)
                self.hand_off(r, ve, req, tokens, last, "migrate")
            else:
                last = sched.drop_running(req)
                r.num_outstanding -= 1
                stats["migration_fallbacks"] += 1
                self.recover(req, last, "resume", r.pool)
        if sched.finished:
            r._collect(sched)

    # ------------------------------------------------------------------ loss -------------
    def lose(self, r, cause: str, stage=None) -> None:
        """Replica ``r`` is gone now (spot: end of the warning; churn: a lost peer)."""
        if not r.alive:
            return
        now = self.env.now
        pool = self.by_name[r.pool]
        if cause == "spot":
            mode = "resume" if self.spot_mode == "migrate" else self.spot_mode
            replace = self.faults.spot.replace
        else:
            mode = self.churn_mode
            replace = self.faults.churn.replace
        evicted = r.kill(now)
        self.live.remove(r)
        pool.live.remove(r)
        self._refresh()
        pool.stats["replicas_lost"] += 1
        if replace:
            load_s = pool.weight_load_s[stage] if stage is not None else max(pool.weight_load_s)
            bill_at = now + self.faults.provisioning_s
            self.pending_up += 1
            pool.pending_bills.append(bill_at)
            ev = self.env.timeout(self.faults.provisioning_s + load_s)
            ev.callbacks.append(lambda _e, p=pool, b=bill_at: self._replacement_up(p, b))
        fallback = "migration_fallbacks" if self.spot_mode == "migrate" and cause == "spot" \
            else None
        # contexts r was sending: abandon the destination side, recompute
        for h in list(r.outbound.values()):
            self._cancel_at_dst(h)
            self._release_src(h)
            if fallback:
                pool.stats[fallback] += 1
            self.recover(h.req, h.last_token_s, mode, r.pool)
        # contexts coming to r: the sender still holds them, send them elsewhere
        for h in list(r.inbound.values()):
            self.network.abort(h.transfer)
            h.transfer = None
            del r.inbound[h.req]
            self._place(h)
        for ve in r.engines:
            incoming = list(ve.incoming)
            ready = list(ve.ready)
            ve.incoming.clear()
            ve.ready.clear()
            ve.inflight = ve.holding = 0
            ve.control = None
            for h in incoming:
                self._place(h)
            for h in ready:            # arrived here: the KV is lost with r
                self.recover(h.req, h.last_token_s, mode, r.pool)
        for req, last in evicted:
            if fallback:
                pool.stats[fallback] += 1
            self.recover(req, last, mode, r.pool)
        r.num_outstanding = 0
        if not self.pending_up:
            self._flush()          # nothing will come up: what waits for a replica fails

    def _replacement_up(self, pool, bill_at: float) -> None:
        self.pending_up -= 1
        pool.pending_bills.remove(bill_at)
        pool.stats["replicas_added"] += 1
        self.add_replica(pool, born_s=bill_at)
        self._flush()

    # ------------------------------------------------------------------ end of run -------
    def unfinished(self) -> list:
        """Every request still held when the run stops (each once)."""
        out: list = []
        for r in self.live:
            for ve in r.engines:
                # a static batch keeps requests that already ended in their slots: leave their
                # recorded counters alone and do not count them again
                sched = ve.scheduler
                ended = [(q, q.num_output_tokens, q.num_computed_tokens)
                         for q in sched.running if q.status is not None]
                got = sched.drain_unfinished()
                for q, n_out, n_comp in ended:
                    q.num_output_tokens, q.num_computed_tokens = n_out, n_comp
                out.extend(q for q in got if q.status is None)
                out.extend(h.req for h in ve.ready)
            out.extend(h.req for h in r.outbound.values())
        out.extend(o[0] for o in self.orphans)
        return out


def feed(sim: Any):
    """The arrival process of ``sim`` (a :class:`~llmsim.engine.simulation.Simulation`): each
    request of its workload is dispatched at its arrival time. (Here rather than in
    simulation.py so that the compiled build compiles it with the engine: llmsim/_compiled.py.)"""
    env: Environment = sim.env
    cluster: Cluster = sim.cluster
    limit = sim.scenario.simulation.duration_s
    bar = None
    if sim.progress:
        from tqdm import tqdm
        total = getattr(sim.scenario.workload, "num_requests", None)
        bar = tqdm(total=total, unit="req", desc="simulating", file=sys.stderr,
                   mininterval=0.5, leave=False)
    n = 0
    for item in sim.workload:
        req: Request = item
        t = req.arrival_s
        if limit is not None and t > limit:
            break
        now: float = env._now   # SimPy 4: what env.now returns
        if t > now:
            yield timeout(env, t - now)
        n += 1
        cluster.dispatch(req)
        if bar is not None and n % 1000 == 0:
            bar.update(1000)
    sim.arrived = n
    cluster.feeder_done()
    if bar is not None:
        bar.update(n % 1000)
        bar.close()
