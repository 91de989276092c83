"""Fast paths of the Mooncake prefix-caching shape give what the general paths give.

- ``iter_jsonl`` parses a line with the C scanner directly when the value fills the line, and
  falls back to ``json.loads`` otherwise: records and errors are those of a ``json.loads`` per
  line (hypothesis, against the reference loop).
- The Mooncake reader checks ``hash_ids`` inline where the row passes; rows it cannot pass go
  through ``check_hash_ids`` (same errors).
- The token-budget schedulers allocate a running prefill's chunk without ``can_allocate``
  first (``allocate_slots`` is all or nothing): same outcome, one KV call.
- The prefix cache's eviction of the oldest span's top blocks (inline in ``_evict`` and the
  host tier's ``_pop_front``) leaves the state ``SpanLRU.pop_oldest`` leaves.
"""
from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import InputError
from llmsim.memory.host import HostKVTier
from llmsim.memory.prefix import PrefixCachingKVCacheManager
from llmsim.memory.prefix_spans import BlockSpan, SpanIndex, SpanLRU, prefix_block_chain
from llmsim.workload.readers.json_readers import MooncakeReader
from llmsim.workload.readers.jsonio import iter_jsonl


def _reference_jsonl(f):
    """``iter_jsonl`` before its fast path: one ``json.loads`` per non-blank line."""
    for lineno, line in enumerate(f, 1):
        if lineno == 1:
            line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except ValueError as exc:
            yield lineno, exc


def _norm(items):
    return [(n, ("error", type(x).__name__, str(x)) if isinstance(x, Exception) else ("ok", x))
            for n, x in items]


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.text(max_size=5)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=8)
_pads = st.sampled_from(["", "", " ", "\t", "  \t", "\u00a0", "\x0c"])
_ends = st.sampled_from(["\n", "\n", "\r\n", "", "\r"])
_line = st.one_of(
    st.builds(lambda a, v, b, e: a + json.dumps(v) + b + e, _pads, _values, _pads, _ends),
    st.builds(lambda t, e: t + e, st.sampled_from(
        ["", " ", "not json", "{", "[1, 2", '{"a": }', "1 2", "NaN", "-Infinity", "\ufeff{}",
         '{"a": 1} x', "[1,]", "01", '"\\ud800"', "{}{}", "tru"]), _ends))


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=6), st.booleans())
def test_iter_jsonl_matches_json_loads_per_line(lines, bom):
    text = ("\ufeff" if bom else "") + "".join(lines)
    # newline="" as the readers open files: "\r" and "\r\n" stay in the lines
    got = _norm(iter_jsonl(io.StringIO(text, newline="")))
    want = _norm(_reference_jsonl(io.StringIO(text, newline="")))
    assert got == want


def test_iter_jsonl_fast_path_edges():
    text = ('{"a": 1}\n  {"b": 2}\n{"c": 3}  \n\n{"d": 4}\r\n[1, 2]x\n7\n'
            '{"e": NaN}\n{"f": 1}')
    got = list(iter_jsonl(io.StringIO(text, newline="")))
    assert [n for n, _ in got] == [1, 2, 3, 5, 6, 7, 8, 9]
    assert [x for _, x in got if not isinstance(x, Exception)][:4] == \
        [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]
    assert isinstance(got[4][1], ValueError) and "Extra data" in str(got[4][1])
    assert got[5][1] == 7 and got[7][1] == {"f": 1}
    assert got[6][1]["e"] != got[6][1]["e"]          # NaN, as json.loads reads it


@pytest.mark.parametrize("ids, ok", [
    ("[1, 2]", True), ("[1]", True), ("[]", False), ("[1, 2, 3]", False), ("[1, true]", False),
    ("[1, 2.0]", False), ('[1, "2"]', False)])
def test_mooncake_inline_hash_id_check(tmp_path, ids, ok):
    p = tmp_path / "m.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 600, "output_length": 2, "hash_ids": %s}\n'
                 '{"timestamp": 1, "input_length": 10, "output_length": 2}\n' % ids)
    if ok:
        assert list(MooncakeReader(p))[0][3] == json.loads(ids)
        return
    with pytest.raises(InputError):
        list(MooncakeReader(p))
    r = MooncakeReader(p, on_bad_row="skip")
    assert len(list(r)) == 1 and r.counts["skipped_bad_rows"] == 1


def test_mooncake_reader_without_hash_block_size_skips_the_count_check(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 600, "output_length": 2, '
                 '"hash_ids": [1, 2, 3, 4]}\n')
    assert list(MooncakeReader(p, hash_block_tokens=0))[0][3] == [1, 2, 3, 4]


def _lru_state(lru, idx):
    return [(x.lo, x.hi, x.top, x.ref) for x in lru], sorted(idx.d)


def test_inline_top_eviction_is_pop_oldest():
    """Evicting the top of the oldest span inline (the GPU cache's ``_evict`` and the host
    tier's ``_pop_front``) leaves the spans, their ``top`` and the index as
    ``SpanLRU.pop_oldest`` does, and offloads the same pieces."""
    def build():
        kv = PrefixCachingKVCacheManager(32, 4, host=HostKVTier(40, 4, 1e-3), offload=True)
        reqs = [type("R", (), dict(num_prompt_tokens=64, num_tokens=64, hash_block_tokens=8,
                                   hash_ids=[100 * i + j for j in range(8)]))() for i in (1, 2)]
        for r in reqs:
            assert kv.get_computed_blocks(r) == 0 and kv.allocate_slots(r, 0, 64)
            kv.free(r, 64)
        assert kv._num_evictable == kv.num_free_blocks == 32     # every block cached
        return kv
    a, b = build(), build()
    for n in (3, 5, 4, 9, 6, 2):                  # top pieces, whole spans, then pieces again
        a.num_free_blocks -= n
        a._settle()                              # inline where the oldest span keeps blocks
        b.num_free_blocks -= n
        b._num_evictable -= n
        b._num_cached -= n
        b.evicted_blocks += n
        b._offload.offload_runs(b._lru.pop_oldest(n, b._idx))
        assert _lru_state(a._lru, a._idx) == _lru_state(b._lru, b._idx)
        assert a._offload.prefix_keys() == b._offload.prefix_keys()
        assert a.evicted_blocks == b.evicted_blocks
        a.check()
        b.check()


def test_host_inline_drop_is_pop_oldest():
    C = prefix_block_chain(list(range(10)), 8, 80, 4)       # 20 blocks, 2 per segment
    host = HostKVTier(12, 4, 1e-3)
    host.offload_blocks(C, 0, 12)                           # one span fills the tier
    host.flush()
    lru, idx = SpanLRU(), SpanIndex()
    x = BlockSpan(C, 0, 12)
    lru.append(x)
    idx.attach(x, 0, 12)
    host._pop_front(5)                                      # inline: the span keeps 7 blocks
    host._free += 5
    lru.pop_oldest(5, idx)
    assert _lru_state(host._lru, host._idx) == _lru_state(lru, idx)
    host.check()
