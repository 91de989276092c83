"""The typed binary searches of llmsim/scheduling/runs.py (written out for the compiled build)
return exactly what the ``bisect`` calls they replace return."""
from bisect import bisect_left, bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.scheduling.base import SeqState
from llmsim.workload.request import Request
from llmsim.scheduling.runs import (bisect_left_float, bisect_right_float, bisect_right_int,
                                    blocks_reserved, first_entry_at, first_key_after)

INF = float("inf")
# (the finish list's entries are (key, seq, SeqState); the compiled build checks the types)
keys = st.lists(st.integers(0, 30), max_size=40).map(sorted)


@settings(max_examples=300, deadline=None)
@given(keys, st.integers(-2, 32), st.data())
def test_finish_list_searches_equal_bisect(ks, key, data):
    st_ = SeqState(Request(0, 0.0, 1, 1))     # (never compared: the seqs are unique)
    fl = sorted((k, i, st_) for i, k in enumerate(ks))
    lo = data.draw(st.integers(0, len(fl)))
    assert first_key_after(fl, key, lo) == bisect_right(fl, (key, INF), lo)
    seq = data.draw(st.integers(-1, len(fl) + 1))
    assert first_entry_at(fl, key, seq) == bisect_left([e[:2] for e in fl], (key, seq))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), max_size=30).map(sorted),
       st.floats(-6, 6, allow_nan=False), st.data())
def test_float_and_int_bisects_equal_bisect(a, x, data):
    lo = data.draw(st.integers(0, len(a)))
    hi = data.draw(st.integers(lo, len(a)))
    assert bisect_right_float(a, x, lo, hi) == bisect_right(a, x, lo, hi)
    assert bisect_left_float(a, x, lo, hi) == bisect_left(a, x, lo, hi)
    ints = sorted(int(v) for v in a)
    assert bisect_right_int(ints, int(x), lo) == bisect_right(ints, int(x), lo)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=20), st.data())
def test_blocks_reserved_is_the_sum_over_the_steps(pc, data):
    r = data.draw(st.integers(0, len(pc) - 1))
    n = data.draw(st.integers(0, 3 * len(pc) + 2))
    assert blocks_reserved(pc, r, n) == sum(pc[(r + i) % len(pc)] for i in range(n))
