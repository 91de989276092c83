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
"""
from __future__ import annotations

from collections import OrderedDict

from llmsim.memory.paged import PagedKVCacheManager


def prefix_block_keys(hash_ids, hash_block_tokens: int, num_prompt_tokens: int,
                      block_size: int) -> list:
    """Keys of the full ``block_size``-token blocks of a prompt described by ``hash_ids`` (one
    id per ``hash_block_tokens`` tokens). Key ``j`` = (chained hash of ids ``0..m``, ``j``)
    where id ``m`` holds the block's last token; the list stops at the first block that is not
    full or not covered by the ids."""
    if not hash_ids or not hash_block_tokens:
        return []
    H = int(hash_block_tokens)
    n_ids = len(hash_ids)
    keys = []
    h = 0
    m_done = -1
    for j in range(num_prompt_tokens // block_size):
        m = ((j + 1) * block_size - 1) // H
        if m >= n_ids:
            break
        while m_done < m:
            m_done += 1
            h = hash((h, int(hash_ids[m_done])))
        keys.append((h, j))
    return keys


class PrefixCachingKVCacheManager(PagedKVCacheManager):
    enable_prefix_caching = True

    def __init__(self, num_blocks: int, block_size: int, watermark: float = 0.0, host=None,
                 offload: bool = False):
        super().__init__(num_blocks, block_size, watermark=watermark)
        self.host = host                 # HostKVTier (swap; offload target), or None
        self._offload = host if offload else None
        self._ref: dict = {}             # cached key -> number of requests referencing it
        self._evictable: OrderedDict = OrderedDict()   # cached keys with ref 0, LRU first
        self._tables: dict = {}          # request -> [key or None] per full prompt block held
        self._shared: dict = {}          # request -> number of non-None entries of its table
        self._keys: dict = {}            # request -> its prompt block keys (memo)
        # memoised lookup: (request, hit keys, n evictable hits, host hits, watched keys,
        # first missing key, host version, request.num_tokens)
        self._lookup = None
        self.pending_transfer_s = 0.0
        self.hit_blocks = 0
        self.host_hit_blocks = 0
        self.evicted_blocks = 0

    # -- internals ---------------------------------------------------------------------------
    def _keys_for(self, req) -> list:
        k = self._keys.get(req)
        if k is None:
            k = prefix_block_keys(req.hash_ids, req.hash_block_tokens, req.num_prompt_tokens,
                                  self.block_size)
            self._keys[req] = k
        return k

    def _settle(self) -> None:
        """Evict LRU cached blocks until the evictable ones fit in the free count."""
        ev = self._evictable
        over = len(ev) - self.num_free_blocks
        if over <= 0:
            return
        host = self._offload
        ref = self._ref
        touch = self._touch
        for _ in range(over):
            key, _ = ev.popitem(last=False)
            del ref[key]
            touch(key)
            self.evicted_blocks += 1
            if host is not None:
                host.offload(key)

    def _touch(self, key) -> None:
        """A cache change at ``key``: drop the memoised lookup if it depends on it."""
        lk = self._lookup
        if lk is not None and (key in lk[4] or key == lk[5]):
            self._lookup = None

    @property
    def num_cached_blocks(self) -> int:
        return len(self._ref)

    # -- hits ------------------------------------------------------------------------------
    def get_computed_blocks(self, request) -> int:
        """Prompt tokens of ``request`` found in the cache (a multiple of block_size, below
        ``request.num_tokens``); no state change.

        The result is memoised (a request blocked at the head of the queue is looked up every
        step): the memo watches the keys it read and is dropped by any change to them."""
        self._settle()
        host = self._offload
        hv = host.version if host is not None else 0
        lk = self._lookup
        if lk is not None and lk[0] is request and lk[6] == hv and lk[7] == request.num_tokens:
            return len(lk[1]) * self.block_size
        keys = self._keys_for(request)
        limit = (request.num_tokens - 1) // self.block_size
        if limit > len(keys):
            limit = len(keys)
        ref = self._ref
        j = 0
        n_ev = 0
        while j < limit:
            r = ref.get(keys[j])
            if r is None:
                break
            if r == 0:
                n_ev += 1
            j += 1
        hostk = []
        if host is not None:
            # past the GPU hits: blocks on the host (or back on the GPU again)
            while j < limit:
                key = keys[j]
                r = ref.get(key)
                if r is not None:
                    if r == 0:
                        n_ev += 1
                elif host.has(key):
                    hostk.append(key)
                else:
                    break
                j += 1
        hit = keys[:j]
        watch = set(hit)
        nxt = keys[j] if j < limit else None
        self._lookup = (request, hit, n_ev, hostk, watch, nxt, hv, request.num_tokens)
        return j * self.block_size

    def _pending(self, request, held_tokens):
        lk = self._lookup
        if lk is not None and lk[0] is request and len(lk[1]) * self.block_size == held_tokens:
            return lk
        if held_tokens:
            raise AssertionError(f"allocation of {request!r} from {held_tokens} held tokens "
                                 "without a matching get_computed_blocks")
        return None

    def _need(self, request, held_tokens, after) -> int:
        need = self.blocks_for(after) - self.blocks_for(held_tokens)
        if request not in self._tables:
            lk = self._pending(request, held_tokens)
            if lk is not None:
                need += lk[2] + len(lk[3])
        return need

    # -- manager interface -------------------------------------------------------------------
    def can_allocate(self, request, held_tokens, num_kv_tokens_after, use_watermark=False):
        need = self._need(request, held_tokens, num_kv_tokens_after)
        reserve = self.watermark_blocks if use_watermark else 0
        return self.num_free_blocks - need >= reserve

    def allocate_slots(self, request, held_tokens, num_kv_tokens_after):
        need = self._need(request, held_tokens, num_kv_tokens_after)
        if need > self.num_free_blocks:
            return False
        ref = self._ref
        table = self._tables.get(request)
        if table is None:
            table = self._tables[request] = []
            shared = 0
            lk = self._pending(request, held_tokens)
            if lk is not None:
                self._lookup = None
                ev = self._evictable
                host = self._offload
                for key in lk[1]:
                    r = ref.get(key)
                    if r is None:              # on the host: load it into a fresh block
                        host.take(key)
                        ref[key] = 1
                        self.num_free_blocks -= 1
                    else:
                        if r == 0:
                            del ev[key]
                            self.num_free_blocks -= 1
                        ref[key] = r + 1
                    table.append(key)
                nh = len(lk[3])
                if nh:
                    t = host.transfer_time_s(nh)
                    host.transfer_s += t
                    self.pending_transfer_s += t
                shared = len(table)
                self.hit_blocks += len(table) - nh
                self.host_hit_blocks += nh
            self._shared[request] = shared
        self.num_free_blocks -= self.blocks_for(num_kv_tokens_after) - \
            self.blocks_for(held_tokens)
        self._settle()
        # register the prompt blocks that become full
        keys = self._keys_for(request)
        full = min(num_kv_tokens_after, request.num_prompt_tokens) // self.block_size
        if full > len(keys):
            full = len(keys)
        j = len(table)
        if j < full:
            added = 0
            for j in range(j, full):
                key = keys[j]
                if key in ref:
                    table.append(None)
                else:
                    ref[key] = 1
                    table.append(key)
                    added += 1
                    if self._lookup is not None:
                        self._touch(key)
            self._shared[request] += added
        return True

    def free(self, request, held_tokens):
        self._settle()
        table = self._tables.pop(request, None)
        shared = self._shared.pop(request, 0)
        self._keys.pop(request, None)
        if self._lookup is not None and self._lookup[0] is request:
            self._lookup = None
        # private blocks return to the free pool; shared ones only when their last reference
        # goes (they stay cached as evictable blocks, which count as free)
        released = self.blocks_for(held_tokens) - shared
        if table:
            ref = self._ref
            ev = self._evictable
            for key in reversed(table):
                if key is None:
                    continue
                r = ref[key] - 1
                ref[key] = r
                if r == 0:
                    ev[key] = None
                    released += 1
                    if self._lookup is not None:
                        self._touch(key)
        self.free_blocks(released)

    def check(self) -> None:
        self._settle()
        super().check()
        if len(self._evictable) > self.num_free_blocks:
            raise AssertionError("more evictable cached blocks than free blocks")
        count: dict = {}
        for req, table in self._tables.items():
            n = 0
            for key in table:
                if key is not None:
                    count[key] = count.get(key, 0) + 1
                    n += 1
            if n != self._shared[req]:
                raise AssertionError(f"shared-block count of {req!r} out of date")
        for key, r in self._ref.items():
            if r < 0 or r != count.get(key, 0):
                raise AssertionError(f"ref count of block {key} is {r}, "
                                     f"{count.get(key, 0)} requests hold it")
            if (r == 0) != (key in self._evictable):
                raise AssertionError(f"block {key} evictable state wrong (ref {r})")
        if self.host is not None:
            self.host.check()
