"""The batching policies of DESIGN §6 on top of :class:`~llmsim.scheduling.base.Scheduler`.

- ``static``  request-level batching (FCFS): a batch is formed only when the previous one has
  fully finished; its prompts are prefilled together, then it decodes until its longest request
  is done. Requests that finish early stream their result but keep their slot (padding: they are
  still costed as decoding, as in a padded static batch); nothing joins mid-batch.
- ``orca``    iteration-level batching: at every step boundary whole prompts join next to the
  running decodes (one mixed step), within ``max_num_batched_tokens`` and ``max_num_seqs``;
  meant for contiguous KV reservation.
- ``vllm``    vLLM v0 default: if waiting prompts fit (token budget, ``max_num_seqs``, free
  blocks above the watermark) and nothing is swapped out, the step is prefill-only; otherwise a
  decode step for every running request (preempting when blocks run out), then swapped requests
  come back if nothing was preempted. With ``enable_chunked_prefill`` it schedules with the
  unified token budget below (vLLM v0's chunked-prefill scheduler).
- ``vllm_v1`` vLLM v1's unified token-budget scheduler (:class:`TokenBudgetScheduler`):
  chunked prefill on by default; with it off, whole prompts join next to the decodes (no
  prefill-only steps).
- ``sarathi`` Sarathi-Serve stall-free batching: the same token-budget step, chunked by
  definition, with a small default budget (2,048 tokens) so that decodes are never stalled
  behind a long prompt.

Every policy that admits from the waiting queue uses prefix-cache hits when the KV manager has
prefix caching (:meth:`~llmsim.scheduling.base.Scheduler._admit_waiting`).
"""
from __future__ import annotations

from typing import ClassVar

from mypy_extensions import mypyc_attr
from llmsim.scheduling.base import DECODE, Scheduler, SchedulerOutput, SeqState


@mypyc_attr(allow_interpreted_subclasses=True)
class StaticScheduler(Scheduler):
    name: ClassVar[str] = "static"
    spans_finishes: ClassVar[bool] = False

    def __init__(self, kv, **kw) -> None:
        Scheduler.__init__(self, kv, **kw)   # not super(): mypyc 2.4 passes **kw wrongly through it
        self._live = 0

    def schedule(self, now: float) -> SchedulerOutput:
        if self.running:
            npre = self._reserve_decode_blocks(now)
            if npre:   # pragma: no cover - admission reserved the batch's whole growth
                raise AssertionError("static batch ran out of KV blocks")
            return self._make_output([], self.nd, 0)
        prefills: list[tuple[SeqState, int]] = []
        budget = self.max_num_batched_tokens
        used = 0
        kv = self.kv
        grows = kv.decode_grows
        longest = 0          # paged: every member grows to prompt + the batch's longest output
        while len(prefills) < self.max_num_seqs:
            req = self._pop_waiting_ready(now)
            if req is None:
                break
            hit = self._lookup_prefix(req)
            n = req.num_tokens - req.num_computed_tokens - hit
            if prefills and used + n > budget:
                break
            if grows:
                longest2 = max(longest, req.max_tokens)
                need = sum(kv.blocks_for(st.req.num_prompt_tokens + longest2)
                           - kv.blocks_for(st.req.num_prompt_tokens) for st, _ in prefills)
                need += kv.blocks_for(req.num_prompt_tokens + longest2)   # hits: upper bound
                if need > kv.num_free_blocks:
                    break
            elif not kv.can_allocate(req, hit, hit + n, False):
                break
            prefills.append((self._admit_waiting(req, hit, n, now), n))
            used += n
            if grows:
                longest = longest2
        self._live = len(prefills)
        return self._make_output(prefills, 0, 0)

    def _on_decode_finished(self, st: SeqState, now: float) -> None:
        req = st.req
        k = self.D - st.d0
        req.num_computed_tokens = st.c0 + k
        req.num_output_tokens = st.g0 + k
        self._finish(req, now)
        self._live -= 1
        self._padding += 1     # keeps its slot (costed) but delivers no more tokens
        if self._live == 0:
            self._end_batch()

    def _sample_after_prefill(self, st: SeqState, now: float) -> None:
        super()._sample_after_prefill(st, now)
        if st.req.status is not None:      # finished at its first token
            self._live -= 1
            if self._live == 0:
                self._end_batch()

    def _end_batch(self) -> None:
        """The whole batch is done: release every slot (finished requests held theirs and,
        with paged KV, kept growing as padding until now)."""
        for req, st in self.running.items():
            st.active = False
            held = st.c0 + (self.D - st.d0) if st.phase == DECODE else req.num_computed_tokens
            self.kv.free(req, held)
        self.running.clear()
        self.prefilling.clear()
        self.nd = self.n_capped = self.K = self._padding = 0
        self._finish_list.clear()
        self._phase_count = [0] * self.block_size
        self._window_heap.clear()
        self._joined.clear()


def _admit_whole_prompts(self: Scheduler, now: float, budget: int, nseq: int,
                         prefills: list[tuple[SeqState, int]]) -> list[tuple[SeqState, int]]:
    """Admission of whole prompts from the waiting queue (shared by orca and vllm; a function,
    not a mixin: a mypyc native class takes one base)."""
    use_wm = bool(self.running)
    used = 0
    while nseq < self.max_num_seqs and self.waiting:
        req = self._pop_waiting_ready(now)
        if req is None:
            break
        hit = self._lookup_prefix(req)
        n = req.num_tokens - req.num_computed_tokens - hit
        # a prompt over the budget (a recomputed long request) may run alone
        if used + n > budget and (prefills or self.running):
            break
        if not self.kv.can_allocate(req, hit, hit + n, use_wm):
            break
        prefills.append((self._admit_waiting(req, hit, n, now), n))
        used += n
        nseq += 1
        use_wm = True
    return prefills


@mypyc_attr(allow_interpreted_subclasses=True)
class OrcaScheduler(Scheduler):
    name: ClassVar[str] = "orca"

    def schedule(self, now: float) -> SchedulerOutput:
        npre = self._reserve_decode_blocks(now)
        if not npre and self.swapped:
            self._swap_in(now)
        nd = self.nd
        prefills: list[tuple[SeqState, int]] = []
        if not npre:
            _admit_whole_prompts(self, now, self.max_num_batched_tokens
                                      - nd * self._decode_slot_tokens(),
                                      len(self.running), prefills)
        return self._make_output(prefills, nd, npre)


@mypyc_attr(allow_interpreted_subclasses=True)
class TokenBudgetScheduler(Scheduler):
    """The unified token-budget step (DESIGN §6; vLLM v1, Sarathi-Serve).

    Budget = ``max_num_batched_tokens``. (1) Every decoder gets its token (the decode group is
    implicit, so it goes first, as a block; blocks it lacks are taken by preempting the victim
    of :meth:`~llmsim.scheduling.base.Scheduler._victim`). (2) If nothing was preempted,
    swapped-out requests come back. (3) Running requests still in prefill get
    ``min(remaining, budget, long_prefill_token_threshold)`` tokens in admission order,
    preempting victims when blocks run out (or themselves). (4) If nothing was preempted, the
    waiting queue in policy order: each starts at its prefix-cache hit and gets a chunk (with
    chunking off: its whole prompt if it fits the remaining budget, else admission stops); stop
    at the first that does not fit in the free blocks (above the watermark) or at
    ``max_num_seqs``. Under speculative decoding a decoder takes ``k + 1`` budget tokens.
    """

    name: ClassVar[str] = "token_budget"

    def __init__(self, kv, long_prefill_token_threshold=0, **kw) -> None:
        Scheduler.__init__(self, kv, **kw)
        self.long_prefill_token_threshold: int = long_prefill_token_threshold

    def _chunk(self, remaining: int, budget: int, alone: bool = False) -> int:
        """Tokens a prefill with ``remaining`` tokens gets from ``budget`` (0: none)."""
        if not self.enable_chunked_prefill:
            return remaining if remaining <= budget or alone else 0
        n = remaining if remaining < budget else budget
        t = self.long_prefill_token_threshold
        if t and n > t:
            n = t
        return n

    def _try_prefill_chunk(self, st: SeqState, n: int, use_watermark: bool) -> bool:
        if use_watermark:
            return super()._try_prefill_chunk(st, n, use_watermark)
        # without the watermark, allocate_slots (all or nothing, KVCacheManager contract) is
        # its own can_allocate: one KV call per running prefill instead of two
        req = st.req
        held = req.num_computed_tokens
        if self.kv.allocate_slots(req, held, held + n):
            st.scheduled = n
            return True
        return False

    def schedule(self, now: float) -> SchedulerOutput:
        npre = self._reserve_decode_blocks(now)
        if not npre and self.swapped:
            self._swap_in(now)
        budget = self.max_num_batched_tokens - self.nd * self._decode_slot_tokens()
        prefills: list[tuple[SeqState, int]] = []
        # running requests still in prefill (chunked prefill, or swapped back in mid-prefill)
        for req, st in list(self.prefilling.items()):
            if budget <= 0:
                break
            if not st.active:
                continue
            n = self._chunk(req.num_tokens - req.num_computed_tokens, budget, True)
            while not self._try_prefill_chunk(st, n, False):
                vst = self._victim()
                self._preempt(vst, now)
                npre += 1
                if vst is st:
                    break
            if st.active:
                prefills.append((st, n))
                budget -= n
        if npre:
            prefills = [(s, n) for s, n in prefills if s.active]
        else:
            # new requests, only if nothing was preempted this step
            nseq = len(self.running)
            use_wm = bool(self.running)
            while budget > 0 and nseq < self.max_num_seqs and self.waiting:
                wreq = self._pop_waiting_ready(now)
                if wreq is None:
                    break
                req = wreq
                hit = self._lookup_prefix(req)
                n = self._chunk(req.num_tokens - hit, budget, not self.running)
                if n <= 0 or not self.kv.can_allocate(req, hit, hit + n, use_wm):
                    break
                prefills.append((self._admit_waiting(req, hit, n, now), n))
                budget -= n
                nseq += 1
                use_wm = True
        return self._make_output(prefills, self.nd, npre)


@mypyc_attr(allow_interpreted_subclasses=True)
class SarathiScheduler(TokenBudgetScheduler):
    name: ClassVar[str] = "sarathi"

    def __init__(self, kv, long_prefill_token_threshold=0, **kw) -> None:
        kw["enable_chunked_prefill"] = True
        TokenBudgetScheduler.__init__(self, kv, long_prefill_token_threshold, **kw)


@mypyc_attr(allow_interpreted_subclasses=True)
class VllmV1Scheduler(TokenBudgetScheduler):
    name: ClassVar[str] = "vllm_v1"

    def __init__(self, kv, long_prefill_token_threshold=0, **kw) -> None:
        kw.setdefault("enable_chunked_prefill", True)
        TokenBudgetScheduler.__init__(self, kv, long_prefill_token_threshold, **kw)


@mypyc_attr(allow_interpreted_subclasses=True)
class VllmScheduler(TokenBudgetScheduler):
    name: ClassVar[str] = "vllm"

    def schedule(self, now: float) -> SchedulerOutput:
        if self.enable_chunked_prefill:
            return TokenBudgetScheduler.schedule(self, now)
        if self.waiting and not self.swapped:
            prefills = _admit_whole_prompts(self, now, self.max_num_batched_tokens,
                                                 len(self.running), [])
            if prefills:
                return self._make_output(prefills, 0, 0)
        npre = self._reserve_decode_blocks(now)
        if not npre and self.swapped:
            self._swap_in(now)
        return self._make_output([], self.nd, npre)


SCHEDULERS = {"static": StaticScheduler, "orca": OrcaScheduler, "vllm": VllmScheduler,
              "vllm_v1": VllmV1Scheduler, "sarathi": SarathiScheduler}
