"""Workload: the request stream of a scenario.

``build_workload(cfg, seed, base_dir)`` is cheap: it opens no file. ``check()`` looks at every
file the workload needs (missing, empty, header of another format) and returns the problems;
iterating raises :class:`InputError` for the same problems and for bad rows.

Iterating yields :class:`Request` objects lazily in non-decreasing ``arrival_s`` with
``request_id`` 0, 1, 2, … in that order. Each ``iter()`` starts the stream afresh (files
re-opened, generators re-seeded), so iterating twice gives the identical stream; the same
SeedSequence always gives the same stream. ``seed`` is not mutated: component generators come
from ``SeedSequence(seed.entropy, spawn_key=seed.spawn_key + (source, purpose))``.

Sources are merged with ``heapq.merge`` on arrival time (ties: source order). Global limits
apply to the merged stream: arrivals with t >= ``duration_s`` end it, as does the
``num_requests``-th request. A request of a named source carries ``tenant`` = the source name
and its ``priority``; a workload without ``sources:`` yields ``tenant=None``, ``priority=0`` and
has empty ``classes``; its counters are under the source name ``default``. Hash ids of source i
are offset by i·2**48 when there are several sources so that sources never share prefixes by
accident. Session ids are ints for a single source and ``"<source>:<k>"`` strings otherwise.
"""
from __future__ import annotations

import dataclasses
import heapq
from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import TypeAdapter, ValidationError

from llmsim.errors import InputError, Problem, input_problem
from llmsim.workload import config as C
from llmsim.workload.arrivals import arrival_chunks
from llmsim.workload.lengths import resolve
from llmsim.workload.readers import detect_format, open_reader
from llmsim.workload.request import Request
from llmsim.workload.sources import (SOURCE_COUNTER_KEYS, SplitArrivals, new_source_counts,
                                     synthetic_items, trace_items)
from llmsim.workload.stream import RequestStream

HASH_NAMESPACE_BITS = 48

# seed purposes inside a source
_ARRIVAL, _LENGTHS, _SESSIONS, _SAMPLE, _TRACE_ARRIVAL, _THINK = range(6)


@dataclasses.dataclass
class _Source:
    index: int
    name: str
    key: str                 # key path in the scenario, for messages
    part: object             # SourceConfig or WorkloadConfig (has the synthetic parts)
    kind: str                # "share" | "own" | "trace"
    arrival: object = None   # own arrival config
    trace: object = None     # trace config (possibly format auto)
    priority: int = 0
    slo: dict | None = None


class Workload:
    """Lazy request stream + counters (``stats``), classes and pre-run checks."""

    def __init__(self, cfg: C.WorkloadConfig, seed: np.random.SeedSequence, base_dir: Path):
        if not isinstance(seed, np.random.SeedSequence):
            seed = np.random.SeedSequence(seed)
        self.config = cfg
        self.base_dir = Path(base_dir)
        self._entropy = seed.entropy
        self._spawn_key = tuple(seed.spawn_key)
        self._named = cfg.sources is not None
        self._sources = self._plan(cfg)
        self.classes: dict[str, dict] = {
            s.name: {"priority": s.priority, "slo": s.slo} for s in self._sources} if self._named else {}
        self._counts = {s.name: new_source_counts() for s in self._sources}
        self._formats: dict[str, str] = {}
        self._resolved: dict[int, object] = {}

    # ------------------------------------------------------------------------------------
    @staticmethod
    def _plan(cfg) -> list[_Source]:
        if cfg.sources is None:
            if cfg.trace is not None:
                return [_Source(0, "default", "workload", cfg, "trace", trace=cfg.trace)]
            return [_Source(0, "default", "workload", cfg, "own", arrival=cfg.arrival)]
        out = []
        for i, s in enumerate(cfg.sources):
            slo = s.slo.model_dump(exclude_none=True) if s.slo is not None else None
            key = f"workload.sources.{i}"
            if s.trace is not None:
                kind, arr = "trace", None
            elif s.share is not None:
                kind, arr = "share", None
            else:
                kind = "own"
                arr = s.arrival if s.arrival is not None else C.PoissonArrival(
                    process="poisson", rate_per_s=s.rate_per_s)
            out.append(_Source(i, s.name, key, s, kind, arrival=arr, trace=s.trace,
                               priority=s.priority, slo=slo))
        return out

    def _seed(self, *path: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self._entropy, spawn_key=self._spawn_key + tuple(path))

    def _rng(self, *path: int) -> np.random.Generator:
        return np.random.default_rng(self._seed(*path))

    # ------------------------------------------------------------------------------------
    def _resolve_trace(self, src: _Source):
        """(concrete trace config, absolute path); detects the format of ``format: auto``."""
        tc = src.trace
        path = resolve(tc.path, self.base_dir)
        if tc.format == "auto":
            cached = self._resolved.get(src.index)
            if cached is not None:
                return cached, path
            fmt = detect_format(path)
            data = tc.model_dump(exclude_unset=True)
            data["format"] = fmt
            try:
                tc = TypeAdapter(C.TraceConfig).validate_python(data)
            except ValidationError as exc:
                msgs = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                raise InputError(input_problem(
                    f"detected format '{fmt}': {msgs}", where=str(path), key=f"{src.key}.trace")) from None
            self._resolved[src.index] = tc
        self._formats[src.name] = tc.format
        return tc, path

    def _source_items(self, src: _Source, split: SplitArrivals | None, n_share: dict[int, int]):
        counts = self._counts[src.name]
        i = src.index
        if src.kind == "trace":
            tc, path = self._resolve_trace(src)
            on_bad = tc.on_bad_row or self.config.on_bad_row
            return trace_items(tc, path, on_bad, counts, self._seed(i, _SAMPLE),
                               self._rng(i, _TRACE_ARRIVAL), self._rng(i, _THINK))
        if src.kind == "share":
            starts = split.stream(n_share[i])
        else:
            starts = arrival_chunks(src.arrival, self._rng(i, _ARRIVAL))
        prefix = f"{src.name}:" if self._named else None
        return synthetic_items(src.part, starts, self._rng(i, _LENGTHS), self._rng(i, _SESSIONS),
                               self.base_dir, src.key, counts, prefix)

    def __iter__(self) -> Iterator[Request]:
        cfg = self.config
        self._counts = {s.name: new_source_counts() for s in self._sources}
        shares = [s for s in self._sources if s.kind == "share"]
        split = None
        n_share = {}
        if shares:
            n = len(self._sources)
            split = SplitArrivals(arrival_chunks(cfg.arrival, self._rng(n, 0)),
                                  [s.part.share for s in shares], self._rng(n, 1))
            n_share = {s.index: k for k, s in enumerate(shares)}
        streams = [self._source_items(s, split, n_share) for s in self._sources]
        return self._requests(streams)

    def _requests(self, streams) -> Iterator[Request]:
        """The requests of the source streams (the loop per request is compiled:
        :class:`~llmsim.workload.stream.RequestStream`)."""
        cfg = self.config
        limit_t = cfg.duration_s if cfg.duration_s is not None else float("inf")
        srcs = self._sources
        meta = []
        for s in srcs:
            tenant = s.name if self._named else None
            off = (s.index << HASH_NAMESPACE_BITS) if len(srcs) > 1 else 0
            meta.append((tenant, s.priority, self._counts[s.name], off,
                         self._block_tokens(s)))
        if len(streams) == 1:
            return RequestStream(iter(streams[0]), False, meta, cfg.num_requests, limit_t)
        tagged = [_tag(k, st) for k, st in enumerate(streams)]
        merged = heapq.merge(*tagged, key=lambda p: p[1][0])
        return RequestStream(merged, True, meta, cfg.num_requests, limit_t)

    def _block_tokens(self, s: _Source) -> int:
        if s.kind == "trace":
            tc = self._resolved.get(s.index, s.trace)
            return getattr(tc, "hash_block_tokens", 0)
        sess = getattr(s.part, "sessions", None)
        return sess.hash_block_tokens if sess is not None else 0

    # ------------------------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """Counters so far: totals over sources plus ``sources`` → name → counters (with
        ``format`` for traces and the first few ``bad_row_examples``)."""
        out = {k: sum(c[k] for c in self._counts.values()) for k in SOURCE_COUNTER_KEYS}
        per = {}
        for name, c in self._counts.items():
            d = dict(c)
            d["bad_row_examples"] = list(c["bad_row_examples"])
            if name in self._formats:
                d["format"] = self._formats[name]
            per[name] = d
        out["sources"] = per
        return out

    def check(self) -> list[Problem]:
        """Problems found without simulating: trace files missing, empty, or not of the
        (given or detectable) format; empirical-length files missing or lacking the column."""
        problems: list[Problem] = []

        def add(exc: InputError, key: str):
            for p in exc.problems:
                problems.append(p if p.key else dataclasses.replace(p, key=key))

        for s in self._sources:
            if s.kind == "trace":
                key = f"{s.key}.trace.path"
                try:
                    tc, path = self._resolve_trace(s)
                    on_bad = tc.on_bad_row or self.config.on_bad_row
                    open_reader(tc, path, on_bad).check()
                except InputError as exc:
                    add(exc, key)
                continue
            for key, dist in _empirical_files(s.part, s.key):
                from llmsim.workload.readers.columns import check_columns
                try:
                    check_columns(resolve(dist.path, self.base_dir), dist_columns(dist), key)
                except InputError as exc:
                    add(exc, key)
        return problems


def _tag(k: int, stream):
    for it in stream:
        yield k, it


def dist_columns(dist) -> list[str]:
    if isinstance(dist, C.EmpiricalJointLengths):
        return [dist.prompt_column, dist.output_column]
    return [dist.column]


def _empirical_files(part, key):
    cands = [("prompt_tokens", getattr(part, "prompt_tokens", None)),
             ("output_tokens", getattr(part, "output_tokens", None))]
    L = getattr(part, "lengths", None)
    if isinstance(L, C.EmpiricalJointLengths):
        cands.append(("lengths", L))
    elif isinstance(L, C.CorrelatedLengths):
        cands += [("lengths.prompt_tokens", L.prompt_tokens), ("lengths.output_tokens", L.output_tokens)]
    sess = getattr(part, "sessions", None)
    if sess is not None and not isinstance(sess.turns, int):
        cands.append(("sessions.turns", sess.turns))
    for name, d in cands:
        if d is not None and getattr(d, "path", None) is not None:
            yield f"{key}.{name}.path", d


def build_workload(cfg: C.WorkloadConfig, seed: np.random.SeedSequence, base_dir: Path) -> Workload:
    """The Workload of a validated ``workload:`` section. Relative paths resolve against
    ``base_dir`` (the scenario file's directory). Opens no file (see ``Workload.check``)."""
    return Workload(cfg, seed, base_dir)


__all__ = ["Workload", "build_workload"]
