"""Plans of exact macro-steps: runs of decode steps whose batch changes only at known steps
(plain Python, no SimPy).

A :class:`DecodeRunPlan` holds the steps of a run that starts with the step the scheduler just
scheduled (step 1, from ``now`` to ``t1``) and continues with decode-only steps, as single
stepping would run them with nothing admitted in between: ``end(i)`` is the end of step ``i``
(``end(0) = now``), ``dur(i)`` its duration, ``fin_steps`` the sorted steps ``i`` after which
some request finishes (only those with a later planned step). The steps are kept as segments of
one line each, not one float per step (see the class).

Decode step ``i + 1`` is evaluated with ``pieces_of(nd)`` (``CostModel.decode_step_pieces``,
the decode step time as pieces of one line each) at the context sum left after step ``i``'s
finishers: between two finishes the context sum grows by ``nd`` per step, so a segment that stays
within one piece is one line ``a + b·j`` (one segment of the plan; its step ends a running sum).
Planning stops — for good (``open`` becomes False) — after the step that ends at or past
``limit_s`` (timeline sample, horizon), before a step whose block needs would not fit without
preemption, when every decoder has finished, and, unless ``span`` (nothing is waiting that a
finish could let in), at the step in which the next request finishes or crosses the sliding
window. The free blocks left after the planned steps are tracked (a lower bound: finishers' frees
are not counted), so the planned steps never preempt; :meth:`take_blocks` takes blocks reserved
meanwhile off that count. Otherwise it stops after the steps asked for and :meth:`extend` plans
more later, the same steps as if they had been planned at once (their times may differ in the
last bit: a segment cut where a call ends starts its line ``A + B·c`` again from the next step's
context sum, so how far each call plans is part of the result): the engine plans about as far
as the next arrival is likely to cut the run, so little planning is wasted.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from llmsim.scheduling.base import Scheduler, SeqState

INF = float("inf")
DECODE = 1      # SeqState.phase of a decoder (llmsim.scheduling.base.DECODE)


def blocks_reserved(pc: list[int], r: int, n: int) -> int:
    """Blocks that ``n`` consecutive decode steps reserve when the first reserves at phase
    ``r``: step ``i`` takes ``pc[(r + i) % len(pc)]`` (decoders per block-boundary phase, see
    ``Scheduler._reserve_decode_blocks``)."""
    # index loops over the list, not sum() of slices: compiled, they add machine ints without
    # building slices (≈ 2,000 → ≈ 300 instructions per call at block_size 16)
    bs = len(pc)
    full = n // bs
    e = r + n % bs
    part = 0
    if e <= bs:
        for i in range(r, e):
            part += pc[i]
    else:
        for i in range(r, bs):
            part += pc[i]
        for i in range(e - bs):
            part += pc[i]
    if not full:
        return part
    total = 0
    for i in range(bs):
        total += pc[i]
    return full * total + part


# Binary searches typed for the compiled build: there a call to ``bisect`` goes through the
# generic call protocol (keyword arguments parsed, ≈ 300 instructions before the search) and, on
# the finish list, compares tuples element by element; these loops compare machine values.
# Each returns what the ``bisect`` call named in its docstring returns (same loop, same result).

def first_key_after(fl: list[tuple[int, int, SeqState]], key: int, lo: int) -> int:
    """``bisect_right(fl, (key, INF), lo)`` on a finish list sorted by key: the first index
    from ``lo`` on whose entry's key exceeds ``key``."""
    hi = len(fl)
    while lo < hi:
        mid = (lo + hi) // 2
        if key < fl[mid][0]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def first_entry_at(fl: list[tuple[int, int, SeqState]], key: int, seq: int) -> int:
    """``bisect_left(fl, (key, seq))`` on a finish list sorted by ``(key, seq)``: the first
    index whose entry's ``(key, seq)`` is not less than the pair given."""
    lo = 0
    hi = len(fl)
    while lo < hi:
        mid = (lo + hi) // 2
        e = fl[mid]
        k = e[0]
        if k < key or (k == key and e[1] < seq):
            lo = mid + 1
        else:
            hi = mid
    return lo


def bisect_right_float(a: list[float], x: float, lo: int, hi: int) -> int:
    """``bisect.bisect_right(a, x, lo, hi)`` on a sorted list of floats."""
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def bisect_left_float(a: list[float], x: float, lo: int, hi: int) -> int:
    """``bisect.bisect_left(a, x, lo, hi)`` on a sorted list of floats."""
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def bisect_right_int(a: list[int], x: int, lo: int) -> int:
    """``bisect.bisect_right(a, x, lo)`` on a sorted list of ints."""
    hi = len(a)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


class DecodeRunPlan:
    """The steps of a planned macro-step, kept as *segments* of one line each (no list of step
    times: a float per step would be boxed and appended, ≈ 100 instructions, where the sum of
    a segment's line is a machine loop of a few).

    Steps are numbered from 1: step 1 is the step just scheduled (from ``now`` to ``t1``),
    steps ``2 .. num_steps`` the decode-only steps planned after it. Segment ``s`` holds steps
    ``seg_i[s] .. seg_i[s+1] - 1`` (the last one up to ``num_steps``); step ``seg_i[s] + j``
    lasts ``seg_a[s] + seg_b[s]·j`` and ends at ``seg_t[s]`` plus the durations of the
    segment's steps up to it, added one by one from ``j = 0`` (the float sums single stepping
    makes, in its order: :meth:`end` and the planning loop add them the same way).
    :meth:`end` and :meth:`dur` read step ``i``'s end and duration, :meth:`first_end_at_least`
    and :meth:`first_end_after` are ``bisect_left`` / ``bisect_right`` over the step ends
    ``end(0) = now, end(1), … end(num_steps)``."""
    fin_steps: list[int]
    open: bool
    now: float
    t1: float
    num_steps: int
    t_last: float
    seg_i: list[int]
    seg_t: list[float]
    seg_a: list[float]
    seg_b: list[float]
    _ci: int
    _ct: float
    _cs: int
    _sched: Scheduler
    _pieces_of: Callable[[int], Any]
    _limit_s: float
    _span: bool
    _D0: int
    _Di: int
    _nd: int
    _K: int
    _free: int
    _pieces: tuple[tuple[float, float, float], ...]
    _upto: int
    _fins: list[tuple[int, int, SeqState]]
    _fi: int

    def __init__(self, sched: Scheduler, now: float, t1: float, limit_s: float,
                 pieces_of: Callable[[int], Any], span: bool) -> None:
        self.now = now
        self.t1 = t1
        self.num_steps = 1
        self.t_last = t1
        self.seg_i = []
        self.seg_t = []
        self.seg_a = []
        self.seg_b = []
        self._ci = 0                     # cursor of end(): step _ci (0: none) of segment
        self._ct = 0.0                   # _cs ends at _ct
        self._cs = 0
        self.fin_steps = []
        self._sched = sched
        self._pieces_of = pieces_of
        self._limit_s = limit_s
        self.open = False
        self._span = False
        self._D0 = self._Di = self._nd = self._K = self._free = self._upto = self._fi = 0
        self._pieces = ()
        self._fins = []
        fl = sched._finish_list      # (key, seq, SeqState) sorted by key
        while fl and not (fl[0][2].active and fl[0][2].phase == DECODE):
            fl.pop(0)
        if not fl or sched.n_capped or sched.swapped or t1 >= limit_s:
            return
        self._D0 = D0 = sched.D
        self._Di = D0 + 1                # D at which the next planned step is scheduled
        self._nd = sched.nd
        self._K = sched.K
        self._free = sched.kv.num_free_blocks
        self._pieces = pieces_of(sched.nd)
        # self._fins: finish-list entries in key order, up to _upto
        self._fi = 0
        self._span = span and sched.spans_finishes and sched.window is None
        if self._span:
            self._upto = self._Di - 1    # finishers with keys up to here are in _fins
        else:
            # no finish inside the run: it ends with the step that reaches the next finish
            # (or sliding-window crossing) key, scheduled at that key − 1
            key = fl[0][0]
            if sched.window is not None:
                wh = sched._window_heap
                while wh and not (wh[0][2].active and wh[0][2].phase == DECODE
                                  and not wh[0][2].capped):
                    heapq.heappop(wh)
                if wh and wh[0][0] < key:
                    key = wh[0][0]
            self._upto = key - 1          # last D at which a step may be scheduled
        self.open = True

    # -- reading the steps ---------------------------------------------------------------------
    def segment_of(self, i: int) -> int:
        """The segment holding step ``i`` (2 ≤ i ≤ num_steps)."""
        si = self.seg_i
        last = len(si) - 1
        if si[last] <= i:               # (most reads are in the last segment)
            return last
        return bisect_right_int(si, i, 0) - 1

    def dur(self, i: int) -> float:
        """Duration of step ``i`` (1 ≤ i ≤ num_steps)."""
        if i <= 1:
            return self.t1 - self.now
        s = self.segment_of(i)
        return self.seg_a[s] + self.seg_b[s] * (i - self.seg_i[s])

    def end(self, i: int) -> float:
        """End of step ``i`` (0 ≤ i ≤ num_steps; ``end(0)`` is ``now``). Walks the segment
        from its start, or from the last step read when that one is in the same segment and
        not after ``i`` (the engine reads the steps mostly in order)."""
        if i <= 1:
            return self.now if i <= 0 else self.t1
        if i == self.num_steps:
            return self.t_last
        si = self.seg_i
        s = self._cs
        ci = self._ci
        if ci and ci <= i and (s + 1 == len(si) or i < si[s + 1]):
            t = self._ct
            j = ci - si[s] + 1           # the next step to add
        else:
            s = self.segment_of(i)
            t = self.seg_t[s]
            j = 0
        a = self.seg_a[s]
        b = self.seg_b[s]
        last = i - si[s]
        while j <= last:
            t += a + b * j
            j += 1
        self._ci = i
        self._ct = t
        self._cs = s
        return t

    def first_end_at_least(self, x: float, lo: int, hi: int) -> int:
        """``bisect_left`` of ``x`` in the step ends, within ``[lo, hi]`` (``hi`` when no end
        in ``[lo, hi)`` reaches ``x``; ``hi`` ≤ num_steps + 1)."""
        i = self._first_end(x, False)
        return lo if i < lo else (hi if i > hi else i)

    def first_end_after(self, x: float, lo: int, hi: int) -> int:
        """``bisect_right`` of ``x`` in the step ends, within ``[lo, hi]``."""
        i = self._first_end(x, True)
        return lo if i < lo else (hi if i > hi else i)

    def _first_end(self, x: float, strict: bool) -> int:
        """The first step ``i`` in ``0 .. num_steps`` whose end is at least ``x`` (above it
        when ``strict``), ``num_steps + 1`` if none (the ends never decrease)."""
        if (self.now > x) if strict else (self.now >= x):
            return 0
        if (self.t1 > x) if strict else (self.t1 >= x):
            return 1
        si = self.seg_i
        st = self.seg_t
        n_seg = len(si)
        if not n_seg:
            return 2
        # the last segment that starts below x (at or below x when strict): seg_t[0] = t1
        s = (bisect_right_float(st, x, 0, n_seg) if strict
             else bisect_left_float(st, x, 0, n_seg)) - 1
        i0 = si[s]
        n = (si[s + 1] if s + 1 < n_seg else self.num_steps + 1) - i0
        a = self.seg_a[s]
        b = self.seg_b[s]
        ci = self._ci
        if self._cs == s and ci and ((self._ct <= x) if strict else (self._ct < x)):
            t = self._ct                 # the cursor's step ends before x: go on from it
            j = ci - i0 + 1
        else:
            t = st[s]
            j = 0
        while j < n:
            t += a + b * j
            if (t > x) if strict else (t >= x):
                self._ci = i0 + j
                self._ct = t
                self._cs = s
                return i0 + j
            j += 1
        return i0 + n

    def take_blocks(self, n: int) -> bool:
        """``n`` free blocks were taken during the run (a context reserved its room at a step
        boundary). Returns whether every planned step still fits for sure; if not, the plan
        plans no more."""
        self._free -= n
        if self._free < 0:
            self.open = False
            return False
        return True

    def extend(self, n: int) -> None:
        """Plan up to ``n`` more steps (none once the plan has stopped for good)."""
        if not self.open or n <= 0:
            return
        sched = self._sched
        Di = self._Di
        Dcap = Di + n
        fins = self._fins
        if self._span:
            # finishers of the new steps' predecessors: a slice of the sorted finish list
            # (which keeps them: the scheduler removes them when it applies their step)
            upto = Dcap - 1
            if upto > self._upto:
                fl = sched._finish_list
                lo = first_key_after(fl, self._upto, 0)
                hi = first_key_after(fl, upto, lo)
                if hi > lo:
                    for e in fl[lo:hi]:
                        st = e[2]
                        if st.active and st.phase == DECODE:
                            fins.append(e)
                self._upto = upto
        elif Dcap > self._upto + 1:
            Dcap = self._upto + 1
        kv = sched.kv
        pc = sched._phase_count
        bs = sched.block_size
        nd = self._nd
        K = self._K
        free = self._free
        # every decoder needs one block per block_size steps: check step by step only when
        # the window's worst case may not fit
        grows = kv.decode_grows and free < ((Dcap - Di) // bs + 1) * nd
        pieces = self._pieces
        npieces = len(pieces)
        D0 = self._D0
        fin_steps = self.fin_steps
        nf = len(fins)
        fi = self._fi
        nxt = fins[fi][0] if fi < nf else -1
        seg_i = self.seg_i
        seg_t = self.seg_t
        seg_a = self.seg_a
        seg_b = self.seg_b
        ns = self.num_steps
        limit_s = self._limit_s
        t = self.t_last
        stop = False
        while Di < Dcap:
            if nxt == Di:
                fin_steps.append(Di - D0)
                while fi < nf and fins[fi][0] == Di:
                    st = fins[fi][2]
                    nd -= 1
                    K -= st.c0 - st.d0
                    fi += 1
                nxt = fins[fi][0] if fi < nf else -1
                if not nd:
                    stop = True
                    break
                pieces = self._pieces = self._pieces_of(nd)
                npieces = len(pieces)
            # steps scheduled at Di .. De - 1 have the same batch: the context sum of step
            # Di + j is c0 + nd·j; its time is the piece of the decode line holding it
            De = nxt if Di < nxt < Dcap else Dcap
            n = De - Di
            c0 = K + nd * Di
            p = npieces - 1
            while pieces[p][0] > c0:
                p -= 1
            if p + 1 == npieces or pieces[p + 1][0] > c0 + nd * (n - 1):
                # one line all along the segment: one segment of the plan
                _, A, B = pieces[p]
                a = A + B * c0
                b = B * nd
                if grows:
                    for j in range(n):
                        free -= pc[(Di + j) % bs]
                        if free < 0:
                            n = j
                            stop = True
                            break
                if n:
                    seg_i.append(ns + 1)
                    seg_t.append(t)
                    seg_a.append(a)
                    seg_b.append(b)
                    for j in range(n):     # (compiled: a machine loop)
                        t += a + b * j
                        if t >= limit_s:   # stop after the step that reaches the limit
                            ns += j + 1
                            Di += j + 1
                            stop = True
                            break
                    if t >= limit_s:
                        break
                    ns += n
                Di += n
                if stop:
                    break
                continue
            for j in range(n):             # the segment crosses pieces: step by step
                if grows:
                    free -= pc[(Di + j) % bs]
                    if free < 0:
                        Di += j
                        stop = True
                        break
                c = c0 + nd * j
                d = max([A + B * c for _, A, B in pieces])
                ns += 1                    # a segment of one step (d + 0.0 == d)
                seg_i.append(ns)
                seg_t.append(t)
                seg_a.append(d)
                seg_b.append(0.0)
                t += d
                if t >= limit_s:
                    Di += j + 1
                    stop = True
                    break
            else:
                Di = De
            if stop:
                break
        if not self._span and Di > self._upto:
            stop = True
        if kv.decode_grows and not grows and Di > self._Di:
            # the blocks the steps just planned take (finishers' frees not counted)
            free -= blocks_reserved(pc, self._Di % bs, Di - self._Di)
        self._Di = Di
        self._nd = nd
        self._K = K
        self._free = free
        self._fi = fi
        self.num_steps = ns
        self.t_last = t
        if stop:
            self.open = False
        if fin_steps and fin_steps[-1] >= ns:
            fin_steps.pop()       # finishers after the last planned step: the run's end
