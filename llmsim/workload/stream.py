"""The per-request loops of the workload stream, typed so that the compiled build compiles them
(``llmsim/_compiled.py``): in the pure build they are the same plain Python.

Each item of a simulation passes through these once, so they are iterator classes and
generators that run without an interpreted frame per item when compiled:

* :class:`RequestStream` — items (one source, or several merged and tagged with their source
  index) → :class:`~llmsim.workload.request.Request` objects, with the Workload's global limits
  and per-source counters (:meth:`llmsim.workload.workload.Workload.__iter__`);
* :class:`SyntheticItems` — chunks of arrival times + a length sampler → items (a synthetic
  source without sessions: :func:`llmsim.workload.sources.synthetic_items`);
* :class:`NonEmpty` — builds an item stream lazily at the first ``next`` and says why when it
  is empty (a trace source: :func:`llmsim.workload.sources.trace_items`);
* :func:`window`, :func:`scale_time`, :func:`cap` — the trace transforms applied per item
  (documented in :mod:`llmsim.workload.transforms`, which re-exports them).

Items are the tuples of :mod:`llmsim.workload.items`. Every iterator here is lazy, pulls at
most one item ahead of what it hands out, and, once ended (exhausted or raised), stays ended.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

from llmsim.workload.items import CAP_OUTPUT, CAP_PROMPT, FLAG_COUNTERS
from llmsim.workload.request import Request


class RequestStream:
    """Iterator of :class:`Request` built from ``items`` (the body of the Workload's stream).

    ``items`` yields items of source 0 (``tagged`` false) or ``(source index, item)`` pairs
    (``tagged`` true: several sources merged in arrival order). ``meta[k]`` is source k's
    ``(tenant, priority, counters dict, hash id offset, hash_block_tokens)``. An item at
    ``t >= limit_t`` ends the stream (it is pulled, not yielded), as does the ``limit_n``-th
    request (``None``: no limit; checked after a request is handed out, so no item is pulled
    past it). Request ids are 0, 1, 2, … in stream order. For each request yielded, the
    source's ``requests`` counter and the counters of the item's flag bits
    (:data:`~llmsim.workload.items.FLAG_COUNTERS`) go up by one — before it is handed out.
    """

    def __init__(self, items: Iterator[Any], tagged: bool, meta: list[tuple],
                 limit_n: Optional[int], limit_t: float) -> None:
        self.items = items
        self.tagged = tagged
        self.meta = meta
        self.limit_n: int = -1 if limit_n is None else limit_n
        self.limit_t: Any = limit_t     # boxed once: compared with each item's (boxed) time
        self.rid = 0
        self.done = False
        # source 0's meta in fields: the one source of an untagged stream, read per request
        m = meta[0]
        self.tenant: Any = m[0]
        self.priority: int = m[1]
        self.counts: dict = m[2]
        self.hash_offset: int = m[3]
        self.block_tokens: int = m[4]

    def __iter__(self) -> RequestStream:
        return self

    def __next__(self) -> Request:
        rid = self.rid
        if self.done or (rid > 0 and 0 <= self.limit_n <= rid):
            self.done = True
            raise StopIteration
        # pulled by a `for` (compiled: the C iterator protocol) rather than next(), which the
        # compiled build looks up and calls as a builtin (≈ 300 instructions per request)
        x: Any = None
        got = False
        try:
            for x in self.items:
                got = True
                break
        except BaseException:       # an error: ended (as a generator would be)
            self.done = True
            raise
        if not got:
            self.done = True
            raise StopIteration
        if self.tagged:
            it: tuple = x[1]
            m = self.meta[x[0]]
            tenant: Any = m[0]
            prio: int = m[1]
            counts: dict = m[2]
            off: int = m[3]
            B: int = m[4]
        else:
            it = x
            tenant = self.tenant
            prio = self.priority
            counts = self.counts
            off = self.hash_offset
            B = self.block_tokens
        t = it[0]
        if t >= self.limit_t:
            self.done = True
            raise StopIteration
        h = it[3]
        if h is not None and off:
            h = [v + off for v in h]
        flags: int = it[6]
        if flags:
            for bit, name in FLAG_COUNTERS:
                if flags & bit:
                    counts[name] += 1
        counts["requests"] += 1
        self.rid = rid + 1
        return Request(rid, t, it[1], it[2], h, B if h is not None else 0, tenant, prio,
                       it[4], it[5])


class SyntheticItems:
    """Items ``(t, prompt, output, None, None, None, flags)`` of a synthetic source without
    sessions: for each chunk of arrival times from ``chunks`` (numpy arrays), ``draw(n)`` of
    the sampler ``make_draw()`` gives n prompt lengths, output lengths and flags (numpy
    arrays). ``make_draw`` is called at the first ``next`` (building the sampler may read files
    and raise :class:`~llmsim.errors.InputError`: that belongs to iterating)."""

    def __init__(self, chunks: Iterator[Any], make_draw: Callable[[], Callable[[int], Any]]
                 ) -> None:
        self.chunks = chunks
        self.make_draw: Optional[Callable[[], Callable[[int], Any]]] = make_draw
        self.draw: Optional[Callable[[int], Any]] = None
        self.times: list = []
        self.prompts: list = []
        self.outputs: list = []
        self.flags: list = []
        self.i = 0
        self.n = 0

    def __iter__(self) -> SyntheticItems:
        return self

    def __next__(self) -> tuple:
        i = self.i
        if i >= self.n:
            draw = self.draw
            if draw is None:
                make = self.make_draw
                assert make is not None
                self.make_draw = None
                draw = self.draw = make()
            while True:
                times = next(self.chunks)
                p, o, fl = draw(times.size)
                # lists of Python numbers once per chunk: indexing them per item is cheap
                self.times = times.tolist()
                self.prompts = p.tolist()
                self.outputs = o.tolist()
                self.flags = fl.tolist()
                self.n = min(len(self.times), len(self.prompts), len(self.outputs),
                             len(self.flags))
                if self.n:
                    break
            i = 0
        self.i = i + 1
        return (self.times[i], self.prompts[i], self.outputs[i], None, None, None,
                self.flags[i])


class NonEmpty:
    """The items of ``build()`` (called at the first ``next``); when that stream is empty,
    ``empty()`` is called instead, which raises (it says why nothing is left)."""

    def __init__(self, build: Callable[[], Iterator[Any]], empty: Callable[[], None]) -> None:
        self.build: Optional[Callable[[], Iterator[Any]]] = build
        self.empty = empty
        self.items: Optional[Iterator[Any]] = None
        self.done = False

    def __iter__(self) -> NonEmpty:
        return self

    def __next__(self) -> Any:
        items = self.items
        if items is not None:
            # a `for` pulls with the C iterator protocol (next() is a builtin looked up and
            # called in the compiled build)
            for x in items:
                return x
            raise StopIteration
        if self.done:
            raise StopIteration
        self.done = True            # whatever happens now, a second first pull does not
        build = self.build
        assert build is not None
        self.build = None
        items = build()
        try:
            first = next(items)
        except StopIteration:
            self.empty()
            raise
        self.items = items
        return first


def window(items: Iterable[tuple], start_s: float, end_s: Optional[float], counts: dict
           ) -> Iterator[tuple]:
    end = float("inf") if end_s is None else end_s
    for it in items:
        t = it[0]
        if t < start_s:
            counts["outside_window_rows"] += 1
            continue
        if t >= end:
            return
        yield (t - start_s,) + it[1:] if start_s else it


def scale_time(items: Iterable[tuple], factor: float) -> Iterator[tuple]:
    for it in items:
        yield (it[0] * factor,) + it[1:]


def cap_item(it: tuple, max_p: Optional[int], max_o: Optional[int], mode: str,
             block_tokens: int) -> Optional[tuple]:
    """Capped item, or None when ``mode == 'drop'`` and a length is over its cap."""
    p = it[1]
    o = it[2]
    over_p = max_p is not None and p > max_p
    over_o = max_o is not None and o > max_o
    if not (over_p or over_o):
        return it
    if mode == "drop":
        return None
    flags = it[6]
    h = it[3]
    if over_p and max_p is not None:      # (over_p implies it: for the type checker)
        p = max_p
        flags |= CAP_PROMPT
        if h is not None and block_tokens:
            h = h[: -(-p // block_tokens)]
    if over_o and max_o is not None:
        o = max_o
        flags |= CAP_OUTPUT
    return (it[0], p, o, h, it[4], it[5], flags)


def cap(items: Iterable[tuple], max_p: Optional[int], max_o: Optional[int], mode: str,
        block_tokens: int, counts: dict) -> Iterator[tuple]:
    """The items with ``cap_item`` applied (``items`` itself when there is no cap: no step
    per item)."""
    if max_p is None and max_o is None:
        return iter(items)
    return _capped(items, max_p, max_o, mode, block_tokens, counts)


def _capped(items: Iterable[tuple], max_p: Optional[int], max_o: Optional[int], mode: str,
            block_tokens: int, counts: dict) -> Iterator[tuple]:
    for it in items:
        c = cap_item(it, max_p, max_o, mode, block_tokens)
        if c is None:
            counts["dropped_over_cap_rows"] += 1
            continue
        yield c
