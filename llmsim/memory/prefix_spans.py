"""Runs of prefix-cache blocks (plain Python): the data structures behind
:class:`~llmsim.memory.prefix.PrefixCachingKVCacheManager`.

A prompt's block keys form a :class:`BlockChain` (one chained hash per segment of blocks that
share an id); a :class:`BlockSpan` holds blocks ``lo … hi-1`` of one chain with one reference
count; :class:`SpanLRU` is the eviction order of unreferenced spans; a :class:`SpanIndex` finds
the spans holding a segment. ``check_spans`` verifies them (invariant checks).
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Any, Final, Iterator, Optional, Union

from mypy_extensions import i64

# -- block chains ---------------------------------------------------------------------------
class BlockChain:
    """The block keys of one prompt: block ``j`` is ``(hs[k], j)``, ``k`` the segment holding
    it. Segment ``k`` (an id that holds the last token of at least one block) covers blocks
    ``los[k] … los[k+1]-1`` — its whole id, also past the prompt — and the prompt has ``end``
    keyed blocks. Chains of the same ``geo`` (id size) cut blocks into the same segments;
    ``step`` is the blocks per segment when that is constant (else 0). ``hs`` holds ints
    (chained hashes, :func:`chain_hashes`), or any hashable key for :meth:`single`. ``hs`` and
    ``los`` are read only (chains of one ``step`` and length share their ``los``)."""
    __slots__ = ("hs", "los", "end", "step", "geo")

    def __init__(self, hs: list[Any], los: list[int], end: int, step: int,
                 geo: Optional[int]) -> None:
        self.hs = hs
        self.los = los
        self.end = end
        self.step = step
        self.geo = geo

    @classmethod
    def single(cls, key: Any) -> "BlockChain":
        """A one-block chain: block 0 is ``(key, 0)``."""
        return cls([key], [0, 1], 1, 1, None)

    def seg(self, j: int) -> int:
        st = self.step
        return j // st if st else bisect_right(self.los, j) - 1

    def seg_range(self, a: int, b: int) -> tuple[int, int]:
        """Segments ``(ka, kb)`` holding blocks ``a`` and ``b - 1``."""
        st = self.step
        if st:
            return a // st, (b - 1) // st
        return bisect_right(self.los, a) - 1, bisect_right(self.los, b - 1) - 1

    def key(self, j: int) -> tuple[Any, int]:
        return self.hs[self.seg(j)], j


_EMPTY: Final = BlockChain([], [0], 0, 1, None)


#: the chained key's two lanes: primes below 2^31 (so a lane times its multiplier plus an id
#: residue stays below 2^63: native i64 arithmetic never overflows) and their multipliers
_P1: Final = 2147483647          # 2^31 - 1
_P2: Final = 2147483629          # the largest prime below it
_M1: Final = 1686629713
_M2: Final = 1327217885
#: ``sys.hash_info.modulus``: ``hash(x) == x`` for the ints ``0 <= x < _HASH_MOD``
_HASH_MOD: Final = 2305843009213693951


def chain_hashes(hash_ids: Any, n: int) -> list[Any]:
    """The chained keys of the first ``n`` ids of ``hash_ids``: key ``k`` is a function of ids
    ``0 … k`` only, so equal id prefixes give equal keys, and different ones differ but with a
    probability of about ``k / 2^62`` per pair.

    Each id is reduced to ``r = hash(id)`` (ints of any size and sign, or any hashable id;
    ``hash`` of an int is exact below ``2^61 - 1`` and the reduction mod that prime above it),
    then two polynomial lanes ``h_i = (h_i · M_i + (r mod P_i) + 1) mod P_i`` (``P_i`` primes
    near ``2^31``: the pair of residues determines ``r``) make the key ``h_1 · 2^31 + h_2``, an
    int in ``[0, 2^62)``. Computed in native machine integers when compiled (no int64
    overflow: every intermediate is below ``2^63``) and as plain ints in the pure build: the
    same values. (Speed: a ``hash((h, id))`` chain builds, hashes and frees a tuple and boxes
    its hash, ≈ 1,000 instructions per id compiled; this is ≈ 100.)"""
    out: list[Any] = []
    if n <= 0:
        return out
    ids: list[Any] = hash_ids if type(hash_ids) is list else list(hash_ids[:n])
    h1: i64 = 0
    h2: i64 = 0
    for i in range(n):
        x = ids[i]
        if isinstance(x, int) and 0 <= x < _HASH_MOD:
            r: i64 = i64(x)           # == hash(x), without the generic call
        else:
            r = i64(hash(x))
        h1 = (h1 * _M1 + r % _P1 + 1) % _P1
        h2 = (h2 * _M2 + r % _P2 + 1) % _P2
        out.append(h1 * 2147483648 + h2)
    return out


#: ``step`` → ``n`` → ``[k · step for k in range(n + 1)]``: the ``los`` of the chains with
#: ``n`` segments of ``step`` blocks, shared by them (no one changes a chain's ``los``): built
#: once instead of per prompt (≈ 400 instructions per segment compiled); up to ``n`` =
#: :data:`_LOS_CACHE_MAX` (the longer ones are built each time)
_LOS_CACHE: Final[dict[int, dict[int, list[int]]]] = {}
_LOS_CACHE_MAX: Final = 4096


def _step_los(step: int, n: int) -> list[int]:
    """``[k · step for k in range(n + 1)]``, shared (read only)."""
    by_n = _LOS_CACHE.get(step)
    if by_n is None:
        by_n = _LOS_CACHE[step] = {}
    los = by_n.get(n)
    if los is None:
        los = [k * step for k in range(n + 1)]
        if n <= _LOS_CACHE_MAX:
            by_n[n] = los
    return los


def prefix_block_chain(hash_ids: Any, hash_block_tokens: int, num_prompt_tokens: int,
                       block_size: int) -> BlockChain:
    """The keys of :func:`~llmsim.memory.prefix.prefix_block_keys` as a :class:`BlockChain`
    (segment hashes from :func:`chain_hashes`)."""
    nfull = num_prompt_tokens // block_size
    if not hash_ids or not hash_block_tokens or not nfull:
        return _EMPTY
    H = int(hash_block_tokens)
    if H % block_size == 0:
        step = H // block_size
        n = min(len(hash_ids), -(-nfull // step))
        hs = chain_hashes(hash_ids, n)
        return BlockChain(hs, _step_los(step, n), min(nfull, n * step), step, H)
    # ids up to the first one starting at or after the last full block
    n = 0
    n_ids = len(hash_ids)
    while n < n_ids and n * H // block_size < nfull:
        n += 1
    every = chain_hashes(hash_ids, n)
    hs = []
    los: list[int] = []
    hi = 0
    for m in range(n):
        lo = m * H // block_size
        hi = (m + 1) * H // block_size
        if hi > lo:
            hs.append(every[m])
            los.append(lo)
    los.append(hi)
    return BlockChain(hs, los, min(nfull, hi), 0, H)


def common_end(C: BlockChain, D: BlockChain, a: int, b: int) -> int:
    """The largest ``e`` in ``[a, b]`` such that blocks ``a … e-1`` have the same keys in
    chains ``C`` and ``D`` (both cover them)."""
    if C is D:
        return b
    hc = C.hs
    hd = D.hs
    if C.geo == D.geo:
        ka, kb = C.seg_range(a, b)
        if hc[kb] == hd[kb] and (ka == kb or hc[ka:kb] == hd[ka:kb]):
            return b
        k = ka
        while hc[k] == hd[k]:
            k += 1
        e = C.los[k]
        return e if e > a else a
    j = a
    while j < b:
        kc = C.seg(j)
        kd = D.seg(j)
        if hc[kc] != hd[kd]:
            return j
        j = min(C.los[kc + 1], D.los[kd + 1], b)
    return b


def common_start(C: BlockChain, D: BlockChain, a: int, b: int) -> int:
    """The smallest ``q`` in ``[a, b]`` such that blocks ``q … b-1`` have the same keys in
    ``C`` and ``D``."""
    if C is D:
        return a
    hc = C.hs
    hd = D.hs
    if C.geo == D.geo:
        ka, kb = C.seg_range(a, b)
        if hc[ka:kb + 1] == hd[ka:kb + 1]:
            return a
        k = kb
        while hc[k] == hd[k]:
            k -= 1
        q = C.los[k + 1]
        return q if q > a else a
    j = b
    while j > a:
        kc = C.seg(j - 1)
        kd = D.seg(j - 1)
        if hc[kc] != hd[kd]:
            return j
        j = max(C.los[kc], D.los[kd], a)
    return a


#: ``dict.pop`` called as a function: compiled, ``d.pop(h)`` is a generic method call (it
#: looks the method up on every call: ≈ 470 instructions with the hash and the lookup) and
#: ``d[h]`` then ``del d[h]`` hash the (multi-digit int) key twice; a call of the method
#: descriptor hashes once and skips the lookup
_dict_pop: Final = dict.pop


# -- spans, their LRU and their index --------------------------------------------------------
class BlockSpan:
    """Blocks ``lo … hi-1`` of ``chain`` with one reference count ``ref``; ``prev``/``next``
    link it into a :class:`SpanLRU` (the unreferenced GPU spans; every host span).

    ``top`` is 0, or, once the span's highest blocks left its LRU while the rest stayed
    (:meth:`SpanLRU.pop_oldest`), the block its :class:`SpanIndex` entries still reach: they
    list the segments of blocks ``hi … top-1`` too, until the span leaves whole or
    :meth:`SpanIndex.settle` drops them (a span that leaves piece by piece leaves the index
    once). Readers of the index only trust ``lo … hi-1``."""
    __slots__ = ("chain", "lo", "hi", "ref", "prev", "next", "top")

    def __init__(self, chain: BlockChain, lo: int, hi: int, ref: int = 0) -> None:
        self.chain = chain
        self.lo = lo
        self.hi = hi
        self.ref = ref
        self.prev: Optional[BlockSpan] = None
        self.next: Optional[BlockSpan] = None
        self.top = 0

    def keys(self) -> list[tuple[Any, int]]:
        """Block keys ``(h, j)``, highest ``j`` first (the order they leave an LRU)."""
        C = self.chain
        return [C.key(j) for j in range(self.hi - 1, self.lo - 1, -1)]

    def __repr__(self) -> str:
        top = f", top={self.top}" if self.top else ""
        return f"BlockSpan({self.lo}, {self.hi}, ref={self.ref}{top})"


class SpanLRU:
    """Doubly linked spans, least recently used first (``head`` is a sentinel)."""
    __slots__ = ("head",)

    def __init__(self) -> None:
        s = BlockSpan(_EMPTY, 0, 0)
        s.prev = s.next = s
        self.head = s

    def __bool__(self) -> bool:
        return self.head.next is not self.head

    def __iter__(self) -> Iterator[BlockSpan]:
        s = self.head.next
        while s is not self.head:
            assert s is not None
            yield s
            s = s.next

    def append(self, s: BlockSpan) -> None:
        h = self.head
        last = h.prev
        assert last is not None
        last.next = s
        s.prev = last
        s.next = h
        h.prev = s

    def insert_after(self, x: BlockSpan, s: BlockSpan) -> None:
        n = x.next
        assert n is not None
        x.next = s
        s.prev = x
        s.next = n
        n.prev = s

    def unlink(self, s: BlockSpan) -> None:
        p = s.prev
        n = s.next
        assert p is not None and n is not None
        p.next = n
        n.prev = p
        s.prev = s.next = None

    def pop_oldest(self, n: int, idx: "SpanIndex") -> list[tuple[BlockChain, int, int]]:
        """Take the ``n`` least recently used blocks out (each span's top blocks first) and out
        of ``idx``; returns ``[(chain, lo, hi)]``, one per piece: blocks ``lo … hi-1`` of
        ``chain``. A span that leaves whole leaves ``idx``; one that keeps blocks keeps
        the piece's index entries too (lazily detached, see :class:`BlockSpan`). The caller
        lists at least ``n`` blocks."""
        head = self.head
        out = []
        while n:
            x = head.next
            assert x is not None
            hi = x.hi
            k = hi - x.lo
            if k > n:
                lo = x.hi = hi - n
                n = 0
                if not x.top:
                    x.top = hi
            else:                              # the whole span leaves
                lo = x.lo
                n -= k
                self.unlink(x)
                x.hi = lo
                top = x.top or hi
                x.top = 0
                idx.detach(x, lo, top)
            out.append((x.chain, lo, hi))
        return out


class SpanIndex:
    """Segment hash ``h`` → the span, or list of spans, holding blocks keyed ``h`` (or, until
    they are detached, that held some: see ``BlockSpan.top``). ``lists`` counts the entries
    that are lists (while there are none, every entry of a span's segments is the span: a
    detach then deletes them without reading them)."""
    __slots__ = ("d", "lists")

    def __init__(self) -> None:
        self.d: dict[Any, Union[BlockSpan, list[BlockSpan]]] = {}
        self.lists = 0

    def _segs(self, s: BlockSpan, a: int, b: int) -> tuple[int, int]:
        """Segments ``(ka, kb)`` of ``s.chain`` met by blocks ``[a, b)`` that ``s`` does not
        hold outside ``[a, b)`` (its extent ``s.lo … s.hi-1`` excludes or already includes the
        range); ``ka > kb`` when there are none."""
        C = s.chain
        st = C.step
        if st:                                 # segment k is blocks k·st … (k+1)·st - 1
            ka = a // st
            kb = (b - 1) // st
            if s.lo < a and ka * st < a:
                ka += 1
            if s.hi > b and (kb + 1) * st > b:
                kb -= 1
            return ka, kb
        los = C.los
        ka = bisect_right(los, a) - 1
        kb = bisect_right(los, b - 1) - 1
        if s.lo < a and los[ka] < a:
            ka += 1
        if s.hi > b and los[kb + 1] > b:
            kb -= 1
        return ka, kb

    def attach(self, s: BlockSpan, a: int, b: int) -> None:
        """``s`` (extent already updated) now holds blocks ``[a, b)`` too."""
        C = s.chain
        ka, kb = self._segs(s, a, b)
        d = self.d
        if ka == kb:
            h = C.hs[ka]
            v = d.setdefault(h, s)
            if v is not s:
                if isinstance(v, list):
                    v.append(s)
                else:
                    d[h] = [v, s]
                    self.lists += 1
            return
        # one pass: claim every free segment, share the ones other spans hold (a plain loop:
        # compiled, it calls the dict natively, cheaper than map() over a bound method)
        hs = C.hs
        for k in range(ka, kb + 1):
            h = hs[k]
            v = d.setdefault(h, s)
            if v is not s:
                if isinstance(v, list):
                    v.append(s)
                else:
                    d[h] = [v, s]
                    self.lists += 1

    def claim(self, hs: list[Any], s: BlockSpan) -> bool:
        """List ``s`` for every segment hash of ``hs`` if none of them is listed yet (one pass;
        the claims are undone when one is): True when ``s`` now holds them all."""
        d = self.d
        n = len(hs)
        # a plain loop (compiled, it calls the dict natively), which stops at the first listed
        # segment: the claims before it are undone, and so is any listing of ``s`` after it
        # (what claiming those too and undoing every claim of ``s`` would leave)
        for i in range(n):
            if d.setdefault(hs[i], s) is not s:
                for j in range(i):
                    del d[hs[j]]
                for j in range(i + 1, n):
                    if d.get(hs[j]) is s:
                        del d[hs[j]]
                return False
        return True

    def detach(self, s: BlockSpan, a: int, b: int) -> None:
        """``s`` (extent already updated) no longer holds blocks ``[a, b)``."""
        C = s.chain
        ka, kb = self._segs(s, a, b)
        d = self.d
        hs = C.hs
        if not self.lists:
            # no entry is shared, so each of these is ``s``: deleted unread (compiled, ``del``
            # is a direct dict call, ≈ 90 instructions less than the pop call below)
            for k in range(ka, kb + 1):
                del d[hs[k]]
            return
        # (a plain loop, see attach; each shared segment goes back right after its pop, which
        # leaves the dict as popping all first and putting the shared ones back in order)
        for k in range(ka, kb + 1):
            h = hs[k]
            v = _dict_pop(d, h)
            if v is not s:
                assert isinstance(v, list)
                v.remove(s)
                if len(v) == 1:
                    d[h] = v[0]
                    self.lists -= 1
                else:
                    d[h] = v

    def settle(self, x: BlockSpan) -> None:
        """Drop the index entries ``x`` (``x.top`` set) keeps for blocks it lost (``hi …
        top-1``, see :class:`BlockSpan`); needed before anything but
        :meth:`SpanLRU.pop_oldest` changes its extent."""
        top = x.top
        x.top = 0
        self.detach(x, x.hi, top)

    def find(self, C: BlockChain, k: int, j: int) -> Optional[BlockSpan]:
        """The span holding block ``j`` (segment ``k``) of ``C``, or None."""
        h = C.hs[k]
        v = self.d.get(h)
        if v is None:
            return None
        if isinstance(v, list):
            for x in v:
                if x.lo <= j < x.hi:
                    D = x.chain
                    if D is C or (D.hs[k] == h if D.geo == C.geo else D.hs[D.seg(j)] == h):
                        return x
            return None
        if v.lo <= j < v.hi:
            D = v.chain
            if D is C or (D.hs[k] == h if D.geo == C.geo else D.hs[D.seg(j)] == h):
                return v
        return None

    def _held(self, C: BlockChain, k: int, a: int, b: int) -> list[tuple[int, int]]:
        """Held sub-ranges ``(lo, hi)`` of blocks ``[a, b)`` of ``C`` in its segment ``k``."""
        h = C.hs[k]
        v = self.d.get(h)
        if v is None:
            return []
        lo_k = C.los[k]
        hi_k = C.los[k + 1]
        if a < lo_k:
            a = lo_k
        if b > hi_k:
            b = hi_k
        out = []
        for x in (v if isinstance(v, list) else [v]):
            D = x.chain
            if D.geo == C.geo:
                if k >= len(D.hs) or D.hs[k] != h:
                    continue
                lo, hi = a, b
            else:
                try:
                    kd = D.hs.index(h)
                except ValueError:
                    continue
                lo = max(a, D.los[kd])
                hi = min(b, D.los[kd + 1])
            if x.lo > lo:
                lo = x.lo
            if x.hi < hi:
                hi = x.hi
            if lo < hi:
                out.append((lo, hi))
        return out

    def next_held(self, C: BlockChain, a: int, b: int) -> int:
        """The first block in ``[a, b)`` of ``C`` that a span holds, else ``b``."""
        d = self.d
        if not d or a >= b:
            return b
        st = C.step
        if st:
            ka = a // st
            kb = (b - 1) // st
        else:
            ka, kb = C.seg_range(a, b)
        hs = C.hs
        if ka == kb:
            if hs[ka] not in d:
                return b
        elif d.keys().isdisjoint(hs[ka:kb + 1]):
            return b
        # some segments are listed: the first one holding a block of [a, b) decides
        los = C.los
        geo = C.geo
        for k in range(ka, kb + 1):
            h = hs[k]
            v = d.get(h)
            if v is None:
                continue
            if not isinstance(v, list):        # one span, same block grid (the common case)
                D = v.chain
                if D is C or (D.geo == geo and k < len(D.hs) and D.hs[k] == h):
                    lo = los[k]
                    if lo < a:
                        lo = a
                    if v.lo > lo:
                        lo = v.lo
                    hi = los[k + 1]
                    if hi > b:
                        hi = b
                    if v.hi < hi:
                        hi = v.hi
                    if lo < hi:
                        return lo
                    continue
            held = self._held(C, k, a, b)
            if held:
                return min(lo for lo, _ in held)
        return b

    def prev_held(self, C: BlockChain, a: int, b: int) -> int:
        """One past the last block in ``[a, b)`` of ``C`` that a span holds, else ``a``."""
        if not self.d or a >= b:
            return a
        for k in range(C.seg(b - 1), C.seg(a) - 1, -1):
            held = self._held(C, k, a, b)
            if held:
                return max(hi for _, hi in held)
        return a

    def covered_end(self, C: BlockChain, a: int, b: int) -> int:
        """The first block in ``[a, b)`` of ``C`` that no span holds, else ``b``."""
        while a < b:
            x = self.find(C, C.seg(a), a)
            if x is None:
                break
            a = common_end(C, x.chain, a, x.hi if x.hi < b else b)
        return a

    def cut(self, lru: Optional[SpanLRU], x: BlockSpan, a: int, b: int) -> None:
        """Drop blocks ``[a, b)`` from span ``x``; what is left keeps ``x``'s place in
        ``lru`` (None: ``x`` is not in one), the upper part leaving first."""
        if x.top:
            self.settle(x)
        lo = x.lo
        hi = x.hi
        if b < hi:
            x.lo = b
            if lo < a:
                low = BlockSpan(x.chain, lo, a, x.ref)
                self.detach(x, lo, b)
                self.attach(low, lo, a)
                if lru is not None:
                    lru.insert_after(x, low)
            else:
                self.detach(x, a, b)
        elif lo < a:
            x.hi = a
            self.detach(x, a, b)
        else:
            x.hi = a
            self.detach(x, a, b)
            if lru is not None:
                lru.unlink(x)

    def split_out(self, lru: Optional[SpanLRU], x: BlockSpan, a: int, b: int) -> BlockSpan:
        """The span of blocks ``[a, b)`` of ``x``, on its own and out of ``lru``."""
        if x.lo == a and x.hi == b:
            if x.top:
                self.settle(x)
            if lru is not None:
                lru.unlink(x)
            return x
        self.cut(lru, x, a, b)
        m = BlockSpan(x.chain, a, b, x.ref)
        self.attach(m, a, b)
        return m



def check_spans(idx: SpanIndex, spans: list[BlockSpan]) -> None:
    """``spans`` are well formed, ``idx`` lists exactly the segments each of them meets (up
    to block ``top`` for a span that lost its highest blocks, see :class:`BlockSpan`), and no
    block is held twice."""
    want: dict[Any, list[tuple[int, int, BlockSpan]]] = {}
    for x in spans:
        if x.lo >= x.hi or (x.top and x.top <= x.hi):
            raise AssertionError(f"empty span {x!r}, or its index entries end below it")
        C = x.chain
        los = C.los
        for k in range(C.seg(x.lo), C.seg((x.top or x.hi) - 1) + 1):
            want.setdefault(C.hs[k], []).append((max(x.lo, los[k]), min(x.hi, los[k + 1]), x))
    d = idx.d
    if len(d) != len(want):
        raise AssertionError("span index out of date")
    if idx.lists != sum(1 for v in d.values() if isinstance(v, list)):
        raise AssertionError("span index's count of shared entries out of date")
    for h, held in want.items():
        v = d.get(h)
        got: list[Any] = v if isinstance(v, list) else [v]
        if {id(x) for x in got} != {id(x) for _, _, x in held} or len(got) != len(held) or \
                (isinstance(v, list) and len(v) < 2):
            raise AssertionError(f"span index of segment {h} out of date")
        held = sorted((t for t in held if t[0] < t[1]), key=lambda t: t[0])
        for (_, hi, _), (lo, _, _) in zip(held, held[1:]):
            if lo < hi:
                raise AssertionError(f"blocks of segment {h} held twice")
