"""Speculative decoding on top of any iteration-level policy (plain Python, no SimPy).

Contract. Each decode step becomes a *verify* step: for every decoding request a proposer
suggests ``k`` tokens (a draft model run ``k`` times, or n-gram prompt lookup at no GPU cost)
and the target model scores ``k + 1`` tokens at once. With a per-token acceptance probability
``α`` (independent), the expected number of tokens a verify step yields is

    E = (1 − α^(k+1)) / (1 − α)        (E = k + 1 for α = 1)

(Leviathan, Kalman, Matias, "Fast Inference from Transformers via Speculative Decoding",
ICML 2023, eq. 1). Decode progress stays implicit: a decoder that joined at decode counter
``d0`` with ``g0`` tokens has ``g0 + ⌊E·s⌋`` tokens after ``s`` verify steps, so it finishes
after ``⌈(max_tokens − g0) / E⌉`` steps (a heap event, as without speculation). The expected
value replaces the random number of accepted tokens (the mean is what throughput and mean
latencies depend on; per-step variability is not modelled). ITL: every verify step records one
gap per decoder; the other tokens of the step arrive with it (zero gaps, recorded when the
decoder leaves the group), so the sample still has one gap per token after the first.
``tokens_out`` counts a decoder's tokens when it leaves the group (finish, preemption, end of
run).

Cost of a step (DESIGN §4 pairs):
- target: each decoder is a chunk of ``n = k + 1`` tokens over its context ``c`` (Σc from the
  implicit counters: ``Σc0 + E·Σ(D − d0)``); all ``k + 1`` positions are sampled. A verify step
  never costs less than the plain decode step it replaces (the roofline times multi-token
  attention at prefill efficiency, which can undercut decode attention on the same KV bytes;
  the difference is added to ``extra_s``) — so acceptance 0 is never faster than no
  speculation;
- draft (method ``draft``): ``k`` passes of the draft model's cost model on the same GPUs, added
  to ``SchedulerOutput.extra_s``: the first pass also prefills the step's prompt chunks, each
  pass gives every decoder one token over its context (+1 per pass). ``ngram`` costs nothing.
KV: a decoder holds blocks for its context plus the ``k + 1`` slots of the step being verified;
block boundaries are per-request heap events keyed by the decode counter (O(changes) per step).
Under speculation the decode group takes ``k + 1`` budget tokens per decoder; macro-steps are
off (every step pays draft time).
"""
from __future__ import annotations

import heapq

from llmsim.cost.types import BatchAggregates
from llmsim.scheduling.base import DECODE, PREFILL


def expected_tokens_per_step(num_speculative_tokens: int, acceptance_rate: float) -> float:
    """E = (1 − α^(k+1)) / (1 − α): expected tokens one verify step yields (k + 1 at α = 1)."""
    k, a = int(num_speculative_tokens), float(acceptance_rate)
    if k < 1 or not 0.0 <= a <= 1.0:
        raise ValueError("num_speculative_tokens must be >= 1 and acceptance_rate in [0, 1]")
    if a == 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


class SpeculativeMixin:
    """Mix in before a policy class: ``class X(SpeculativeMixin, SarathiScheduler)``."""

    supports_macro = False
    fast_hand_off = False      # _track_blocks counts a joining decoder's verify slots

    def __init__(self, kv, *, num_speculative_tokens, acceptance_rate, draft_cost=None,
                 target_cost=None, **kw):
        super().__init__(kv, **kw)
        self.spec_k = int(num_speculative_tokens)
        self.spec_alpha = float(acceptance_rate)
        self.spec_E = expected_tokens_per_step(self.spec_k, self.spec_alpha)
        self.draft_cost = draft_cost
        self.target_cost = target_cost
        self._C0 = 0          # Σ c0 over uncapped decoders
        self._D0 = 0          # Σ d0 over uncapped decoders
        self._block_heap: list = []
        self.num_verify_steps = 0
        self.draft_s = 0.0

    def admission_problem(self, req):
        reason = super().admission_problem(req)
        if reason is None and self.kv.decode_grows:
            need = self.kv.tokens_needed(req) + self.spec_k
            if self.kv.blocks_for(need) > self.kv.num_blocks:
                reason = (f"needs {need} KV tokens (with {self.spec_k} speculative slots); the "
                          f"replica's KV cache holds {self.kv.capacity_tokens}")
        return reason

    # -- progress arithmetic ---------------------------------------------------------------
    def _prog(self, s: int) -> int:
        """Tokens accepted after ``s`` verify steps: ⌊E·s⌋."""
        return int(s * self.spec_E + 1e-9)

    def _steps_for(self, m: int) -> int:
        """Fewest verify steps ``s ≥ 0`` with ``⌊E·s⌋ ≥ m``."""
        if m <= 0:
            return 0
        E = self.spec_E
        s = int(m / E)
        while self._prog(s) < m:
            s += 1
        while s > 0 and self._prog(s - 1) >= m:
            s -= 1
        return s

    def _decode_slot_tokens(self) -> int:
        return self.spec_k + 1

    def _need_blocks(self, st) -> int:
        """Blocks a decoder needs at the current step (context + k + 1 slots) minus held."""
        s = self.D - st.d0
        return self.kv.blocks_for(st.c0 + self._prog(s) + self.spec_k + 1) - st.nblocks

    def _push_block_event(self, st) -> None:
        m = st.nblocks * self.block_size - st.c0 - self.spec_k
        s = self._steps_for(m)
        if s < self._steps_for(st.req.max_tokens - st.g0):
            self._push(self._block_heap, st.d0 + s, st)

    # -- decode group ---------------------------------------------------------------------
    def _add_context(self, c0: int, D: int) -> None:
        self._C0 += c0
        self._D0 += D

    def _track_blocks(self, st) -> None:
        if not st.nblocks:
            st.nblocks = self.kv.blocks_for(st.c0)
        self._push_block_event(st)

    def _accepted(self, st) -> int:
        return min(self._prog(self.D - st.d0), st.req.max_tokens - st.g0)

    def _credit(self, st) -> int:
        """Materialise a decoder's accepted tokens on its request and count them: tokens_out,
        and one zero ITL gap per token beyond the first of each verify step (the tokens of a
        step reach the client together). Returns the verify steps it took part in."""
        req = st.req
        k = self.D - st.d0
        tok = self._accepted(st)
        req.num_computed_tokens = st.c0 + tok
        req.num_output_tokens = st.g0 + tok
        self.tokens_out += tok
        if tok > k:
            self.itl.add(0.0, tok - k)
        return k

    def _leave_decode(self, st):
        k = self._credit(st)
        self.nd -= 1
        if st.capped:
            self.n_capped -= 1
        else:
            self._C0 -= st.c0
            self._D0 -= st.d0
        if k == 0:
            t = st.last_token_s
            c = self._joined[t] - 1
            if c:
                self._joined[t] = c
            else:
                del self._joined[t]
        else:
            st.last_token_s = self._last_decode_end_s
        st.phase = PREFILL

    def _held_tokens(self, st) -> int:
        if st.phase == DECODE:
            return st.c0 + self._accepted(st)
        return st.req.num_computed_tokens

    def _remove_running(self, st):
        if st.phase != DECODE:
            return super()._remove_running(st)
        st.active = False
        req = st.req
        self._leave_decode(st)
        del self.running[req]
        if self.kv.decode_grows:
            self.kv.free(req, st.nblocks * self.block_size)
        else:
            self.kv.free(req, req.num_computed_tokens)
        st.scheduled = 0

    def detach_running(self, req):
        """As the base (a decoder leaves with its KV for a hand-off); the verify slots it held
        beyond its context are released here, so it holds ``blocks_for(context)`` as the base
        contract says."""
        st = self.running[req]
        nblocks = st.nblocks
        held, last = super().detach_running(req)
        if self.kv.decode_grows:
            extra = nblocks - self.kv.blocks_for(held)
            if extra > 0:
                self.kv.free_blocks(extra)
        return held, last

    def decode_ctx_sum(self) -> int:
        nu = self.nd - self.n_capped
        s = self._C0 + int(round(self.spec_E * (nu * self.D - self._D0)))
        if self.n_capped:
            s += self.n_capped * self.window
        return s

    def _reserve_decode_blocks(self, now) -> int:
        kv = self.kv
        if not kv.decode_grows or not self.nd:
            return 0
        heap = self._block_heap
        D = self.D
        due = []
        while heap and heap[0][0] <= D:
            st = heapq.heappop(heap)[2]
            if st.active and st.phase == DECODE:
                due.append(st)
        npre = 0
        needs = [(st, self._need_blocks(st)) for st in due]
        total = sum(n for _, n in needs)
        while total > kv.num_free_blocks and self.running:
            self._preempt(self._victim(), now)
            npre += 1
            needs = [(st, n) for st, n in needs if st.active and st.phase == DECODE]
            total = sum(n for _, n in needs)
        for st, n in needs:
            kv.allocate_blocks(n)
            st.nblocks += n
            self._push_block_event(st)
        return npre

    def _advance_decodes(self, now):
        itl = self.itl
        joined = self._joined
        cont = self.nd
        if joined:
            for t, cnt in joined.items():
                itl.add(now - t, cnt)
                cont -= cnt
            joined.clear()
        if cont:
            itl.add(now - self._last_decode_end_s, cont)
        self._last_decode_end_s = now
        self.num_verify_steps += 1
        self.D = D = self.D + 1
        self._finish_due(D, now)
        if self.window is not None:
            wh = self._window_heap
            while wh and wh[0][0] <= D:
                st = heapq.heappop(wh)[2]
                if st.active and st.phase == DECODE and not st.capped:
                    st.capped = True
                    self._C0 -= st.c0
                    self._D0 -= st.d0
                    self.n_capped += 1

    # -- output ------------------------------------------------------------------------------
    def _make_output(self, prefills, num_decodes, npre):
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
        nd = num_decodes
        C = self.decode_ctx_sum() if nd else 0
        m = self.spec_k + 1
        if nd:
            agg = BatchAggregates(ps + nd, pt + nd * m, pnc + m * C, pn2 + nd * m * m, pc + C,
                                  0, 0, sampled + nd * m)
        else:
            agg = BatchAggregates(ps, pt, pnc, pn2, pc, 0, 0, sampled)
        out = self._output(prefills, nd, agg, npre)
        if out.is_empty:
            return out
        extra = 0.0
        if nd and self.target_cost is not None:
            plain = self.target_cost.step_time_s(
                BatchAggregates(ps, pt, pnc, pn2, pc, nd, C, sampled + nd))
            spec = self.target_cost.step_time_s(agg)
            if plain > spec:
                extra += plain - spec
        draft = self.draft_cost
        if draft is not None:
            t = draft.step_time_s(BatchAggregates(ps, pt, pnc, pn2, pc, nd, C, sampled + nd))
            if nd:
                for i in range(1, self.spec_k):
                    t += draft.step_time_s(BatchAggregates(0, 0, 0, 0, 0, nd, C + i * nd, nd))
            self.draft_s += t
            extra += t
        if extra:
            out.extra_s += extra
        return out

    # -- no macro-steps (supports_macro is False) ---------------------------------------------
    def plan_decode_run(self, now, t1, limit_s, pieces_of, span):
        raise NotImplementedError("speculative decoding runs one step at a time")

    def run_decode_steps(self, plan, a, m, busy_s, kv_integral):
        raise NotImplementedError("speculative decoding runs one step at a time")

    def drain_unfinished(self):
        out = []
        for req, st in list(self.running.items()):
            if st.phase == DECODE:
                self._credit(st)
            out.append(req)
        out.extend(self.waiting)
        out.extend(self.swapped)
        return out


def speculative_class(cls):
    """The speculative variant of scheduler class ``cls``."""
    return type(f"Speculative{cls.__name__}", (SpeculativeMixin, cls), {"name": cls.name})
