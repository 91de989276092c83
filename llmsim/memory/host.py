"""Host-memory (CPU) tier for KV blocks: swapped-out requests and offloaded prefix blocks.

Contract (DESIGN §5, plain Python, no SimPy):
- capacity is ``num_blocks`` blocks of ``block_size`` tokens (``swap_space_gb`` of the pool
  divided by the host bytes of one block, see :func:`host_tier_for`);
- moving ``n`` blocks between GPU and host takes ``transfer_s(n) = latency_s + n ·
  block_transfer_s`` (0 for ``n == 0``): every GPU of the replica moves its own shard over its
  own host link at the same time, so ``block_transfer_s`` is the per-GPU bytes of a block over
  ``HardwareSpec.host_link.bandwidth_bytes_per_s``;
- ``swap_out(request, n)`` holds ``n`` blocks for a preempted request until ``swap_in``
  releases them; swapped requests come before offloaded prefix blocks: a swap-out evicts
  least-recently-used prefix blocks when it needs their room, never the other way round;
- a prefix block is ``(h, j)``, block ``j`` of a :class:`~llmsim.memory.prefix.BlockChain`.
  ``offload_blocks(chain, lo, hi)`` keeps evicted GPU prefix blocks ``hi-1, …, lo`` of
  ``chain`` (in that order) exactly as that many single-block offloads would: a block already
  kept moves to the most recently used end; a new one takes a free block, or the oldest
  offloaded block makes room; nothing is kept when swapped requests fill the tier.
  ``offload_runs(runs)`` is that for each ``(chain, lo, hi)`` of ``runs`` in turn.
  ``take_blocks`` removes blocks that are loaded back to the GPU; ``present_end`` finds how far
  a run of kept blocks reaches. ``offload(key)``/``has(key)``/``take(key)`` address the single
  block ``(key, 0)``;
- ``num_free_blocks`` never goes negative nor above ``num_blocks`` (``check()``).
Counters (``blocks_swapped_out``, ``blocks_swapped_in``, ``blocks_offloaded``,
``blocks_loaded``, ``transfer_s``) are cumulative; ``version`` changes whenever the set of
offloaded prefix blocks does.

Offloads are queued and applied, in order, at the next read of the tier (:meth:`flush`: every
method and property that depends on the prefix blocks or the free count calls it first), so an
offload that continues the queued one right below it in the same chain joins it and the run is
inserted once (the GPU evicts a span from the top, piece by piece, between two lookups).

Offloaded blocks are kept as :class:`~llmsim.memory.prefix.BlockSpan` runs of one block chain
(a prompt's blocks arrive, age and leave together), in a
:class:`~llmsim.memory.prefix.SpanLRU` whose spans leave from their highest block down, and a
:class:`~llmsim.memory.prefix.SpanIndex` by segment.
"""
from __future__ import annotations

from typing import Any, Optional

from llmsim.memory.prefix_spans import BlockChain, BlockSpan, SpanIndex, SpanLRU, check_spans, \
    common_end, common_start


class HostKVTier:
    def __init__(self, num_blocks: int, block_size: int, block_transfer_s: float,
                 latency_s: float = 0.0) -> None:
        if num_blocks < 0 or block_size < 1 or block_transfer_s < 0 or latency_s < 0:
            raise ValueError("host tier needs num_blocks >= 0, block_size >= 1 and "
                             "non-negative transfer times")
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self.block_transfer_s = float(block_transfer_s)
        self.latency_s = float(latency_s)
        self._free = self.num_blocks            # num_free_blocks once the pending offloads are in
        self.swapped: dict[Any, int] = {}       # request -> blocks held for it
        self._lru = SpanLRU()                   # offloaded prefix spans, least recently used first
        self._idx = SpanIndex()                 # the same spans by segment
        self._kept = 0                          # offloaded prefix blocks kept
        self._pending: list[list[Any]] = []     # offloads not applied yet: [chain, lo, hi]
        self.blocks_swapped_out = 0
        self.blocks_swapped_in = 0
        self._offloaded = 0
        self.blocks_loaded = 0
        self.transfer_s = 0.0
        self._version = 0

    # -- what the pending offloads change: read through flush() ---------------------------
    # (plain properties, not one factory: compiled classes take only def-declared properties)
    @property
    def num_free_blocks(self) -> int:
        """Blocks neither swapped out nor kept."""
        self.flush()
        return self._free

    @property
    def num_prefix_blocks(self) -> int:
        """Offloaded prefix blocks kept."""
        self.flush()
        return self._kept

    @property
    def blocks_offloaded(self) -> int:
        """Prefix blocks offloaded so far (cumulative)."""
        self.flush()
        return self._offloaded

    @property
    def version(self) -> int:
        """Changes whenever the set of offloaded prefix blocks does."""
        self.flush()
        return self._version

    def flush(self) -> None:
        """Apply the offloads :meth:`offload_blocks` queued, in order. Every method that reads
        or changes the prefix blocks or the free count calls it first; so does a caller that
        reads ``_idx`` itself (the prefix cache)."""
        p = self._pending
        if p:
            self._pending = []
            for C, lo, hi in p:
                self._offload_now(C, lo, hi)

    # -- time ----------------------------------------------------------------------------
    def transfer_time_s(self, num_blocks: int) -> float:
        """Seconds to move ``num_blocks`` blocks over the host link (either direction)."""
        if num_blocks <= 0:
            return 0.0
        return self.latency_s + num_blocks * self.block_transfer_s

    # -- swap --------------------------------------------------------------------------------
    def can_swap_out(self, num_blocks: int) -> bool:
        self.flush()
        return num_blocks <= self._free + self._kept

    def swap_out(self, request: Any, num_blocks: int) -> float:
        """Hold ``num_blocks`` for ``request``; returns the transfer time. The caller checked
        ``can_swap_out``."""
        if request in self.swapped:
            raise AssertionError(f"{request!r} is already swapped out")
        if not self.can_swap_out(num_blocks):          # (flushes)
            raise AssertionError("host tier full")
        short = num_blocks - self._free
        if short > 0:
            self._pop_front(short)
            self._free += short
            self._version += short
        self._free -= num_blocks
        self.swapped[request] = num_blocks
        self.blocks_swapped_out += num_blocks
        t = self.transfer_time_s(num_blocks)
        self.transfer_s += t
        return t

    def swap_in(self, request: Any) -> float:
        """Release the blocks of ``request`` (copied back to the GPU); returns the time."""
        self.flush()            # offloads queued before the release meet the tier before it
        n = self.swapped.pop(request)
        self._free += n
        self.blocks_swapped_in += n
        t = self.transfer_time_s(n)
        self.transfer_s += t
        return t

    def swapped_blocks(self, request: Any) -> int:
        return self.swapped[request]

    # -- prefix blocks: internals ----------------------------------------------------------
    def _pop_front(self, n: int) -> None:
        """Drop the ``n`` least recently used prefix blocks, each span's top blocks first
        (the caller adjusts the free count)."""
        self._kept -= n
        x = self._lru.head.next
        assert x is not None
        hi = x.hi
        if hi - x.lo > n:
            # the common case, inline: the oldest span keeps blocks, its top n leave
            # (SpanLRU.pop_oldest's first branch)
            x.hi = hi - n
            if not x.top:
                x.top = hi
            return
        self._lru.pop_oldest(n, self._idx)

    def _append(self, C: BlockChain, lo: int, hi: int) -> None:
        """Blocks ``hi-1 … lo`` of ``C`` (none kept) become the most recently used."""
        self._kept += hi - lo
        lru = self._lru
        tail = lru.head.prev
        assert tail is not None
        if tail.lo == hi and tail is not lru.head and \
                (tail.chain is C or common_end(tail.chain, C, lo, hi) == hi):
            tail.lo = lo                    # right below the newest span: it leaves next
            self._idx.attach(tail, lo, hi)
            return
        x = BlockSpan(C, lo, hi)
        lru.append(x)
        self._idx.attach(x, lo, hi)

    def _insert(self, C: BlockChain, lo: int, hi: int) -> None:
        """Offload blocks ``hi-1 … lo`` of ``C``, none of them kept yet."""
        a = hi - lo
        top = hi
        free = self._free
        if free >= a:
            self._free = free - a
        else:
            kept = self._kept
            if free + kept == 0:                  # the tier is full of swapped requests
                return
            if a - free > kept:   # everything leaves, then this run's first (top) blocks
                self._pop_front(kept)
                top = lo + kept + free
            else:
                self._pop_front(a - free)
            self._free = 0
        self._offloaded += a
        self._version += a
        self._append(C, lo, top)

    def _claim_insert(self, C: BlockChain, lo: int, hi: int, ka: int, kb: int, v: Any) -> bool:
        """:meth:`_insert` of blocks ``[lo, hi)`` of ``C`` (a ``step`` chain meeting segments
        ``ka … kb``; ``v`` is what the index lists for ``kb``) in one pass over the index:
        the span that will hold the run claims the segments first, and only when every one
        was free (or, for ``kb``, held by the newest span that the run extends) does the
        insert go on. Returns False, with nothing changed, when that does not apply (the
        caller then looks block by block), and also for a run the tier cannot keep whole."""
        a = hi - lo
        free = self._free
        kept = self._kept
        short = a - free
        if short > kept or free + kept == 0:       # a partial run, or nothing kept
            return False
        head = self._lru.head
        tail = head.prev
        assert tail is not None
        # the newest span survives the drops iff fewer than all kept blocks leave
        merge = tail is not head and tail.lo == hi and (short <= 0 or short < kept)
        if merge and tail.chain is not C:
            if common_end(tail.chain, C, lo, hi) < hi:
                merge = False
            elif tail.chain.geo != C.geo:      # its segments are not those of C
                return False
        if v is None:
            kc = kb
        elif merge and v is tail:
            kc = kb - 1                        # the newest span lists kb already
        else:
            return False
        x = tail if merge else BlockSpan(C, lo, hi)
        if ka <= kc and not self._idx.claim(C.hs[ka:kc + 1], x):
            return False
        # the claimed segments are listed by no other span, so the drops leave them alone
        if short > 0:
            self._pop_front(short)
            self._free = 0
        else:
            self._free = free - a
        self._offloaded += a
        self._version += a
        self._kept += a
        if merge:
            tail.lo = lo                       # right below the newest span: it leaves next
        else:
            self._lru.append(x)
        return True

    # -- prefix blocks ---------------------------------------------------------------------
    def offload_blocks(self, C: BlockChain, lo: int, hi: int) -> None:
        """Keep evicted GPU prefix blocks ``hi-1, …, lo`` of chain ``C`` (GPU → host copy,
        overlapped with compute: not timed), exactly as ``hi - lo`` single-block offloads in
        that order.

        Applied at the next :meth:`flush` (the next read of the tier): an offload that
        continues the one queued before it, right below it in the same chain (the GPU evicts
        a span from the top, piece by piece), joins it, so the run goes in once."""
        p = self._pending             # (offload_runs of one run, inline: a hot path)
        if p:
            last = p[-1]
            if last[1] == hi and last[0] is C:
                last[1] = lo
                return
        p.append([C, lo, hi])

    def offload_runs(self, runs: list[tuple[BlockChain, int, int]]) -> None:
        """:meth:`offload_blocks` of each ``(chain, lo, hi)`` of ``runs`` in turn (the pieces
        :meth:`SpanLRU.pop_oldest` returns)."""
        p = self._pending
        for C, lo, hi in runs:
            if p:
                last = p[-1]
                if last[1] == hi and last[0] is C:
                    last[1] = lo
                    continue
            p.append([C, lo, hi])

    def _offload_now(self, C: BlockChain, lo: int, hi: int) -> None:
        """:meth:`offload_blocks`, applied."""
        idx = self._idx
        st = C.step
        if st:
            # fast path: no kept span meets the segments, but for the newest span when it
            # continues right above (the GPU evicts a span top down, piece by piece)
            kb = (hi - 1) // st
            if self._claim_insert(C, lo, hi, lo // st, kb, idx.d.get(C.hs[kb])):
                return
        if idx.next_held(C, lo, hi) == hi:
            self._insert(C, lo, hi)
            return
        pos = hi
        while pos > lo:
            x = idx.find(C, C.seg(pos - 1), pos - 1)
            if x is not None:                  # kept already: becomes most recently used
                q = common_start(C, x.chain, x.lo if x.lo > lo else lo, pos)
                idx.cut(self._lru, x, q, pos)
                self._kept -= pos - q
                self._append(C, q, pos)
            else:
                q = idx.prev_held(C, lo, pos)
                self._insert(C, q, pos)
            pos = q

    def present_end(self, C: BlockChain, pos: int, end: int) -> int:
        """The first block in ``[pos, end)`` of ``C`` that is not kept, else ``end``."""
        self.flush()
        return self._idx.covered_end(C, pos, end)

    def take_blocks(self, C: BlockChain, lo: int, hi: int) -> None:
        """Blocks ``[lo, hi)`` of ``C`` (all kept) are loaded back to the GPU: they leave."""
        self.flush()
        idx = self._idx
        pos = lo
        while pos < hi:
            x = idx.find(C, C.seg(pos), pos)
            assert x is not None
            e = common_end(C, x.chain, pos, x.hi if x.hi < hi else hi)
            idx.cut(self._lru, x, pos, e)
            pos = e
        n = hi - lo
        self._kept -= n
        self._free += n
        self.blocks_loaded += n
        self._version += n

    def prefix_keys(self) -> list[tuple[Any, int]]:
        """Offloaded blocks ``(h, j)``, least recently used first (tests and checks)."""
        self.flush()
        return [key for x in self._lru for key in x.keys()]

    # single blocks: block (key, 0)
    def offload(self, key: Any) -> bool:
        """Keep one evicted prefix block; False when there is no room (the tier is full of
        swapped requests)."""
        if not self.has(key) and self._free == 0 and not self._kept:      # (has flushes)
            return False
        self.offload_blocks(BlockChain.single(key), 0, 1)
        return True

    def has(self, key: Any) -> bool:
        return self.present_end(BlockChain.single(key), 0, 1) == 1

    def take(self, key: Any) -> None:
        """A prefix block is loaded back to the GPU: it leaves the host tier."""
        self.take_blocks(BlockChain.single(key), 0, 1)

    def check(self) -> None:
        self.flush()
        used = sum(self.swapped.values()) + self._kept
        if not 0 <= self._free <= self.num_blocks or \
                used != self.num_blocks - self._free:
            raise AssertionError(f"host KV tier out of balance: free={self._free} "
                                 f"used={used} capacity={self.num_blocks}")
        spans = list(self._lru)
        kept = sum(x.hi - x.lo for x in spans)
        if kept != self._kept:
            raise AssertionError(f"host tier keeps {kept} prefix blocks, counted "
                                 f"{self._kept}")
        check_spans(self._idx, spans)


def host_tier_for(swap_space_bytes: float, block_bytes_per_gpu: float, num_gpus: int,
                  host_link: Any, block_size: int, num_engines: int = 1) -> Optional[HostKVTier]:
    """The host tier of one virtual engine of a replica, or None without swap space.

    A block takes ``block_bytes_per_gpu`` on each of the ``num_gpus`` GPUs of the replica, so
    its host copy takes ``block_bytes_per_gpu · num_gpus`` bytes (an upper bound with unequal
    pipeline stages); the replica's ``swap_space_bytes`` is split evenly over ``num_engines``
    (pipeline virtual engines). Transfers run on every GPU's host link in parallel."""
    if swap_space_bytes <= 0:
        return None
    blocks = int(swap_space_bytes // (block_bytes_per_gpu * num_gpus)) // num_engines
    return HostKVTier(blocks, block_size, block_bytes_per_gpu / host_link.bandwidth_bytes_per_s,
                      host_link.latency_s)
