"""Paged KV cache with automatic prefix caching (vLLM APC) and an optional host offload tier.

Contract (DESIGN §5), on top of :class:`~llmsim.memory.paged.PagedKVCacheManager`:

- **Block identity.** Only full blocks of the *prompt* are cached. A request's prompt is
  described by ``Request.hash_ids``: one id per ``Request.hash_block_tokens`` tokens (512 in the
  Mooncake traces, the workload's ``hash_block_tokens`` for sessions); equal ids mean equal
  content. Block ``j`` (tokens ``[j·bs, (j+1)·bs)``) is identified by the chained hash of the
  ids up to the one holding its last token, and ``j``: :func:`prefix_block_keys`. So equal keys
  mean equal prefixes, whatever ``hash_block_tokens`` is relative to ``block_size``. Requests
  without ``hash_ids`` never hit nor fill the cache. Generated tokens are not cached (the next
  session turn carries them in its own ``hash_ids``).
- **Hits.** :meth:`get_computed_blocks` returns the longest run of leading prompt blocks that
  are cached (on the GPU, then, with ``offload``, in the host tier), capped so that at least one
  token is computed (the last position must produce logits), without changing state. The next
  ``can_allocate``/``allocate_slots`` of that request with ``held_tokens`` = the hit length
  reference those blocks (ref count + 1); host hits are loaded back into fresh GPU blocks and
  their transfer time is added to :attr:`pending_transfer_s` (the scheduler charges it to the
  step).
- **Filling.** ``allocate_slots`` registers each prompt block that becomes full (as vLLM v1 does,
  at scheduling time); a block whose key is already cached stays private.
- **Reference counts and LRU.** ``free`` drops the references of a request (its tail blocks
  first); a cached block without references stays cached and counts as *free*
  (``num_free_blocks`` = never-cached free blocks + evictable cached blocks); it is evicted,
  least recently released first, only when an allocation needs it and no uncached free block is
  left. Eviction is lazy (done at the next cache operation), so the decode fast path can keep
  taking blocks with ``allocate_blocks``/``num_free_blocks`` arithmetic only. With a host tier,
  evicted blocks are offloaded there (copy overlapped with compute, not timed).
- Counters: ``hit_blocks``, ``host_hit_blocks``, ``evicted_blocks`` (cumulative).

Blocks are kept in runs, not one entry per block (a 12k-token Mooncake prompt is ~750 blocks
that are registered, released, evicted and offloaded together); the structures are in
:mod:`llmsim.memory.prefix_spans`. A prompt's keys form a :class:`BlockChain` (one chained
hash per segment of blocks that share an id); a :class:`BlockSpan` holds blocks
``lo … hi-1`` of one chain with one reference count; the eviction LRU (:class:`SpanLRU`) holds the unreferenced spans, each leaving from its highest
block down (the order ``free`` releases them in); a :class:`SpanIndex` finds the spans holding
a segment. Every observable (hits, counters, free counts, eviction and offload order) is the
one of a cache with one entry per block ``(h, j)``: spans are cut wherever two blocks of one
span would be treated differently.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from llmsim.memory.host import HostKVTier
from llmsim.memory.paged import PagedKVCacheManager
from llmsim.memory.prefix_spans import (BlockChain, BlockSpan, SpanIndex, SpanLRU, check_spans,
                                        chain_hashes, common_end, common_start,
                                        prefix_block_chain)
from llmsim.workload.request import Request


def prefix_block_keys(hash_ids: Any, hash_block_tokens: int, num_prompt_tokens: int,
                      block_size: int) -> list[tuple[int, int]]:
    """Keys of the full ``block_size``-token blocks of a prompt described by ``hash_ids`` (one
    id per ``hash_block_tokens`` tokens). Key ``j`` = (chained hash of ids ``0..m``, ``j``)
    where id ``m`` holds the block's last token (see
    :func:`~llmsim.memory.prefix_spans.chain_hashes`); the list stops at the first block that
    is not full or not covered by the ids."""
    if not hash_ids or not hash_block_tokens:
        return []
    H = int(hash_block_tokens)
    nblocks = num_prompt_tokens // block_size
    if nblocks <= 0:
        return []
    n_ids = len(hash_ids)
    # the ids up to the one holding the last token of the last full block
    hs = chain_hashes(hash_ids, min(n_ids, (nblocks * block_size - 1) // H + 1))
    keys = []
    for j in range(nblocks):
        m = ((j + 1) * block_size - 1) // H
        if m >= n_ids:
            break
        keys.append((hs[m], j))
    return keys


def _num_tokens(request: Any) -> int:
    """``request.num_tokens`` (compiled: read natively from a :class:`Request`; a generic
    attribute read costs ≈ 200 instructions and leaves an untyped value behind)."""
    if type(request) is Request:
        r: Request = request
        return r.num_tokens
    return int(request.num_tokens)


def _num_prompt_tokens(request: Any) -> int:
    """``request.num_prompt_tokens`` (read natively from a :class:`Request`, as above)."""
    if type(request) is Request:
        r: Request = request
        return r.num_prompt_tokens
    return int(request.num_prompt_tokens)


# -- the manager ---------------------------------------------------------------------------
class _RequestBlocks:
    """What the cache keeps for one request, from its first lookup or allocation to its
    ``free`` (one dictionary entry per request instead of one per field: the hot paths read
    several fields at once)."""
    __slots__ = ("chain", "table", "held", "shared", "own")

    def __init__(self, chain: BlockChain) -> None:
        self.chain = chain        # its BlockChain
        # [lo, hi] ranges of its chain it references; None until its first allocation
        self.table: Optional[list[list[int]]] = None
        self.held = 0             # full prompt blocks in its table
        self.shared = 0           # blocks it references
        self.own: Optional[BlockSpan] = None          # the span it registered last


#: memoised lookup: (request, hit blocks, evictable hits, host hits, host version,
#: request.num_tokens, the GPU pieces it met [(span, lo, hi)])
_Lookup = tuple[Any, int, int, int, int, int, list[tuple[BlockSpan, int, int]]]


class PrefixCachingKVCacheManager(PagedKVCacheManager):
    enable_prefix_caching: ClassVar[bool] = True

    def __init__(self, num_blocks: int, block_size: int, watermark: float = 0.0,
                 host: Optional[HostKVTier] = None, offload: bool = False) -> None:
        PagedKVCacheManager.__init__(self, num_blocks, block_size, watermark)
        self.host = host                 # HostKVTier (swap; offload target), or None
        self._offload: Optional[HostKVTier] = host if offload else None
        self._idx = SpanIndex()          # cached GPU spans by segment
        self._lru = SpanLRU()            # unreferenced cached spans, least recently released first
        self._num_evictable = 0          # blocks in self._lru
        self._num_cached = 0             # blocks in cached spans
        self._reqs: dict[Any, _RequestBlocks] = {}      # request -> _RequestBlocks
        # memoised lookup: (request, hit blocks, evictable hits, host hits, host version,
        # request.num_tokens, the GPU pieces it met [(span, lo, hi)]); _watch: (chain, last),
        # the lookup read the segments of blocks 0 … last of the chain (a change to a block
        # keyed by one of their hashes drops it)
        self._lookup: Optional[_Lookup] = None
        self._watch: Optional[tuple[BlockChain, int]] = None
        self.pending_transfer_s = 0.0
        self.hit_blocks = 0
        self.host_hit_blocks = 0
        self.evicted_blocks = 0

    # -- internals ---------------------------------------------------------------------------
    def _state(self, req: Any) -> _RequestBlocks:
        s = self._reqs.get(req)
        if s is None:
            if type(req) is Request:       # (its fields read natively, see _num_tokens)
                r: Request = req
                C = prefix_block_chain(r.hash_ids, r.hash_block_tokens, r.num_prompt_tokens,
                                       self.block_size)
            else:
                C = prefix_block_chain(req.hash_ids, req.hash_block_tokens,
                                       req.num_prompt_tokens, self.block_size)
            s = self._reqs[req] = _RequestBlocks(C)
        return s

    # views of the per-request state (tests, checks)
    @property
    def _tables(self) -> dict[Any, Any]:
        return {r: s.table for r, s in self._reqs.items() if s.table is not None}

    @property
    def _shared(self) -> dict[Any, int]:
        return {r: s.shared for r, s in self._reqs.items() if s.table is not None}

    def _touch(self, C: BlockChain, a: int, b: int) -> None:
        """Blocks ``[a, b)`` of ``C`` changed: drop the memoised lookup if it read them."""
        w = self._watch
        if w is None:
            return
        W, last = w
        read = W.hs[:W.seg(last) + 1] if last >= 0 else ()
        ka, kb = C.seg_range(a, b)
        if not set(read).isdisjoint(C.hs[ka:kb + 1]):
            self._lookup = None
            self._watch = None

    def _settle(self) -> None:
        """Evict LRU cached blocks until the evictable ones fit in the free count."""
        over = self._num_evictable - self.num_free_blocks
        if over > 0:
            self._evict(over)

    def _evict(self, n: int) -> None:
        """Evict the ``n`` least recently released cached blocks (each span's top blocks
        first, :meth:`SpanLRU.pop_oldest`), offloading every piece."""
        self._num_evictable -= n
        self._num_cached -= n
        self.evicted_blocks += n
        x = self._lru.head.next
        assert x is not None
        hi = x.hi
        if hi - x.lo > n and self._watch is None:
            # the common case, inline (on the Mooncake trace, with the host tier's drops:
            # 3 of 4 calls): the oldest span keeps blocks, its top n leave (the first
            # branch of SpanLRU.pop_oldest, without its call and list of pieces)
            x.hi = lo = hi - n
            if not x.top:
                x.top = hi
            if self._offload is not None:
                self._offload.offload_blocks(x.chain, lo, hi)
            return
        pieces = self._lru.pop_oldest(n, self._idx)
        if self._watch is not None:
            for C, lo, hi in pieces:
                self._touch(C, lo, hi)
        if self._offload is not None:
            self._offload.offload_runs(pieces)

    @property
    def num_cached_blocks(self) -> int:
        return self._num_cached

    # -- hits ------------------------------------------------------------------------------
    def get_computed_blocks(self, request: Any) -> int:
        """Prompt tokens of ``request`` found in the cache (a multiple of block_size, below
        ``request.num_tokens``); no state change.

        The result is memoised (a request blocked at the head of the queue is looked up every
        step): the memo watches the segments it read and is dropped by any change to them."""
        self._settle()
        host = self._offload
        if host is not None:
            host.flush()                 # (host._idx is read below)
            hv = host._version
        else:
            hv = 0
        lk = self._lookup
        nt = _num_tokens(request)
        if lk is not None and lk[0] is request and lk[4] == hv and lk[5] == nt:
            return lk[1] * self.block_size
        C = self._state(request).chain
        limit = (nt - 1) // self.block_size
        if limit > C.end:
            limit = C.end
        idx = self._idx
        hidx = host._idx if host is not None else None
        pos = n_ev = n_host = 0
        met: list[tuple[BlockSpan, int, int]] = []
        while pos < limit:
            k = C.seg(pos)
            x = idx.find(C, k, pos)
            if x is not None:
                e = common_end(C, x.chain, pos, x.hi if x.hi < limit else limit)
                if not x.ref:
                    n_ev += e - pos
                met.append((x, pos, e))
                pos = e
                continue
            if hidx is None:
                break
            x = hidx.find(C, k, pos)
            if x is None:
                break
            # host blocks up to the next one that is on the GPU (that one counts there)
            e = idx.next_held(C, pos, common_end(C, x.chain, pos, x.hi if x.hi < limit else limit))
            n_host += e - pos
            pos = e
        self._lookup = (request, pos, n_ev, n_host, hv, nt, met)
        self._watch = (C, pos if pos < limit else pos - 1)
        return pos * self.block_size

    def _pending(self, request: Any, held_tokens: int) -> Optional[_Lookup]:
        lk = self._lookup
        if lk is not None and lk[0] is request and lk[1] * self.block_size == held_tokens:
            return lk
        if held_tokens:
            raise AssertionError(f"allocation of {request!r} from {held_tokens} held tokens "
                                 "without a matching get_computed_blocks")
        return None

    def _need(self, request: Any, held_tokens: int, after: int) -> int:
        s = self._reqs.get(request)
        lk = None if s is not None and s.table is not None else \
            self._pending(request, held_tokens)
        return self._blocks_taken(self._extra_blocks(held_tokens, after), lk)

    @staticmethod
    def _blocks_taken(extra: int, lk: Optional[_Lookup]) -> int:
        """Free blocks an allocation takes: its ``extra`` new blocks, plus, for a request's
        first allocation after its lookup ``lk`` (None: no lookup pending), the evictable GPU
        hits the lookup found (they leave the LRU) and its host hits (loaded into new blocks)."""
        return extra if lk is None else extra + lk[2] + lk[3]

    def _reference(self, C: BlockChain, hit: int, met: list[tuple[BlockSpan, int, int]]) -> None:
        """Take the hit on blocks ``[0, hit)`` of ``C`` (all on the GPU or the host): cached
        spans gain a reference (leaving the LRU and the free count at 0), host blocks are
        loaded into new spans. ``met``: the GPU pieces ``(span, lo, hi)`` the lookup found,
        in order; every change since the lookup but a split of a span dropped it, so a piece
        whose span still holds it is the one a second look would find."""
        idx = self._idx
        lru = self._lru
        host = self._offload
        pos = i = 0
        while pos < hit:
            x = None
            if i < len(met) and met[i][1] == pos:
                y, _, e = met[i]
                i += 1
                if y.lo <= pos and e <= y.hi:
                    x = y
            if x is None:
                k = C.seg(pos)
                x = idx.find(C, k, pos)
                if x is not None:
                    e = common_end(C, x.chain, pos, x.hi if x.hi < hit else hit)
            if x is not None:
                if x.ref:
                    m = idx.split_out(None, x, pos, e)
                else:
                    m = idx.split_out(lru, x, pos, e)
                    self._num_evictable -= e - pos
                    self.num_free_blocks -= e - pos
                m.ref += 1
            else:
                assert host is not None
                host.flush()         # (host._idx is read next)
                x = host._idx.find(C, k, pos)
                assert x is not None
                e = idx.next_held(C, pos, common_end(C, x.chain, pos, x.hi if x.hi < hit else hit))
                host.take_blocks(C, pos, e)
                m = BlockSpan(C, pos, e, 1)
                idx.attach(m, pos, e)
                self.num_free_blocks -= e - pos
                self._num_cached += e - pos
            pos = e

    def _release(self, C: BlockChain, lo: int, hi: int, own: Optional[BlockSpan] = None) -> int:
        """Blocks ``[lo, hi)`` of ``C`` lose one reference, from the top; spans left
        unreferenced join the LRU. Returns the number of blocks left unreferenced. ``own``:
        the request's own last span (or None), which needs no lookup when it ends at ``hi``."""
        idx = self._idx
        lru = self._lru
        freed = 0
        pos = hi
        x = own if own is not None and own.hi == hi and own.chain is C else None
        while pos > lo:
            if x is None:
                x = idx.find(C, C.seg(pos - 1), pos - 1)
                assert x is not None
                q = common_start(C, x.chain, x.lo if x.lo > lo else lo, pos)
            else:                               # a span of C itself
                q = x.lo if x.lo > lo else lo
            m = idx.split_out(None, x, q, pos)
            x = None
            m.ref -= 1
            if not m.ref:
                lru.append(m)
                freed += pos - q
                if self._watch is not None:
                    self._touch(C, q, pos)
            pos = q
        return freed

    # -- manager interface -------------------------------------------------------------------
    def can_allocate(self, request: Any, held_tokens: int, num_kv_tokens_after: int,
                     use_watermark: bool = False) -> bool:
        need = self._need(request, held_tokens, num_kv_tokens_after)
        reserve = self.watermark_blocks if use_watermark else 0
        return self.num_free_blocks - need >= reserve

    def allocate_slots(self, request: Any, held_tokens: int, num_kv_tokens_after: int) -> bool:
        extra = self._extra_blocks(held_tokens, num_kv_tokens_after)
        s = self._reqs.get(request)
        table = s.table if s is not None else None
        lk = None if table is not None else self._pending(request, held_tokens)
        need = self._blocks_taken(extra, lk)
        if need > self.num_free_blocks:
            return False
        if s is None:
            s = self._state(request)
        C = s.chain
        if table is None:
            table = s.table = []
            hit = 0
            if lk is not None:
                self._lookup = None
                self._watch = None
                hit = lk[1]
                if hit:
                    self._reference(C, hit, lk[6])
                    table.append([0, hit])
                nh = lk[3]
                if nh:
                    host = self._offload
                    assert host is not None
                    t = host.transfer_time_s(nh)
                    host.transfer_s += t
                    self.pending_transfer_s += t
                self.hit_blocks += hit - nh
                self.host_hit_blocks += nh
            s.shared = s.held = hit
        self.num_free_blocks -= extra
        self._settle()
        # register the prompt blocks that become full (those not cached yet)
        full = min(num_kv_tokens_after, _num_prompt_tokens(request)) // self.block_size
        if full > C.end:
            full = C.end
        pos = s.held
        if pos < full:
            idx = self._idx
            added = -1
            st = C.step
            if st:
                # fast path: no cached span meets the segments of [pos, full) but, right
                # below pos, the request's own last span, which then grows over them
                d = idx.d
                hs = C.hs
                ka = pos // st
                kb = (full - 1) // st
                own = self._continuing_span(s, pos)
                cont = own is not None
                if own is None:
                    own = BlockSpan(C, pos, full, 1)
                # own claims the segments in one pass (undone when one is listed already);
                # a continuing span lists segment ka already if it holds blocks of it
                k0 = ka
                fast = True
                if cont and ka * st < pos:
                    k0 += 1
                    fast = d.get(hs[ka]) is own
                if fast and k0 <= kb:
                    fast = idx.claim(hs[k0:kb + 1], own)
                if fast:
                    if cont:
                        own.hi = full
                    else:
                        s.own = own
                    self._hold(table, C, pos, full)
                    added = full - pos
            if added < 0:
                added = 0
                while True:
                    g = idx.next_held(C, pos, full)
                    if g > pos:
                        own = self._continuing_span(s, pos)
                        if own is not None:
                            own.hi = g
                        else:
                            own = s.own = BlockSpan(C, pos, g, 1)
                        idx.attach(own, pos, g)
                        self._hold(table, C, pos, g)
                        added += g - pos
                    if g == full:
                        break
                    pos = idx.covered_end(C, g, full)      # cached already: private blocks
                    if pos == full:
                        break
            s.held = full
            s.shared += added
            self._num_cached += added
        return True

    @staticmethod
    def _continuing_span(s: _RequestBlocks, pos: int) -> Optional[BlockSpan]:
        """The request's own last span (``s``: its state) when it ends right at block ``pos``
        of its chain and only this request holds it (new blocks from ``pos`` on then extend
        it), else None."""
        own = s.own
        if own is not None and own.hi == pos and own.ref == 1 and own.chain is s.chain:
            return own
        return None

    def _hold(self, table: list[list[int]], C: BlockChain, lo: int, hi: int) -> None:
        """The request (its block ``table``) now holds blocks ``[lo, hi)`` of ``C`` as
        cached blocks."""
        if table and table[-1][1] == lo:
            table[-1][1] = hi
        else:
            table.append([lo, hi])
        if self._watch is not None:
            self._touch(C, lo, hi)

    def free(self, request: Any, held_tokens: int) -> None:
        self._settle()
        s = self._reqs.pop(request, None)
        if s is not None:
            table = s.table
            shared = s.shared
            own = s.own
            C = s.chain
        else:
            table = None
            shared = 0
        if self._lookup is not None and self._lookup[0] is request:
            self._lookup = None
            self._watch = None
        # private blocks return to the free pool; shared ones only when their last reference
        # goes (they stay cached as evictable blocks, which count as free)
        released = self.blocks_for(held_tokens) - shared
        if table:
            freed = 0
            for lo, hi in reversed(table):
                freed += self._release(C, lo, hi, own)
            self._num_evictable += freed
            released += freed
        self.free_blocks(released)

    # -- views (tests, checks) ---------------------------------------------------------------
    def _spans(self) -> list[BlockSpan]:
        seen: dict[int, BlockSpan] = {}
        for v in self._idx.d.values():
            for x in (v if isinstance(v, list) else [v]):
                seen[id(x)] = x
        return list(seen.values())

    @property
    def _ref(self) -> dict[Any, int]:
        """Reference count of every cached block ``(h, j)`` (a per-block view)."""
        return {key: x.ref for x in self._spans() for key in x.keys()}

    def evictable_keys(self) -> list[tuple[Any, int]]:
        """Unreferenced cached blocks ``(h, j)`` in eviction order."""
        self._settle()
        return [key for x in self._lru for key in x.keys()]

    def check(self) -> None:
        self._settle()
        super().check()
        if self._num_evictable > self.num_free_blocks:
            raise AssertionError("more evictable cached blocks than free blocks")
        spans = self._spans()
        check_spans(self._idx, spans)
        lru = list(self._lru)
        for x in spans:
            if x.ref < 0 or (x.ref == 0) != (x.prev is not None) or (x.ref and x.top):
                raise AssertionError(f"{x!r} in the wrong LRU state")
        if sum(x.hi - x.lo for x in lru) != self._num_evictable or \
                sum(x.hi - x.lo for x in spans) != self._num_cached or \
                len(lru) != sum(1 for x in spans if not x.ref):
            raise AssertionError("cached/evictable block counts out of date")
        # every block is referenced by as many requests as its span's ref count says
        pieces: dict[int, list[tuple[int, int]]] = {}
        for req, s in self._reqs.items():
            table = s.table
            if table is None:
                continue
            C = s.chain
            if sum(hi - lo for lo, hi in table) != s.shared:
                raise AssertionError(f"shared-block count of {req!r} out of date")
            for lo, hi in table:
                pos = lo
                while pos < hi:
                    y = self._idx.find(C, C.seg(pos), pos)
                    if y is None:
                        raise AssertionError(f"{req!r} holds uncached block {C.key(pos)}")
                    e = common_end(C, y.chain, pos, y.hi if y.hi < hi else hi)
                    pieces.setdefault(id(y), []).append((pos, e))
                    pos = e
        for x in spans:
            delta: dict[int, int] = {}
            for lo, hi in pieces.get(id(x), ()):
                delta[lo] = delta.get(lo, 0) + 1
                delta[hi] = delta.get(hi, 0) - 1
            n = 0
            for j in sorted(delta.keys() | {x.lo}):
                n += delta.get(j, 0)
                if x.lo <= j < x.hi and n != x.ref:
                    raise AssertionError(f"{x!r}: {n} requests hold block {x.chain.key(j)}")
        if self.host is not None:
            self.host.check()
