"""The prefix cache's chained block keys and its span index's shared-entry count.

- ``chain_hashes``: key ``k`` depends on ids ``0 … k`` only, so equal id prefixes give equal
  keys and different ones different keys (hypothesis, ids of any size and sign, and other
  hashable ids); keys are ints in ``[0, 2^62)``; the compiled and the pure build compute the
  same values; an int id below ``2^61 - 1`` (read natively when compiled) gives the key its
  ``hash`` gives.
- ``prefix_block_keys`` and ``prefix_block_chain`` agree (also for ids that do not divide the
  block size), and chains of one step and length share their ``los``.
- ``SpanIndex.lists`` counts the shared (list) entries; a detach deletes unshared entries
  directly and keeps the count through shared ones (``check_spans`` verifies it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import llmsim
from llmsim.memory.prefix import prefix_block_keys
from llmsim.memory.prefix_spans import (BlockChain, BlockSpan, SpanIndex, chain_hashes,
                                        check_spans, prefix_block_chain)

ROOT = Path(__file__).resolve().parent.parent

_ids = st.one_of(st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                 st.integers(min_value=0, max_value=50), st.text(max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.lists(_ids, max_size=12), st.lists(_ids, max_size=12), st.lists(_ids, max_size=12))
def test_equal_prefixes_give_equal_keys(common, a, b):
    ka = chain_hashes(common + a, len(common + a))
    kb = chain_hashes(common + b, len(common + b))
    assert ka[:len(common)] == kb[:len(common)]
    for k in range(len(common), min(len(ka), len(kb))):
        ids_a, ids_b = (common + a)[:k + 1], (common + b)[:k + 1]
        same = [hash(x) for x in ids_a] == [hash(x) for x in ids_b]
        assert (ka[k] == kb[k]) == same
    assert all(type(h) is int and 0 <= h < 2 ** 62 for h in ka + kb)


def test_native_int_path_is_hash():
    """Ids read natively (ints ``0 <= x < 2^61 - 1``) key as their ``hash`` does."""
    for x in (0, 1, 7, 2 ** 31, 2 ** 61 - 2):
        assert chain_hashes([5, x], 2) == chain_hashes([5, _Hashed(hash(x))], 2)
    # around the modulus and negative: through hash()
    assert chain_hashes([2 ** 61 - 1], 1) == chain_hashes([0], 1)
    assert chain_hashes([-1], 1) == chain_hashes([-2], 1)          # hash(-1) == hash(-2)
    assert chain_hashes([-3], 1) != chain_hashes([3], 1)
    assert chain_hashes((1, 2, 3), 2) == chain_hashes([1, 2, 3], 2)  # any sequence


class _Hashed:
    """An id whose ``hash`` is ``h`` (not an int: it takes the generic path)."""

    def __init__(self, h: int) -> None:
        self.h = h

    def __hash__(self) -> int:
        return self.h


_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import llmsim
from llmsim.memory.prefix_spans import chain_hashes
ids = [0, 1, 2 ** 61 - 2, 2 ** 61 - 1, 2 ** 61, -1, -5, 10 ** 30, -(10 ** 30), True, 2 ** 64 + 3,
       "abc", (1, 2)] + list(range(1000, 1100))
print(json.dumps([llmsim.BUILD, chain_hashes(ids, len(ids))]))
"""


def test_compiled_and_pure_keys_are_equal():
    out = {}
    for pure in ("0", "1"):
        env = dict(os.environ, LLMSIM_PURE=pure, PYTHONHASHSEED="0")
        done = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT)], env=env,
                              capture_output=True, text=True, check=True)
        out[pure] = json.loads(done.stdout)
    assert out["1"][0] == "source"
    assert out["0"][0] == llmsim.BUILD or llmsim.BUILD == "source"
    assert out["0"][1] == out["1"][1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=10), st.sampled_from([4, 8, 12, 6]),
       st.integers(1, 100), st.sampled_from([4, 8]))
def test_chain_and_keys_agree(ids, H, prompt, bs):
    C = prefix_block_chain(ids, H, prompt, bs)
    keys = prefix_block_keys(ids, H, prompt, bs)
    assert C.end == len(keys)
    assert [C.key(j) for j in range(C.end)] == keys


def test_chains_share_their_los():
    a = prefix_block_chain([1, 2, 3], 8, 48, 4)
    b = prefix_block_chain([4, 5, 6], 8, 48, 4)
    assert a.los is b.los and a.los == [0, 2, 4, 6]
    assert prefix_block_chain([1, 2], 8, 48, 4).los == [0, 2, 4]


def test_span_index_counts_shared_entries():
    C = prefix_block_chain(list(range(4)), 8, 32, 4)      # 8 blocks, 2 per segment
    idx = SpanIndex()
    x = BlockSpan(C, 0, 3)                                # segments 0, 1
    y = BlockSpan(C, 3, 6)                                # segments 1, 2: shares segment 1
    idx.attach(x, 0, 3)
    idx.attach(y, 3, 6)
    assert idx.lists == 1
    check_spans(idx, [x, y])
    x.hi = 2                                              # block 2 leaves x
    idx.detach(x, 2, 3)
    assert idx.lists == 0 and idx.d[C.hs[1]] is y
    check_spans(idx, [x, y])
    x.hi = 0
    idx.detach(x, 0, 2)                                   # unshared: deleted directly
    y.hi = 3
    idx.detach(y, 3, 6)
    assert idx.d == {} and idx.lists == 0
    z = BlockSpan(BlockChain.single("k"), 0, 1)
    idx.attach(z, 0, 1)
    check_spans(idx, [z])
    idx.lists = 1                                         # a stale count is reported
    try:
        check_spans(idx, [z])
    except AssertionError as exc:
        assert "shared entries" in str(exc)
    else:
        raise AssertionError("check_spans missed a stale count")
