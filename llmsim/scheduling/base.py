"""Scheduler interface and the shared request bookkeeping (plain Python, no SimPy).

Contract (DESIGN §6). A replica's engine loop does, until it has no work::

    out = scheduler.schedule(now)              # SchedulerOutput: who runs, how many tokens
    dt  = cost_model.step_time_s(out.agg)      # batch aggregates only
    ... wait dt of simulated time ...
    scheduler.update_from_output(out, now+dt)  # append tokens, finish, free KV

Requests reach the scheduler through ``add_request``; finished and rejected requests are
collected in ``self.finished`` (drained by the engine after each update).

Decode progress is implicit: every running request that has finished its prefill ("decoder")
gets exactly one token in every step that runs decodes, so the scheduler keeps one decode counter
``D`` and, per decoder, the counter value at which it joined. Its generated tokens and context
are ``g0 + (D − d0)`` and ``c0 + (D − d0)``; the batch sum of contexts is ``K + nd·D``. Finishes
are kept in a list sorted by the ``D`` at which they happen (``_finish_list``: entries ``(key,
seq, SeqState)``, a decoder's entry removed when it leaves early), so that a macro-step plan reads
the next finishers as a slice; sliding-window crossings are a heap keyed by ``D``; KV block
boundaries (paged) are per-phase counts. A decode step costs O(1) plus O(requests whose state
changes), never a loop over the batch.

Inter-token latency is recorded exactly as a weighted sample: every decode step adds one gap per
decoding request, grouped by the time of the request's previous token (``itl.add(gap, count)``).
"""
from __future__ import annotations

from typing import Any, ClassVar, Final

import heapq
from mypy_extensions import mypyc_attr

from llmsim.cost.types import BatchAggregates
from llmsim.memory.base import KVCacheManager
from llmsim.metrics.recorder import ItlRecorder
from llmsim.scheduling.queue import make_queue
from llmsim.scheduling.runs import (DecodeRunPlan, bisect_right_int, blocks_reserved,
                                    first_entry_at)
from llmsim.workload.request import FINISHED, REJECTED, Request

PREFILL = 0
DECODE = 1
HANDED_OFF = 2   # prefill done on a replica that hands every context off (never decodes here)


class SeqState:
    """Scheduler-private state of one running request."""

    __slots__ = ("req", "phase", "d0", "c0", "g0", "capped", "active", "last_token_s",
                 "bphase", "scheduled", "nblocks", "fkey")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.phase = PREFILL
        self.d0 = 0
        self.c0 = 0
        self.g0 = 0
        self.capped = False
        self.active = True
        self.last_token_s: float | None = None
        self.bphase = 0
        self.scheduled = 0     # prefill tokens allocated for the step being scheduled
        self.nblocks = 0       # KV blocks held, where tracked per request (swap-in, speculative)
        self.fkey: tuple[int, int] | None = None       # its entry's (key, seq) in the finish list while it decodes


class SchedulerOutput:
    """One step: ``prefills`` is a list of (SeqState, n_new_tokens) chunks, ``num_decodes``
    the number of decoders that each get one token, ``agg`` the cost-model aggregates."""

    __slots__ = ("prefills", "num_decodes", "agg", "num_preempted", "extra_s")

    def __init__(self, prefills: list[tuple[SeqState, int]], num_decodes: int, agg: Any,
                 num_preempted: int = 0, extra_s: float = 0.0) -> None:
        self.prefills = prefills
        self.num_decodes = num_decodes
        self.agg = agg
        self.num_preempted = num_preempted
        self.extra_s = extra_s   # time the step pays beyond the cost model (swap, draft model)

    @property
    def is_empty(self) -> bool:
        return not self.prefills and not self.num_decodes

    @property
    def num_tokens(self) -> int:
        return self.agg.prefill_tokens + self.agg.decode_seqs


_TUPLE_NEW: Final = tuple.__new__


class NullItl(ItlRecorder):
    """ITL sink that drops samples (for tests that do not look at ITL). An ItlRecorder, so
    that the scheduler's ``itl`` is typed: compiled, its ``add`` calls are native (through an
    untyped attribute each was a generic method call, ≈ 600 instructions per decode step)."""

    def add(self, gap_s: float, count: int) -> None:
        pass

    def add_line(self, a: float, b: float, j0: int, n: int, count: int) -> None:
        pass


@mypyc_attr(allow_interpreted_subclasses=True)
class Scheduler:
    """Base class: waiting queue, running set, implicit decode progress, preemption.

    Subclasses implement ``schedule(now)``. Parameters follow vLLM: ``max_num_seqs``,
    ``max_num_batched_tokens`` (token budget of one step), ``enable_chunked_prefill``,
    ``preemption_mode`` ('recompute', or 'swap' when the KV manager has a host tier
    ``kv.host``: the victim's KV is copied to host memory, the copy time is charged to the step
    through ``SchedulerOutput.extra_s``, and the request later resumes from its KV without
    recompute; when the host tier is full the victim is recomputed instead, counted in
    ``num_swap_fallbacks``), ``scheduling_policy`` (fcfs | priority | sjf; with ``priority``
    the victim of a preemption is the running request with the largest (priority, arrival),
    otherwise the last admitted). ``sliding_window`` caps the context a decode token attends to
    (cost only; KV is still held in full).

    Prefix caching (``kv.enable_prefix_caching``): a request admitted from the waiting queue
    starts at its cache hit (``num_computed_tokens`` = hit tokens; the first admission sets
    ``Request.num_cached_tokens`` and adds to ``prefix_hit_tokens`` / ``prefix_query_tokens``,
    the hit and prompt tokens of first admissions).
    """

    name: ClassVar[str] = "base"
    supports_macro: ClassVar[bool] = True   # the engine may batch identical decode steps (see run_decode_steps)
    # macro-steps may run through finishes (a finisher leaves the batch; False for static
    # batching, whose finished requests keep their slot until the whole batch is done)
    spans_finishes: ClassVar[bool] = True
    # a prefill-role replica may skip the decode group for contexts it hands off at once
    # (False where joining the group does more than the aggregates: speculative decoding)
    fast_hand_off: ClassVar[bool] = True

    def __init__(self, kv, *, max_num_seqs=256, max_num_batched_tokens=8192,
                 enable_chunked_prefill=False, preemption_mode="recompute",
                 scheduling_policy="fcfs", sliding_window=None, max_model_len=None,
                 max_queue_len=None, request_timeout_s=None, itl=None, length_key=None) -> None:
        if max_num_batched_tokens < max_num_seqs and self.name in ("sarathi", "orca"):
            raise ValueError("max_num_batched_tokens must be >= max_num_seqs")
        self.kv: KVCacheManager = kv
        self.block_size: int = kv.block_size
        self.max_num_seqs: int = max_num_seqs
        self.max_num_batched_tokens: int = max_num_batched_tokens
        self.enable_chunked_prefill = enable_chunked_prefill
        self.preemption_mode = preemption_mode
        self.window: int | None = sliding_window
        # set by a prefill-role replica (when fast_hand_off): contexts whose prefill
        # completes skip the decode group, as the replica detaches them at once
        self.hands_off = False
        self.max_model_len = max_model_len
        self.max_queue_len = max_queue_len
        self.request_timeout_s = request_timeout_s
        self.itl: ItlRecorder = itl or NullItl()
        self.waiting: Any = make_queue(scheduling_policy, length_key)
        self.swapped: Any = make_queue(scheduling_policy, length_key)   # KV in the host tier
        self._swap_last_token: dict = {}  # swapped request -> time of its last token (or None)
        self._by_priority = scheduling_policy == "priority"
        self._pending_extra_s = 0.0      # swap time the next non-empty step pays
        self.running: dict[Request, SeqState] = {}          # Request -> SeqState, admission order
        self.prefilling: dict[Request, SeqState] = {}       # subset of running still in prefill, admission order
        self.finished: list[Request] = []         # finished/rejected since last drain
        # implicit decode state
        self.D = 0
        self.nd = 0
        self.n_capped = 0
        self.K = 0
        self._finish_list: list[tuple[int, int, SeqState]] = []
        self._phase_count: list[int] = [0] * kv.block_size   # decoders per block-boundary phase
        self._window_heap: list[tuple[int, int, SeqState]] = []
        self._hseq = 0
        self._joined: dict[float, int] = {}          # last_token_s -> count, decoders not yet decoded
        self._padding = 0                # finished decoders still costed in the batch (static)
        self._last_decode_end_s = 0.0
        self._decode_reserved = 0        # 1 while decoders hold the slot of the step scheduled
        # counters
        self.num_preemptions = 0
        self.tokens_out = 0
        self.num_finished = 0
        self.num_swapped_out = 0
        self.num_swapped_in = 0
        self.num_swap_fallbacks = 0
        self.swap_s = 0.0
        self.prefix_hit_tokens = 0
        self.prefix_query_tokens = 0

    # ------------------------------------------------------------------ admission ------
    def admission_problem(self, req) -> str | None:
        """Why ``req`` can never be served by this replica (None if it can)."""
        total = req.num_prompt_tokens + req.max_tokens
        if self.max_model_len is not None and total > self.max_model_len:
            return (f"prompt + output = {total} tokens exceeds the model's context length "
                    f"{self.max_model_len}")
        need = self.kv.tokens_needed(req)
        if self.kv.blocks_for(need) > self.kv.num_blocks:
            return (f"needs {need} KV tokens; the replica's KV cache holds "
                    f"{self.kv.capacity_tokens}")
        if not self.enable_chunked_prefill and req.num_prompt_tokens > self.max_num_batched_tokens:
            return (f"prompt of {req.num_prompt_tokens} tokens exceeds max_num_batched_tokens "
                    f"{self.max_num_batched_tokens} with chunked prefill off")
        return None

    def add_request(self, req: Request, now: float) -> bool:
        """Queue a new request. Returns False (and records it rejected) if it can never run or
        the admission limit is reached."""
        reason = self.admission_problem(req)
        if reason is None and self.max_queue_len is not None and \
                len(self.waiting) >= self.max_queue_len:
            reason = f"waiting queue full (max_queue_len={self.max_queue_len})"
        if reason is not None:
            self._reject(req, now, reason)
            return False
        self.waiting.push(req)
        return True

    def _reject(self, req: Request, now: float, reason: str) -> None:
        req.status = REJECTED
        req.reason = reason
        req.finish_s = now
        self.finished.append(req)

    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting) or bool(self.swapped)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        """Requests queued: waiting to start (or to be recomputed) and swapped out."""
        return len(self.waiting) + len(self.swapped)

    def _pop_waiting_ready(self, now: float) -> Request | None:
        """Next waiting request (peek) after dropping timed-out ones, or None."""
        w = self.waiting
        while w:
            req = w.peek()
            if self.request_timeout_s is not None and req.num_output_tokens == 0 and \
                    now - req.arrival_s > self.request_timeout_s:
                w.pop()
                self._reject(req, now, f"timed out after waiting more than "
                                       f"{self.request_timeout_s} s")
                continue
            return req
        return None

    # ------------------------------------------------------------------ decode state ---
    def _push(self, heap: list[tuple[int, int, SeqState]], key: int, st: SeqState) -> None:
        self._hseq += 1
        heapq.heappush(heap, (key, self._hseq, st))

    def _join_decode(self, st: SeqState, now: float, last_token_s: float | None = None) -> None:
        """Move a request whose prefill just completed (and sampled) into the decode group
        (``last_token_s``: time of its last token when it is not ``now``, for a request swapped
        back in)."""
        req = st.req
        del self.prefilling[req]
        st.phase = DECODE
        st.d0 = D = self.D
        st.c0 = c0 = req.num_computed_tokens
        st.g0 = req.num_output_tokens
        if last_token_s is not None:
            now = last_token_s
        st.last_token_s = now
        self.nd += 1
        w = self.window
        if w is not None and c0 >= w:
            st.capped = True
            self.n_capped += 1
        else:
            st.capped = False
            self._add_context(c0, D)
            if w is not None:
                self._push(self._window_heap, D + self._steps_for(w - c0), st)
        self._hseq += 1
        st.fkey = key = (D + self._steps_for(req.max_tokens - st.g0), self._hseq)
        fl = self._finish_list
        if not fl or key[0] >= fl[-1][0]:      # seq grows: it goes last
            fl.append((key[0], key[1], st))
        else:
            fl.insert(first_entry_at(fl, key[0], key[1]), (key[0], key[1], st))
        if self.kv.decode_grows:
            self._track_blocks(st)
        self._joined[now] = self._joined.get(now, 0) + 1

    # hooks of _join_decode that a policy with another decode rate overrides (speculative)
    def _steps_for(self, num_tokens: int) -> int:
        """Decode steps a decoder needs to produce ``num_tokens`` more tokens (one per step)."""
        return num_tokens

    def _add_context(self, c0: int, D: int) -> None:
        """Add an uncapped decoder joining at counter D with context c0 to the Σ-context sums."""
        self.K += c0 - D

    def _track_blocks(self, st: SeqState) -> None:
        """Register a new decoder's KV block boundaries (paged KV): by phase, see
        :meth:`_reserve_decode_blocks`."""
        st.bphase = b = (st.d0 + (-st.c0) % self.block_size) % self.block_size
        self._phase_count[b] += 1

    def _leave_decode(self, st: SeqState) -> None:
        """Remove a decoder from the aggregates and materialise its counters on the request."""
        req = st.req
        k = self.D - st.d0
        req.num_computed_tokens = st.c0 + k
        req.num_output_tokens = st.g0 + k
        self.nd -= 1
        key = st.fkey
        if key is not None:        # leaves before its finish: drop its finish entry
            st.fkey = None
            fl = self._finish_list
            i = first_entry_at(fl, key[0], key[1])
            if i < len(fl) and fl[i][1] == key[1]:
                del fl[i]
        if self.kv.decode_grows:
            self._phase_count[st.bphase] -= 1
        if st.capped:
            self.n_capped -= 1
        else:
            self.K -= st.c0 - st.d0
        if k == 0:  # joined since the last decode step: still in the joined group
            t: Any = st.last_token_s
            c = self._joined[t] - 1
            if c:
                self._joined[t] = c
            else:
                del self._joined[t]
        else:
            st.last_token_s = self._last_decode_end_s
        st.phase = PREFILL

    def decode_ctx_sum(self) -> int:
        D = self.D
        s = self.K + (self.nd - self.n_capped) * D
        if self.n_capped:
            s += self.n_capped * self.window  # type: ignore[operator]  # set when capped
        return s

    def _reserve_decode_blocks(self, now: float) -> int:
        """Allocate the blocks decoders need this step, preempting from the tail of the running
        set until they fit. Returns the number of preemptions.

        A decoder holding ``c`` KV tokens needs a new block exactly when ``c % block_size == 0``;
        since ``c`` grows by one per decode step, that happens when ``D ≡ phase (mod
        block_size)`` for a phase fixed at join time. ``_phase_count[p]`` counts decoders per
        phase, so this step's need is one lookup, not a loop over the batch."""
        if not self.kv.decode_grows or not self.nd:
            return 0
        bs = self.block_size
        p = self.D % bs
        need = self._phase_count[p]
        npre = 0
        kv = self.kv
        while need > kv.num_free_blocks and self.running:
            self._preempt(self._victim(), now)
            npre += 1
            need = self._phase_count[p]
        kv.allocate_blocks(need)
        self._decode_reserved = 1
        return npre

    # ------------------------------------------------------------------ state changes --
    def _held_tokens(self, st: SeqState) -> int:
        if st.phase == DECODE:
            return st.c0 + (self.D - st.d0)
        return st.req.num_computed_tokens

    def _remove_running(self, st: SeqState) -> None:
        st.active = False
        req = st.req
        held = st.scheduled
        if st.phase == DECODE:
            self._leave_decode(st)
            held = self._decode_reserved
        else:
            del self.prefilling[req]
        del self.running[req]
        self.kv.free(req, req.num_computed_tokens + held)
        st.scheduled = 0

    def _victim(self) -> SeqState:
        """SeqState to preempt: the last admitted, or with the priority policy the running
        request with the largest (priority, arrival) (the last admitted among ties)."""
        if self._by_priority:
            return max(reversed(self.running.values()),
                       key=lambda s: (s.req.priority, s.req.arrival_s))
        return self.running[next(reversed(self.running))]

    def _preempt(self, st: SeqState, now: float) -> None:
        """Preempt by swap (``preemption_mode`` 'swap' and room in the host tier) or by
        recompute: drop the KV, back to the head of the waiting queue; the next prefill
        recomputes prompt + generated tokens."""
        if self.preemption_mode == "swap" and self._swap_out(st):
            return
        req = st.req
        self._remove_running(st)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        if st.last_token_s is not None:
            req.sched = st.last_token_s  # time of its last token, for the ITL gap on resume
        self.num_preemptions += 1
        self.waiting.push_front(req)

    # ------------------------------------------------------------------ swap -------------
    def _swap_out(self, st: SeqState) -> bool:
        """Copy the victim's computed KV to the host tier and free its GPU blocks; False (and
        nothing changed) when there is no host tier, nothing to copy, or no room."""
        host = self.kv.host
        if host is None or (st.phase != DECODE and not self.enable_chunked_prefill):
            return False
        nblocks = self.kv.blocks_for(self._held_tokens(st))
        if nblocks == 0:
            return False
        if not host.can_swap_out(nblocks):
            self.num_swap_fallbacks += 1
            return False
        req = st.req
        self._remove_running(st)
        t = host.swap_out(req, nblocks)
        self._pending_extra_s += t
        self.swap_s += t
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.num_swapped_out += 1
        self._swap_last_token[req] = st.last_token_s
        self.swapped.push_front(req)
        return True

    def _swap_in(self, now: float, use_watermark: bool = True) -> int:
        """Bring swapped requests back (queue order) while they fit in ``max_num_seqs`` and the
        free blocks; a decoder rejoins the decode group at once (its slot for this step
        included), a request swapped mid-prefill continues with its next chunk. Returns the
        number swapped in."""
        kv = self.kv
        sw = self.swapped
        n = 0
        while sw and len(self.running) < self.max_num_seqs:
            req = sw.peek()
            held = req.num_computed_tokens
            decoding = req.num_output_tokens > 0 and held >= req.num_tokens - 1
            after = held + (self._decode_slot_tokens() if decoding and kv.decode_grows else 0)
            if not kv.can_allocate(req, 0, after, use_watermark):
                break
            sw.pop()
            kv.allocate_slots(req, 0, after)
            t = kv.host.swap_in(req)
            self._pending_extra_s += t
            self.swap_s += t
            self.num_swapped_in += 1
            last = self._swap_last_token.pop(req)
            if last is None and req.sched is not None:   # swapped while recomputing
                last = req.sched
                req.sched = None
            st = SeqState(req)
            self.running[req] = st
            self.prefilling[req] = st
            if decoding:
                st.nblocks = kv.blocks_for(after)
                self._join_decode(st, now, last_token_s=last)
                if kv.decode_grows:
                    self._decode_reserved = 1
            elif last is not None:
                req.sched = last
            n += 1
        return n

    def _decode_slot_tokens(self) -> int:
        """KV slots a decoder fills in one step (1; k + 1 under speculative decoding)."""
        return 1

    # ------------------------------------------------------------------ prefix hits ------
    def _lookup_prefix(self, req: Request) -> int:
        """Prefix-cache hit tokens for a waiting request (0 without prefix caching)."""
        if req.num_computed_tokens or not self.kv.enable_prefix_caching:
            return 0
        return self.kv.get_computed_blocks(req)

    def _admit_waiting(self, req: Request, hit: int, n: int, now: float) -> SeqState:
        """Pop ``req`` (the head of the waiting queue), start it at its prefix hit of ``hit``
        tokens and allocate a first chunk of ``n`` tokens (the caller checked
        ``kv.can_allocate(req, hit, hit + n)``)."""
        self.waiting.pop()
        if req.first_scheduled_s is None and self.kv.enable_prefix_caching:
            req.num_cached_tokens = hit
            self.prefix_hit_tokens += hit
            self.prefix_query_tokens += req.num_prompt_tokens
        st = self._admit(req, now)
        held = req.num_computed_tokens      # 0: waiting requests hold no KV
        if hit:
            held = req.num_computed_tokens = hit
        self.kv.allocate_slots(req, held, held + n)
        st.scheduled = n
        return st

    def _finish(self, req: Request, now: float) -> None:
        req.status = FINISHED
        req.finish_s = now
        self.num_finished += 1
        self.finished.append(req)

    # ------------------------------------------------------------------ prefill admission
    def _admit(self, req: Request, now: float) -> SeqState:
        st = SeqState(req)
        self.running[req] = st
        self.prefilling[req] = st
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now
        return st

    def _try_prefill_chunk(self, st: SeqState, n: int, use_watermark: bool) -> bool:
        req = st.req
        held = req.num_computed_tokens
        if not self.kv.can_allocate(req, held, held + n, use_watermark):
            return False
        if self.kv.allocate_slots(req, held, held + n):
            st.scheduled = n
            return True
        return False

    def _make_output(self, prefills: list[tuple[SeqState, int]], num_decodes: int,
                     npre: int) -> SchedulerOutput:
        """Build the SchedulerOutput and its aggregates from explicit prefill chunks and the
        implicit decode group."""
        ps = pt = pnc = pn2 = pc = sampled = 0
        w = self.window
        for st, n in prefills:
            req = st.req
            c = req.num_computed_tokens
            if w is not None and c > w:
                c = w
            ps += 1
            pt += n
            pnc += n * c
            pn2 += n * n
            pc += c
            if req.num_computed_tokens + n >= req.num_tokens:
                sampled += 1
        # the NamedTuple made by tuple.__new__ (the same object its constructor makes): its
        # generated __new__ is a Python function, ≈ 2,900 instructions per call from compiled
        # code against ≈ 800 (one call per scheduled step)
        if num_decodes:
            agg = _TUPLE_NEW(BatchAggregates, (ps, pt, pnc, pn2, pc, num_decodes,
                                               self.decode_ctx_sum(), sampled + num_decodes))
        else:
            agg = _TUPLE_NEW(BatchAggregates, (ps, pt, pnc, pn2, pc, 0, 0, sampled))
        return self._output(prefills, num_decodes, agg, npre)

    def _output(self, prefills: list[tuple[SeqState, int]], num_decodes: int, agg: Any,
                npre: int) -> SchedulerOutput:
        """The SchedulerOutput, charged with the pending host-transfer time (swap, prefix
        loads) unless it is empty (then the time waits for the next step)."""
        out = SchedulerOutput(prefills, num_decodes, agg, npre)
        if prefills or num_decodes:
            kv = self.kv
            extra = self._pending_extra_s + kv.pending_transfer_s
            if extra:
                out.extra_s = extra
                self._pending_extra_s = 0.0
                kv.pending_transfer_s = 0.0
        return out

    # ------------------------------------------------------------------ update ---------
    def update_from_output(self, out: SchedulerOutput, now: float) -> None:
        """Apply a completed step at time ``now`` (its end)."""
        self._decode_reserved = 0
        if out.num_decodes:
            self._advance_decodes(now)
        for st, n in out.prefills:
            if not st.active:
                continue
            req = st.req
            st.scheduled = 0
            req.num_computed_tokens += n
            if req.num_computed_tokens >= req.num_tokens:
                self._sample_after_prefill(st, now)

    def _advance_decodes(self, now: float) -> None:
        itl = self.itl
        joined = self._joined
        live = self.nd - self._padding
        cont = live
        if joined:
            for t, cnt in joined.items():
                itl.add(now - t, cnt)
                cont -= cnt
            joined.clear()
        if cont:
            itl.add(now - self._last_decode_end_s, cont)
        self._last_decode_end_s = now
        self.tokens_out += live
        self.D = D = self.D + 1
        fl = self._finish_list
        if fl and fl[0][0] <= D:
            self._finish_due(D, now)
        if self.window is not None:
            wh = self._window_heap
            while wh and wh[0][0] <= D:
                _, _, st = heapq.heappop(wh)
                if st.active and st.phase == DECODE and not st.capped:
                    st.capped = True
                    self.K -= st.c0 - st.d0
                    self.n_capped += 1

    def _finish_due(self, D: int, now: float) -> None:
        """Finish the decoders whose finish-list key is ``D`` or less (the decode counter
        just reached ``D``)."""
        fl = self._finish_list
        while fl and fl[0][0] <= D:
            st = fl.pop(0)[2]
            st.fkey = None
            if st.active and st.phase == DECODE:
                self._on_decode_finished(st, now)

    # ------------------------------------------------------------------ macro-steps ----
    def plan_decode_run(self, now: float, t1: float, limit_s: float, pieces_of: Any,
                        span: bool) -> DecodeRunPlan:
        """An exact macro-step starting with the step just scheduled (from ``now`` to
        ``t1``); see :class:`~llmsim.scheduling.runs.DecodeRunPlan` (the caller extends it)."""
        return DecodeRunPlan(self, now, t1, limit_s, pieces_of, span)

    def run_decode_steps(self, plan: DecodeRunPlan, a: int, m: int, busy_s: float,
                         kv_integral: float) -> tuple[float, float]:
        """Steps ``a+1 .. m`` of a planned macro-step ``plan`` (:meth:`plan_decode_run`),
        each as one ``update_from_output`` (ITL, tokens, finishes at the step's end) followed
        by the ``schedule`` of the next decode-only step (its blocks reserved), on a state that
        has applied steps ``1 .. a`` and scheduled step ``a + 1``. ``plan.fin_steps`` (sorted)
        are the steps after which some request finishes. Also returns the replica's busy time
        and KV-usage integral with each step added when it starts, as single stepping accounts
        them: ``(busy_s, kv_integral)``.

        Work is per *segment*, not per step, except for the KV-usage integral (a machine loop
        over the plan's lines): step 1 (it records the ITL of decoders that joined before it)
        and each step in ``fin_steps`` go through ``_advance_decodes``; the steps between
        them, with an unchanged batch, are applied at once (their ITL gaps are the step
        durations, ``nd`` tokens each: one :meth:`ItlRecorder.add_line` per plan segment)."""
        if m <= a:
            return busy_s, kv_integral
        fin_steps = plan.fin_steps
        kv = self.kv
        grows = kv.decode_grows
        pc = self._phase_count
        bs = self.block_size
        nb = kv.num_blocks
        itl = self.itl
        seg_i = plan.seg_i
        seg_a = plan.seg_a
        seg_b = plan.seg_b
        n_seg = len(seg_i)
        t_a = plan.end(a)
        u = nb - kv.num_free_blocks      # blocks in use during the step being applied
        integ = 0.0                      # Σ u · d over the steps applied (÷ nb at the end)
        D = self.D
        fi = bisect_right_int(fin_steps, a, 0)
        nf = len(fin_steps)
        i = a + 1
        while i <= m:
            nxt = fin_steps[fi] if fi < nf else m + 1
            if i == 1 or i == nxt:
                # the batch changes after this step (joined group recorded, finishers leave)
                integ += u * plan.dur(i)
                kv.num_free_blocks = nb - u
                self.D = D
                if i > a + 1:
                    self._last_decode_end_s = plan.end(i - 1)
                self._decode_reserved = 0
                self._advance_decodes(plan.end(i))
                D = self.D
                u = nb - kv.num_free_blocks
                if grows and self.nd:
                    u += pc[D % bs]
                    self._decode_reserved = 1
                if i == nxt:
                    fi += 1
                i += 1
                continue
            y = nxt - 1 if nxt <= m else m       # steps i .. y keep the batch unchanged
            live = self.nd - self._padding
            n = y - i + 1
            if live:
                self.tokens_out += live * n
            # the integral, as single stepping sums it: step by step (mode 1, short runs),
            # the products summed first from 0.0 and then added (mode 2), or u times the
            # durations summed from 0.0 (mode 0, no block growth: the builtin sum's order)
            if grows and self.nd:
                mode = 1 if n <= 8 else 2
            else:
                mode = 0
            r = (D + 1) % bs
            acc = 0.0
            uj = u
            k = r
            s = plan.segment_of(i)
            p = i
            while p <= y:
                i0 = seg_i[s]
                e = seg_i[s + 1] - 1 if s + 1 < n_seg else y
                if e > y:
                    e = y
                sa = seg_a[s]
                sb = seg_b[s]
                if live:
                    if e - p < 2:
                        # one or two gaps: single entries (a line's record costs more)
                        for j in range(p - i0, e - i0 + 1):
                            itl.add(sa + sb * j, live)
                    else:
                        itl.add_line(sa, sb, p - i0, e - p + 1, live)
                for j in range(p - i0, e - i0 + 1):
                    d = sa + sb * j
                    if mode == 0:
                        acc += d
                    elif mode == 1:
                        integ += u * d
                        D += 1
                        u += pc[D % bs]
                    else:
                        acc += uj * d
                        uj += pc[k]
                        k += 1
                        if k == bs:
                            k = 0
                p = e + 1
                s += 1
            if mode == 0:
                integ += u * acc
                D += n
            elif mode == 2:
                integ += acc
                u += blocks_reserved(pc, r, n)
                D += n
            if mode:
                self._decode_reserved = 1
            i = y + 1
        kv.num_free_blocks = nb - u
        self.D = D
        t_m = plan.end(m)
        self._last_decode_end_s = t_m
        return busy_s + (t_m - t_a), kv_integral + integ / nb

    def _on_decode_finished(self, st: SeqState, now: float) -> None:
        self._remove_running(st)
        self._finish(st.req, now)

    def _sample_after_prefill(self, st: SeqState, now: float) -> None:
        """The prefill reached the last known token: one token is sampled."""
        req = st.req
        req.num_output_tokens += 1
        self.tokens_out += 1
        if req.first_token_s is None:
            req.first_token_s = now
        elif req.sched is not None:  # resumed after preemption: the gap since its last token
            self.itl.add(now - req.sched, 1)
            req.sched = None
        if req.num_output_tokens >= req.max_tokens:
            st.active = False
            del self.running[req]
            del self.prefilling[req]
            self.kv.free(req, req.num_computed_tokens)
            self._finish(req, now)
        elif self.hands_off:
            # the prefill role detaches it at once (just_prefilled, detach_running): joining
            # the decode group and leaving it in the same instant changes nothing
            st.phase = HANDED_OFF
            st.last_token_s = now
        else:
            self._join_decode(st, now)

    # ------------------------------------------------------------------ end of run -----
    def drain_unfinished(self):
        """Materialise counters of every request still queued or running (end of a run)."""
        out = []
        for req, st in list(self.running.items()):
            if st.phase == DECODE:
                k = self.D - st.d0
                req.num_computed_tokens = st.c0 + k
                req.num_output_tokens = st.g0 + k
            out.append(req)
        out.extend(self.waiting)
        out.extend(self.swapped)
        return out

    def schedule(self, now: float) -> SchedulerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- cluster hooks (issue 7) ---------------------------------------------------------
    # Used by the engine's cluster layer (llmsim/engine/cluster.py) for disaggregated
    # prefill/decode hand-offs, KV migration and lost replicas. The engine calls them only at
    # step boundaries (after ``update_from_output`` and before the next ``schedule``), except
    # ``add_recovered``, ``take_waiting``, ``take_swapped`` and ``evict_all``, which are valid
    # at any time (they touch only queues, or abandon the step in flight).

    def detach_running(self, req):
        """Take a running *decoder* out of this scheduler keeping its KV blocks allocated (a
        disaggregated hand-off right after its prefill, or a KV migration). Its counters are
        materialised on ``req``. Returns ``(num_kv_tokens_held, last_token_s)``; the caller
        frees the blocks later with :meth:`release_kv`."""
        st = self.running[req]
        if st.phase == HANDED_OFF:       # never joined the decode group (hands_off)
            del self.prefilling[req]
        elif st.phase != DECODE:
            raise ValueError(f"{req!r} is still in prefill; only decoders can be detached")
        else:
            self._leave_decode(st)
        del self.running[req]
        st.active = False
        st.scheduled = 0
        return req.num_computed_tokens, st.last_token_s

    def release_kv(self, req: Request, num_kv_tokens: int) -> None:
        """Free the KV blocks of a request detached with :meth:`detach_running` (or reserved
        with :meth:`reserve_prefilled` whose transfer was abandoned)."""
        self.kv.free(req, num_kv_tokens)

    def reserve_prefilled(self, req: Request, num_kv_tokens: int, num_pending: int = 0) -> bool:
        """Reserve room for a request whose context (``num_kv_tokens`` KV tokens) was computed
        elsewhere and is about to be copied here: a sequence slot (``num_pending`` counts slots
        already promised to other incoming requests) and the KV blocks (admission watermark
        applies). False leaves the state unchanged: the sender keeps the KV and retries later
        (backpressure)."""
        if len(self.running) + num_pending >= self.max_num_seqs:
            return False
        if not self.kv.can_allocate(req, 0, num_kv_tokens, True):
            return False
        return self.kv.allocate_slots(req, 0, num_kv_tokens)

    def join_prefilled(self, req: Request, last_token_s: float) -> None:
        """The context reserved with :meth:`reserve_prefilled` has arrived: ``req`` joins the
        decode group at once (no prefill here). Its next token's inter-token gap counts from
        ``last_token_s`` (the token sampled on the sending replica), so the transfer delays
        the next token, not the first."""
        st = SeqState(req)
        self.running[req] = st
        self.prefilling[req] = st
        self._join_decode(st, last_token_s)

    def drop_running(self, req):
        """Remove a running request and free its KV; its context will be recomputed elsewhere
        (``num_computed_tokens`` becomes 0). Returns the time of its last token (None when it
        has produced none)."""
        st = self.running[req]
        was_decoding = st.phase == DECODE
        self._remove_running(st)
        last = st.last_token_s if was_decoding else req.sched
        req.num_computed_tokens = 0
        req.sched = None
        return last

    def take_waiting(self) -> list:
        """Remove and return every request of the waiting queue (queue order) with the time of
        its last token: ``[(req, last_token_s or None)]``. They hold no KV here."""
        out = []
        w = self.waiting
        while w:
            req = w.pop()
            out.append((req, req.sched))
            req.sched = None
        return out

    def add_recovered(self, req, last_token_s, front: bool) -> None:
        """Queue a request whose KV was lost elsewhere (its context, prompt + tokens generated
        so far, is recomputed here): at the head of the waiting queue when ``front`` (like a
        preempted request), else at the tail. ``last_token_s`` (None if it has produced no
        token) makes the inter-token gap of its next token count from its last one."""
        req.num_computed_tokens = 0
        req.sched = last_token_s if req.num_output_tokens else None
        if front:
            self.waiting.push_front(req)
        else:
            self.waiting.push(req)

    def just_prefilled(self, out) -> list:
        """Requests of the step ``out`` (already applied) whose prefill completed and that
        joined the decode group, or skipped it (``hands_off``): their first token of this
        prefill was sampled."""
        return [st.req for st, _n in out.prefills if st.active and st.phase != PREFILL]

    def running_requests(self) -> list:
        """``[(req, is_decoding)]`` of the running set, admission order (requests that already
        ended but keep a static batch slot are left out)."""
        return [(req, st.phase == DECODE) for req, st in self.running.items()
                if req.status is None]

    def take_swapped(self) -> list:
        """Remove every swapped-out request, dropping its host copy (its context will be
        recomputed elsewhere): ``[(req, last_token_s or None)]``."""
        out = []
        host = self.kv.host
        sw = self.swapped
        while sw:
            req = sw.pop()
            if host is not None and req in host.swapped:
                host.swap_in(req)           # releases the host blocks
            last = self._swap_last_token.pop(req, None)
            if last is None:
                last = req.sched
            req.num_computed_tokens = 0
            req.sched = None
            out.append((req, last))
        return out

    def evict_all(self) -> list:
        """The replica is lost: remove every running, swapped and waiting request and free all
        their KV (a step in flight is abandoned). Returns ``[(req, last_token_s or None)]``:
        running requests in admission order, then swapped, then waiting ones; counters are
        materialised and ``num_computed_tokens`` is 0. Requests that already ended (a static
        batch keeps finished requests in their slot) are not returned."""
        out = []
        for req, st in list(self.running.items()):
            if req.status is not None:      # ended: keep its recorded counters untouched
                del self.running[req]
                self.prefilling.pop(req, None)
                st.active = False
                self.kv.free(req, max(1, req.num_computed_tokens))
                continue
            out.append((req, self.drop_running(req)))
        self.nd = self.n_capped = self.K = 0
        self._finish_list.clear()
        self._window_heap.clear()
        self._phase_count = [0] * self.block_size
        self._joined.clear()
        out.extend(self.take_swapped())
        out.extend(self.take_waiting())
        self._decode_reserved = 0
        self._pending_extra_s = 0.0
        if hasattr(self, "_live"):          # static batching: the batch is gone
            self._live = 0
        return out
