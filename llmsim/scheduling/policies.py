"""The batching policies of DESIGN §6 on top of :class:`~llmsim.scheduling.base.Scheduler`.

- ``static``  request-level batching (FCFS): a batch is formed only when the previous one has
  fully finished; its prompts are prefilled together, then it decodes until its longest request
  is done. Requests that finish early stream their result but keep their slot (padding: they are
  still costed as decoding, as in a padded static batch); nothing joins mid-batch.
- ``orca``    iteration-level batching: at every step boundary whole prompts join next to the
  running decodes (one mixed step), within ``max_num_batched_tokens`` and ``max_num_seqs``;
  meant for contiguous KV reservation.
- ``vllm``    vLLM (v0) default: if waiting prompts fit (token budget, ``max_num_seqs``, free
  blocks above the watermark) the step is prefill-only; otherwise a decode step for every running
  request, preempting from the tail by recompute when blocks run out. With
  ``enable_chunked_prefill`` it schedules exactly like ``sarathi``.
- ``sarathi`` Sarathi-Serve stall-free batching: running decodes first (one token each), then
  chunks of partially prefilled prompts, then new prompts, filling the token budget.
"""
from __future__ import annotations

from llmsim.scheduling.base import DECODE, Scheduler


class StaticScheduler(Scheduler):
    name = "static"

    def __init__(self, kv, **kw):
        super().__init__(kv, **kw)
        self._live = 0

    def schedule(self, now):
        if self.running:
            return self._make_output([], self.nd, 0)
        prefills = []
        budget = self.max_num_batched_tokens
        used = 0
        while len(prefills) < self.max_num_seqs:
            req = self._pop_waiting_ready(now)
            if req is None:
                break
            n = req.num_tokens - req.num_computed_tokens
            if prefills and used + n > budget:
                break
            st = self._admit_if_fits(req, n, now, use_watermark=False)
            if st is None:
                break
            prefills.append((st, n))
            used += n
        self._live = len(prefills)
        return self._make_output(prefills, 0, 0)

    def _admit_if_fits(self, req, n, now, use_watermark):
        held = req.num_computed_tokens
        if not self.kv.can_allocate(req, held, held + n, use_watermark):
            return None
        self.waiting.pop()
        st = self._admit(req, now)
        self.kv.allocate_slots(req, held, held + n)
        st.scheduled = n
        return st

    def _on_decode_finished(self, st, now):
        req = st.req
        k = self.D - st.d0
        req.num_computed_tokens = st.c0 + k
        req.num_output_tokens = st.g0 + k
        self._finish(req, now)
        self._live -= 1
        if self._live == 0:
            self._end_batch()

    def _sample_after_prefill(self, st, now):
        super()._sample_after_prefill(st, now)
        if st.req.status is not None:      # finished at its first token
            self._live -= 1
            if self._live == 0:
                self._end_batch()

    def _end_batch(self):
        """The whole batch is done: release every slot (finished requests held theirs)."""
        for req, st in self.running.items():
            st.active = False
            self.kv.free(req, req.num_computed_tokens)
        self.running.clear()
        self.prefilling.clear()
        self.nd = self.n_capped = self.K = 0
        self._finish_heap.clear()
        self._phase_count = [0] * self.block_size
        self._window_heap.clear()
        self._joined.clear()


class _PromptAdmission(Scheduler):
    """Admission of whole prompts from the waiting queue (shared by orca and vllm)."""

    def _admit_whole_prompts(self, now, budget, nseq, prefills):
        use_wm = bool(self.running)
        used = 0
        while nseq < self.max_num_seqs:
            req = self._pop_waiting_ready(now)
            if req is None:
                break
            n = req.num_tokens - req.num_computed_tokens
            # a prompt over the budget (a recomputed long request) may run alone
            if used + n > budget and (prefills or self.running):
                break
            held = req.num_computed_tokens
            if not self.kv.can_allocate(req, held, held + n, use_wm):
                break
            self.waiting.pop()
            st = self._admit(req, now)
            self.kv.allocate_slots(req, held, held + n)
            st.scheduled = n
            prefills.append((st, n))
            used += n
            nseq += 1
            use_wm = True
        return prefills


class OrcaScheduler(_PromptAdmission):
    name = "orca"

    def schedule(self, now):
        npre = self._reserve_decode_blocks(now)
        nd = self.nd
        prefills = []
        if not npre:
            self._admit_whole_prompts(now, self.max_num_batched_tokens - nd,
                                      len(self.running), prefills)
        return self._make_output(prefills, nd, npre)


class SarathiScheduler(Scheduler):
    name = "sarathi"

    def __init__(self, kv, long_prefill_token_threshold=0, **kw):
        kw.setdefault("enable_chunked_prefill", True)
        super().__init__(kv, **kw)
        self.long_prefill_token_threshold = long_prefill_token_threshold

    def _chunk(self, remaining, budget):
        n = remaining if remaining < budget else budget
        t = self.long_prefill_token_threshold
        if t and n > t:
            n = t
        return n

    def schedule(self, now):
        npre = self._reserve_decode_blocks(now)
        budget = self.max_num_batched_tokens - self.nd
        prefills = []
        # 1. chunks of running, partially prefilled requests
        for req, st in list(self.prefilling.items()):
            if budget <= 0:
                break
            if not st.active:
                continue
            n = self._chunk(req.num_tokens - req.num_computed_tokens, budget)
            while not self._try_prefill_chunk(st, n, False):
                victim = next(reversed(self.running))
                vst = self.running[victim]
                self._preempt(vst, now)
                npre += 1
                if vst is st:
                    break
            if st.active:
                prefills.append((st, n))
                budget -= n
        prefills = [(s, n) for s, n in prefills if s.active]
        # 2. new requests, only if nothing was preempted this step
        if not npre:
            nseq = len(self.running)
            use_wm = bool(self.running)
            while budget > 0 and nseq < self.max_num_seqs:
                req = self._pop_waiting_ready(now)
                if req is None:
                    break
                n = self._chunk(req.num_tokens - req.num_computed_tokens, budget)
                held = req.num_computed_tokens
                if not self.kv.can_allocate(req, held, held + n, use_wm):
                    break
                self.waiting.pop()
                st = self._admit(req, now)
                self.kv.allocate_slots(req, held, held + n)
                st.scheduled = n
                prefills.append((st, n))
                budget -= n
                nseq += 1
                use_wm = True
        return self._make_output(prefills, self.nd, npre)


class VllmScheduler(_PromptAdmission):
    name = "vllm"

    def __init__(self, kv, long_prefill_token_threshold=0, **kw):
        super().__init__(kv, **kw)
        if self.enable_chunked_prefill:
            self._chunked = SarathiScheduler.schedule.__get__(self)
            self._chunk = SarathiScheduler._chunk.__get__(self)
            self.long_prefill_token_threshold = long_prefill_token_threshold

    def schedule(self, now):
        if self.enable_chunked_prefill:
            return self._chunked(now)
        if self.waiting:
            prefills = self._admit_whole_prompts(now, self.max_num_batched_tokens,
                                                 len(self.running), [])
            if prefills:
                return self._make_output(prefills, 0, 0)
        npre = self._reserve_decode_blocks(now)
        return self._make_output([], self.nd, npre)


SCHEDULERS = {"static": StaticScheduler, "orca": OrcaScheduler, "vllm": VllmScheduler,
              "sarathi": SarathiScheduler}
