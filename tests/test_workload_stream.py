"""The compiled per-request loops of the workload (llmsim/workload/stream.py,
llmsim/workload/readers/rows.py): the stream's laziness, limits, counters and end state, in
whichever build runs the tests; and the waiting queues' contract."""
import json
from pathlib import Path

import numpy as np
import pytest

from llmsim import _compiled
from llmsim.errors import InputError
from llmsim.scheduling.queue import FcfsQueue, KeyedQueue, make_queue
from llmsim.workload import WorkloadConfig, build_workload
from llmsim.workload.items import CAP_OUTPUT, CAP_PROMPT, TRUNC_PROMPT
from llmsim.workload.request import Request
from llmsim.workload.sources import new_source_counts
from llmsim.workload.stream import NonEmpty, RequestStream, SyntheticItems, cap

P = {"dist": "constant", "value": 100}
O = {"dist": "constant", "value": 10}


def wl(data, seed=0, base=Path(".")):
    return build_workload(WorkloadConfig.model_validate(data), np.random.SeedSequence(seed), base)


def test_modules_are_in_the_compiled_build():
    for m in ("llmsim.workload.stream", "llmsim.workload.readers.rows"):
        assert m in _compiled.MODULES


def item(t, p=5, o=2, h=None, flags=0):
    return (t, p, o, h, None, None, flags)


def test_request_stream_limits_pull_no_item_past_the_last():
    pulled = []

    def items():
        for k in range(10):
            pulled.append(k)
            yield item(float(k))
    counts = new_source_counts()
    s = RequestStream(items(), False, [("a", 3, counts, 0, 0)], 4, float("inf"))
    reqs = list(s)
    assert [r.request_id for r in reqs] == [0, 1, 2, 3]
    assert pulled == [0, 1, 2, 3]                       # the 4th request ends it: no 5th pull
    assert counts["requests"] == 4 and reqs[0].tenant == "a" and reqs[0].priority == 3
    # a time limit: the item at or after it is pulled, not yielded
    pulled.clear()
    s = RequestStream(items(), False, [(None, 0, new_source_counts(), 0, 0)], None, 2.5)
    assert [r.arrival_s for r in s] == [0.0, 1.0, 2.0] and pulled == [0, 1, 2, 3]
    with pytest.raises(StopIteration):                  # ended stays ended
        next(s)
    assert pulled == [0, 1, 2, 3]


def test_request_stream_counts_flags_and_offsets_tagged_hash_ids():
    c0, c1 = new_source_counts(), new_source_counts()
    tagged = iter([(1, item(0.0, h=[1, 2], flags=CAP_PROMPT | CAP_OUTPUT)),
                   (0, item(1.0, flags=TRUNC_PROMPT)), (1, item(2.0))])
    meta = [("x", 0, c0, 0, 16), ("y", 1, c1, 1 << 48, 512)]
    reqs = list(RequestStream(tagged, True, meta, None, float("inf")))
    assert [r.tenant for r in reqs] == ["y", "x", "y"]
    assert reqs[0].hash_ids == [1 + (1 << 48), 2 + (1 << 48)] and reqs[0].hash_block_tokens == 512
    assert reqs[1].hash_ids is None and reqs[1].hash_block_tokens == 0
    assert (c1["requests"], c1["capped_prompt_requests"], c1["capped_output_requests"]) == (2, 1, 1)
    assert (c0["requests"], c0["truncated_prompt_requests"]) == (1, 1)


def test_request_stream_ends_after_an_error():
    def items():
        yield item(0.0)
        raise InputError([])
    s = RequestStream(items(), False, [(None, 0, new_source_counts(), 0, 0)], None,
                      float("inf"))
    assert next(s).request_id == 0
    with pytest.raises(InputError):
        next(s)
    with pytest.raises(StopIteration):
        next(s)


def test_synthetic_items_build_the_sampler_at_the_first_next():
    built = []

    def make():
        built.append(1)
        return lambda n: (np.full(n, 7), np.full(n, 3), np.zeros(n, dtype=np.int64))
    chunks = iter([np.array([0.5, 1.0]), np.array([]), np.array([2.0])])
    it = SyntheticItems(chunks, make)
    assert built == []
    got = list(it)
    assert built == [1]
    assert got == [item(0.5, 7, 3), item(1.0, 7, 3), item(2.0, 7, 3)]
    assert all(type(x) is float for x in (g[0] for g in got))        # Python numbers
    assert all(type(g[1]) is int and type(g[6]) is int for g in got)


def test_workload_iter_defers_errors_to_next(tmp_path):
    w = wl({"num_requests": 5, "arrival": {"process": "poisson", "rate_per_s": 1},
            "prompt_tokens": {"dist": "empirical", "path": "gone.csv", "column": "p"},
            "output_tokens": O}, base=tmp_path)
    it = iter(w)                                     # opens no file
    with pytest.raises(InputError):
        next(it)
    t = wl({"trace": {"path": "gone.jsonl", "format": "mooncake"}}, base=tmp_path)
    it = iter(t)
    with pytest.raises(InputError, match="not found"):
        next(it)


def test_non_empty_builds_lazily_and_says_why_when_empty():
    calls = []

    def empty():
        calls.append("empty")
        raise InputError([])
    s = NonEmpty(lambda: calls.append("build") or iter([1, 2]), empty)
    assert calls == []
    assert list(s) == [1, 2] and calls == ["build"]
    e = NonEmpty(lambda: iter([]), empty)
    with pytest.raises(InputError):
        next(e)
    with pytest.raises(StopIteration):
        next(e)


def test_cap_without_caps_is_the_stream_itself():
    src = iter([item(0.0)])
    assert cap(src, None, None, "clip", 0, {}) is src
    counts = {"dropped_over_cap_rows": 0}
    out = list(cap(iter([item(0.0, p=50), item(1.0, p=5)]), 10, None, "drop", 0, counts))
    assert out == [item(1.0, p=5)] and counts["dropped_over_cap_rows"] == 1


def test_mooncake_rows_through_the_stream(tmp_path):
    recs = [{"timestamp": 1000, "input_length": 600, "output_length": 2, "hash_ids": [7, 8]},
            {"timestamp": 1500, "input_length": 100, "output_length": 3, "hash_ids": [7.0]},
            {"timestamp": 1200, "input_length": 100, "output_length": 3},
            {"timestamp": 2000, "input_length": 1100, "output_length": 4, "hash_ids": [7, 8, 9]}]
    (tmp_path / "m.jsonl").write_text("\ufeff" + "".join(json.dumps(r) + "\n" for r in recs)
                                      + "\n")
    w = wl({"trace": {"path": "m.jsonl", "format": "mooncake", "on_bad_row": "skip"}},
           base=tmp_path)
    reqs = list(w)
    assert [r.arrival_s for r in reqs] == [0.0, 1.2 - 1.0, 1.0]      # ms / 1000, from the first
    assert [r.hash_ids for r in reqs] == [[7, 8], None, [7, 8, 9]]
    st = w.stats
    assert st["rows_read"] == 4 and st["skipped_bad_rows"] == 1
    assert "hash ids must be integers" in st["sources"]["default"]["bad_row_examples"][0]


def test_request_counts_are_python_ints():
    r = Request(0, np.float64(1.5), np.int64(7), np.int32(3), hash_block_tokens=np.int64(16),
                priority=True)
    assert (r.num_prompt_tokens, r.max_tokens, r.hash_block_tokens, r.priority) == (7, 3, 16, 1)
    assert all(type(v) is int for v in (r.num_prompt_tokens, r.max_tokens,
                                         r.hash_block_tokens, r.priority))
    assert type(r.arrival_s) is float
    with pytest.raises(TypeError):
        Request(0, 0.0, 7.0, 3)


def test_queues():
    a, b, c = (Request(i, float(i), 5, 5, priority=p) for i, p in enumerate((2, 1, 1)))
    f = make_queue("fcfs")
    assert isinstance(f, FcfsQueue) and not f
    f.push(a)
    f.push(b)
    f.push_front(c)
    assert f.peek() is c and len(f) == 3 and list(f) == [c, a, b]
    assert f.pop() is c and f.peek() is a
    q = make_queue("priority")
    assert isinstance(q, KeyedQueue) and not q
    q.push(a)
    q.push(c)
    q.push_front(b)                     # keeps its place by key: (1, 1.0) before (1, 2.0)
    assert list(q) == [b, c, a] and q.peek() is b and len(q) == 3
    assert [q.pop(), q.pop(), q.pop()] == [b, c, a] and not q
    s = make_queue("sjf", lambda r: -r.request_id)
    for r in (a, b, c):
        s.push(r)
    assert list(s) == [c, b, a]
