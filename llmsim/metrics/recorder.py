"""Hot-path recording: finished requests, the exact ITL sample and per-replica timelines.

Contract: appends only (O(1) per call, no pandas) while the simulation runs; ``to_frames``
builds the DataFrames once at the end. The ITL sample is weighted: ``add(gap_s, count)`` means
``count`` tokens each had an inter-token gap of ``gap_s`` (one decode step adds one entry per
group of requests that share the time of their previous token).

Streaming runs (``llmsim.simulate(..., stream_dir=DIR)``) use :class:`StreamingRecorder`
instead: the same engine-facing interface (``request_ended``, ``sample``, ``itl.add``,
``requests_frame``, ``timeline_frame``, ``itl.arrays``), but rows go to a file in chunks and
memory stays flat (see its docstring). :func:`request_rows_frame` builds the raw table for both.
"""
from __future__ import annotations

import shutil
import struct
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmsim.metrics.summary import add_derived_columns
from llmsim.workload.request import Request

REQUEST_COLUMNS = ["request_id", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
                   "num_prompt_tokens", "num_output_tokens", "num_cached_tokens",
                   "num_preemptions", "pool", "replica", "status", "reason"]

TIMELINE_COLUMNS = ["time_s", "pool", "replica", "num_waiting", "num_running", "kv_usage",
                    "num_finished", "tokens_out"]


#: ITL samples buffered in lists before they are packed into numpy chunks (in-memory runs).
ITL_PACK_ENTRIES = 1 << 16


class ItlRecorder:
    """The exact weighted ITL sample. New entries go to lists: the gaps to ``gaps_s``, the
    counts run-length encoded (``_count_vals[i]`` repeated ``_count_runs[i]`` times, in entry
    order): a list takes a float or an int in a few instructions, where ``array('d')`` parses
    every element it is given. The steps of a macro-step come as lines (:meth:`add_line`: gaps
    ``a + b·j``), kept as one entry per line and expanded by numpy when packed, in their place
    among the single entries. :meth:`pack` (called by the recorder as requests end, once the
    lists hold ``ITL_PACK_ENTRIES``, and by :meth:`add_line` once the lines hold as many gaps)
    moves them into numpy chunks of 8 bytes per value."""

    __slots__ = ("gaps_s", "_count_vals", "_count_runs", "_chunks", "_line_a", "_line_b",
                 "_line_j0", "_line_n", "_line_count", "_line_at", "_line_entries")

    def __init__(self) -> None:
        self.gaps_s: list = []
        self._count_vals: list[int] = []
        self._count_runs: list[int] = []
        self._chunks: list = []          # [(gaps float64 array, counts int64 array)]
        # lines of add_line, in order: gaps a + b·j for j0 <= j < j0 + n, count tokens each,
        # placed before single entry number `at` of gaps_s
        self._line_a: list[float] = []
        self._line_b: list[float] = []
        self._line_j0: list[int] = []
        self._line_n: list[int] = []
        self._line_count: list[int] = []
        self._line_at: list[int] = []
        self._line_entries = 0           # gaps the lines hold

    def add(self, gap_s: float, count: int) -> None:
        self.gaps_s.append(gap_s)
        vals = self._count_vals
        if vals and vals[-1] == count:
            self._count_runs[-1] += 1
        else:
            vals.append(count)
            self._count_runs.append(1)

    def add_line(self, a: float, b: float, j0: int, n: int, count: int) -> None:
        """``add(a + b * j, count)`` for ``j = j0 … j0 + n - 1`` (the steps of one line of a
        macro-step, :class:`~llmsim.scheduling.runs.DecodeRunPlan`), each gap the float
        ``a + b * j`` computes (numpy's elementwise product and sum round the same)."""
        if n <= 0:
            return
        self._line_a.append(a)
        self._line_b.append(b)
        self._line_j0.append(j0)
        self._line_n.append(n)
        self._line_count.append(count)
        self._line_at.append(len(self.gaps_s))
        self._line_entries += n
        if self._line_entries >= ITL_PACK_ENTRIES:
            self.spill()

    def spill(self) -> None:
        """The buffers are full: pack them (a streaming sink folds them instead)."""
        self.pack()

    def _take(self):
        """The buffered entries as (float64, int64) arrays; the buffers start empty again.
        (The arrays may be read-only: arrays() hands out copies.)"""
        gaps = _float_column(self.gaps_s)
        counts = np.repeat(_int_column(self._count_vals), _int_column(self._count_runs))
        if self._line_a:
            gaps, counts = self._with_lines(gaps, counts)
        self.gaps_s = []
        self._count_vals = []
        self._count_runs = []
        return gaps, counts

    def _with_lines(self, gaps, counts):
        """``gaps``/``counts`` (the single entries) with the lines' gaps inserted in their
        places; empties the lines. Each single entry becomes a line of one gap (``gap + 0.0 ·
        0``, the same float) and the records are put in order by a stable argsort of their
        places (a line placed at single entry ``k`` comes right before it): one sort of the
        records, then sequential numpy passes over the gaps (≈ 6 ns per gap, where scattering
        them into place costs ≈ 25 and ``np.insert`` ≈ 65)."""
        ns = gaps.size
        order = np.argsort(np.concatenate((_int_column(self._line_at),
                                           np.arange(ns, dtype=np.int64))), kind="stable")
        ra = np.concatenate((_float_column(self._line_a), gaps))[order]
        rb = np.concatenate((_float_column(self._line_b), np.zeros(ns)))[order]
        rn = np.concatenate((_int_column(self._line_n), np.ones(ns, dtype=np.int64)))[order]
        rj = np.concatenate((_int_column(self._line_j0), np.zeros(ns, dtype=np.int64)))[order]
        rc = np.concatenate((_int_column(self._line_count), counts))[order]
        first = np.cumsum(rn) - rn                       # each record's first gap
        j = (np.arange(int(first[-1] + rn[-1])) - np.repeat(first - rj, rn)).astype(np.float64)
        gaps = np.repeat(ra, rn) + np.repeat(rb, rn) * j
        counts = np.repeat(rc, rn)
        self._line_a = []
        self._line_b = []
        self._line_j0 = []
        self._line_n = []
        self._line_count = []
        self._line_at = []
        self._line_entries = 0
        return gaps, counts

    def pending(self) -> bool:
        """Whether entries wait in the buffers."""
        return bool(self.gaps_s) or bool(self._line_a)

    def pack(self) -> None:
        if self.pending():
            self._chunks.append(self._take())

    def arrays(self):
        self.pack()
        ch = self._chunks
        if not ch:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        if len(ch) > 1:
            ch[:] = [(np.concatenate([g for g, _ in ch]), np.concatenate([c for _, c in ch]))]
        return ch[0][0].copy(), ch[0][1].copy()


class Recorder:
    """Collects ended requests (finished, rejected, failed) and timeline samples."""

    def __init__(self, with_tenant: bool = False) -> None:
        self.rows = RequestRows(with_tenant)
        self.itl = ItlRecorder()
        self.timeline: list = []
        self.with_tenant = with_tenant

    def request_ended(self, req: Request) -> None:
        self.rows.add(req)
        if len(self.itl.gaps_s) >= ITL_PACK_ENTRIES:
            self.itl.pack()

    def sample(self, row: tuple) -> None:
        self.timeline.append(row)

    def release(self) -> None:
        """Drop the raw rows and timeline samples (the run's frames are built from them
        first: :meth:`Simulation.run`); the recorder then reads as empty. Freed at once by
        reference counting, so the cyclic collector's pass when the run restores its
        thresholds (:func:`~llmsim.engine.gcpolicy.run_collection_thresholds`) does not walk
        a list per column of every request: that pass goes from 11 to 4.7 ms in the Mooncake
        run. (Freeing the rows, ≈ 5 ms there, is paid here instead of when the simulation's
        objects are collected.)"""
        self.rows = RequestRows(self.with_tenant)
        self.timeline = []

    def requests_frame(self, extra_requests=()) -> pd.DataFrame:
        """One row per request (ended + ``extra_requests`` such as unfinished ones), sorted by
        request_id."""
        rows = self.rows
        if extra_requests:
            rows = rows.copy()
            for req in extra_requests:
                rows.add(req)
        return rows.frame(sort_by_id=True)

    def timeline_frame(self) -> pd.DataFrame:
        """The timeline samples, sorted by (time_s, pool, replica), stable (see
        :func:`timeline_table`)."""
        return timeline_table(self.timeline)


_FLOAT_COLUMNS = frozenset(("arrival_s", "first_scheduled_s", "first_token_s", "finish_s"))
_INT_COLUMNS = frozenset(("num_prompt_tokens", "num_output_tokens", "num_cached_tokens",
                          "num_preemptions"))


class RequestRows:
    """The raw request table (:data:`REQUEST_COLUMNS`, + ``tenant``) as columns, one row added
    per ended request. :meth:`add` reads the request's fields when it ends, while the object is
    still in the CPU's caches: one list append per column. Reading them all at the end instead
    (one pass over a million scattered objects per column) cost ≈ 5% of a chat run's wall time.
    A request's row is final when it is added (the engine never changes an ended request)."""

    __slots__ = ("names", "cols")

    def __init__(self, with_tenant: bool = False) -> None:
        self.names = REQUEST_COLUMNS + ["tenant"] if with_tenant else list(REQUEST_COLUMNS)
        # typed list of lists: compiled, ``c[i].append(x)`` is a direct list append (bound
        # ``append`` methods called through the generic call protocol cost ≈ 3× more)
        self.cols: list[list[Any]] = [[] for _ in self.names]

    def __len__(self) -> int:
        return len(self.cols[0])

    def copy(self) -> "RequestRows":
        """The same rows in new lists (adding to the copy leaves these alone)."""
        out = RequestRows(len(self.names) > len(REQUEST_COLUMNS))
        for c, mine in zip(out.cols, self.cols):
            c.extend(mine)
        return out

    def add(self, req: Request) -> None:
        # written out, one line per column in REQUEST_COLUMNS order: a loop over
        # attrgetter(*names) takes 0.75 µs per request instead of 0.35 µs (≈ 1% of a chat run);
        # tests/test_streaming.py checks every column against the field of its name
        c = self.cols
        c[0].append(req.request_id)
        c[1].append(req.arrival_s)
        c[2].append(req.first_scheduled_s)
        c[3].append(req.first_token_s)
        c[4].append(req.finish_s)
        c[5].append(req.num_prompt_tokens)
        c[6].append(req.num_output_tokens)
        c[7].append(req.num_cached_tokens)
        c[8].append(req.num_preemptions)
        c[9].append(req.pool)
        c[10].append(req.replica)
        c[11].append(req.status)
        c[12].append(req.reason)
        if len(c) > 13:
            c[13].append(req.tenant)

    def frame(self, sort_by_id: bool = False) -> pd.DataFrame:
        """The rows added so far, in that order, or sorted by request_id (stable) with
        ``sort_by_id`` (times not reached yet, None on the request, become NaN: numpy converts
        None to NaN in a float array).

        Each column is what ``pd.DataFrame({name: column})`` makes of it: the float and int
        columns through ``np.array(column, dtype=float / np.int64)``, the others inferred by
        pandas — built faster where that gives the same column (:func:`_float_column`,
        :func:`_int_column`, :func:`_object_column`). Sorting the columns before the frame is
        built gives the frame ``sort_values("request_id", kind="stable")`` gives (request ids
        that are not all ints are sorted that way)."""
        cols: dict[str, Any] = {}
        for name, v in zip(self.names, self.cols):
            if name in _FLOAT_COLUMNS:
                cols[name] = _float_column(v)
            elif name in _INT_COLUMNS:
                cols[name] = _int_column(v)
            else:
                cols[name] = _object_column(v)
        if not sort_by_id or not len(self):
            return pd.DataFrame(cols)
        ids = cols["request_id"]
        if not (isinstance(ids, np.ndarray) and ids.dtype == np.int64):
            df = pd.DataFrame(cols)
            return df.sort_values("request_id", kind="stable").reset_index(drop=True)
        order = np.argsort(ids, kind="stable")
        return pd.DataFrame({name: _take(col, order) for name, col in cols.items()})


# --------------------------------------------------------------------------------------------
# End-of-run tables: Python values to columns
# --------------------------------------------------------------------------------------------
# pandas infers a column from a list of Python objects at ≈ 700 instructions per value (an
# object array, then a type scan, then the conversion), and the timeline's list of row tuples
# costs ≈ 7,000 per row (a 2-D object array first); np.array(values, dtype) ≈ 280 per value.
# struct.pack_into writes a list of floats or ints into a numpy buffer at ≈ 90 per value, with
# the same conversion (PyFloat_AsDouble, PyNumber_Index). Columns of a few distinct strings are
# inferred once from their distinct values and expanded with ``take``. Each helper gives
# exactly the column of the slow way, and falls back to it for values it does not handle.

def _packed(values: list, code: str, dtype: Any) -> Any:
    """``values`` packed by ``struct`` format ``code`` into a new numpy array of ``dtype``;
    None when ``struct`` refuses a value (not a number, an int out of range)."""
    n = len(values)
    out: Any = np.empty(n, dtype=dtype)
    try:
        struct.pack_into(f"{n}{code}", out, 0, *values)
    except (struct.error, OverflowError, TypeError, ValueError):
        return None
    return out


def _float_column(values: list) -> Any:
    """``np.array(values, dtype=float)``."""
    out = _packed(values, "d", np.float64)
    # (struct refuses None, which numpy makes NaN, and strings, which numpy parses)
    return np.array(values, dtype=float) if out is None else out


def _int_column(values: list) -> Any:
    """``np.array(values, dtype=np.int64)``."""
    out = _packed(values, "q", np.int64)
    # (struct refuses floats, which numpy truncates, and None, which numpy refuses too)
    return np.array(values, dtype=np.int64) if out is None else out


def _object_column(values: list) -> Any:
    """What ``pd.DataFrame`` makes of the list ``values`` (pandas' type inference): an int64
    array when every value is an int (not a bool) that fits; for strings and None only, the
    column pandas infers from the distinct values, expanded by ``take`` (the same dtype: the
    inference depends on which values occur, not on how often); else ``values`` itself."""
    if not values:
        return values
    first = values[0]
    all_int = True
    all_str = True
    same = True            # every value is the object ``first`` (one pool, all None, ...)
    for x in values:
        if x is first:
            continue
        same = False
        if all_int and not _is_int(x):
            all_int = False
        if all_str and not (x is None or type(x) is str):
            all_str = False
        if not all_int and not all_str:
            return values
    all_int = all_int and _is_int(first)
    all_str = all_str and (first is None or type(first) is str)
    if all_int:
        out = _packed(values, "q", np.int64)
        return values if out is None else out
    if not all_str:
        return values
    if same:
        return _take(pd.Series([first]).array, np.zeros(len(values), dtype=np.int64))
    return _take(*_str_codes(values))


def _codes(values: list, distinct: list) -> list[int]:
    """Codes of ``values`` into ``distinct``, which gets each new value appended, in the order
    of first appearance."""
    index: dict[Any, int] = {}
    codes: list[int] = []
    last: Any = index         # (no value is this dict)
    c = -1
    for x in values:
        if x is not last:     # runs of the same object (a pool's name, "finished") skip the dict
            got = index.get(x)
            if got is None:
                c = index[x] = len(distinct)
                distinct.append(x)
            else:
                c = got
            last = x
        codes.append(c)
    return codes


def _str_codes(values: list) -> tuple[Any, Any]:
    """(the column pandas infers from the distinct values of ``values``, int64 codes of
    ``values`` into it)."""
    distinct: list[Any] = []
    codes = _codes(values, distinct)
    return pd.Series(distinct).array, _int_column(codes)


def _take(col: Any, order: Any) -> Any:
    """``col`` (numpy array, pandas extension array or list) in the order of the int64 array
    ``order``."""
    if isinstance(col, list):
        return [col[i] for i in order.tolist()]
    return col.take(order)


def timeline_table(rows: list) -> pd.DataFrame:
    """The timeline DataFrame of sample rows (:data:`TIMELINE_COLUMNS`, the tuples
    :meth:`Recorder.sample` received), sorted by (time_s, pool, replica), stable: exactly
    ``pd.DataFrame(rows, columns=TIMELINE_COLUMNS).sort_values([...], kind="stable")
    .reset_index(drop=True)``, several times faster (pandas builds a 2-D object array, then
    infers each column: ≈ 8,000 instructions per row). Rows of the engine's types (float time
    and KV usage, str pool, int replica and counts within int64) are split into columns here
    (the pool as codes into its names), each packed with :func:`_packed`, and sorted with
    ``np.lexsort`` (stable; the pools ranked by name, as str compares); any other row goes
    the pandas way."""
    n = len(rows)
    if n == 0:
        return _timeline_table_pandas(rows)
    times: list[Any] = []
    reps: list[Any] = []
    waiting: list[Any] = []
    running: list[Any] = []
    kv: list[Any] = []
    finished: list[Any] = []
    tokens: list[Any] = []
    pools: list[Any] = []
    for row in rows:
        if not isinstance(row, tuple) or len(row) != 8:
            return _timeline_table_pandas(rows)
        r: tuple = row
        t = r[0]
        p = r[1]
        i = r[2]
        nw = r[3]
        nr = r[4]
        u = r[5]
        nf = r[6]
        to = r[7]
        if not (_is_float(t) and _is_int(i) and _is_int(nw) and _is_int(nr) and _is_float(u)
                and _is_int(nf) and _is_int(to)):
            return _timeline_table_pandas(rows)
        if type(p) is not str:
            return _timeline_table_pandas(rows)
        pools.append(p)
        times.append(t)
        reps.append(i)
        waiting.append(nw)
        running.append(nr)
        kv.append(u)
        finished.append(nf)
        tokens.append(to)
    names: list[Any] = []
    codes = _codes(pools, names)
    ints = [_packed(c, "q", np.int64) for c in (reps, waiting, running, finished, tokens)]
    if any(a is None for a in ints):       # an int beyond int64
        return _timeline_table_pandas(rows)
    time_a = _float_column(times)
    kv_a = _float_column(kv)
    code_a = _int_column(codes)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
    order = np.lexsort((ints[0], rank.take(code_a), time_a))
    pool_col = pd.Series(names).array      # what pandas infers from the names (as from rows)
    cols = [time_a.take(order), pool_col.take(code_a.take(order)), ints[0].take(order),
            ints[1].take(order), ints[2].take(order), kv_a.take(order), ints[3].take(order),
            ints[4].take(order)]
    return pd.DataFrame(dict(zip(TIMELINE_COLUMNS, cols)))


def _is_float(x: Any) -> bool:
    return isinstance(x, float)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _timeline_table_pandas(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=TIMELINE_COLUMNS)
    if len(df):
        df = df.sort_values(["time_s", "pool", "replica"], kind="stable").reset_index(drop=True)
    return df


def request_rows_frame(reqs, with_tenant: bool = False) -> pd.DataFrame:
    """The raw request table of ``reqs`` (see :class:`RequestRows`), in that order."""
    rows = RequestRows(with_tenant)
    for r in reqs:
        rows.add(r)
    return rows.frame()


# --------------------------------------------------------------------------------------------
# Streaming (runs too long to hold every row): rows go to a file in chunks
# --------------------------------------------------------------------------------------------

#: Rows per chunk (= per parquet row group) of a streaming run.
STREAM_CHUNK_ROWS = 65_536
#: Rows kept in the uniform random sample of a streaming run (for the HTML report).
STREAM_SAMPLE_ROWS = 100_000
#: ITL samples buffered before they are folded into the histogram (in lists: ≈ 40-60 bytes
#: each, so the buffer stays under ≈ 4 MB).
ITL_FLUSH_ENTRIES = 1 << 16

_STR_COLUMNS = ("pool", "status", "reason", "tenant")


class HistogramItl(ItlRecorder):
    """ITL sink of a streaming run: the same ``add(gap_s, count)`` (two appends), folded into
    a :class:`~llmsim.metrics.streaming.LogHistogram` (``hist``) every ``flush_at`` entries by
    :meth:`maybe_flush`. ``arrays()`` returns the histogram as a weighted sample (bin values,
    token counts), at most ~27,600 entries."""

    __slots__ = ("hist", "flush_at")

    def __init__(self, flush_at: int = ITL_FLUSH_ENTRIES) -> None:
        super().__init__()
        from llmsim.metrics.streaming import LogHistogram
        self.hist = LogHistogram()
        self.flush_at = flush_at

    def maybe_flush(self) -> None:
        if len(self.gaps_s) >= self.flush_at:
            self.flush()

    def flush(self) -> None:
        if self.pending():
            self.hist.add(*self._take())

    def spill(self) -> None:
        self.flush()

    def arrays(self):
        self.flush()
        return self.hist.nonzero()


def _arrow_schema(df: pd.DataFrame):
    """Fixed arrow schema of the request table (types do not depend on one chunk's values:
    string columns stay strings even when a chunk holds only nulls)."""
    import pyarrow as pa
    fields = []
    for c in df.columns:
        s = df[c]
        if c in _STR_COLUMNS:
            t = pa.string()
        elif pd.api.types.is_bool_dtype(s):
            t = pa.bool_()
        elif pd.api.types.is_integer_dtype(s):
            t = pa.int64()
        elif pd.api.types.is_float_dtype(s):
            t = pa.float64()
        elif len(s) == 0 and c in ("request_id", "replica"):
            t = pa.int64()
        else:
            t = pa.string()
        fields.append(pa.field(c, t))
    return pa.schema(fields)


class RequestFileWriter:
    """Appends chunks of the request table to one file: parquet (one row group per chunk,
    schema fixed by the first chunk, see :func:`_arrow_schema`) or CSV (header once)."""

    def __init__(self, path, fmt: str = "parquet") -> None:
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"unknown request file format {fmt!r} (parquet or csv)")
        self.path = Path(path)
        self.fmt = fmt
        self.rows = 0
        self._writer: Any = None
        self._schema: Any = None
        self._fh: Any = None

    def write(self, df: pd.DataFrame) -> None:
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            if self._writer is None:
                self._schema = _arrow_schema(df)
                self._writer = pq.ParquetWriter(self.path, self._schema)
            table = pa.Table.from_pandas(df, schema=self._schema, preserve_index=False)
            self._writer.write_table(table.replace_schema_metadata(None),
                                     row_group_size=max(len(df), 1))
        else:
            first = self._fh is None
            if first:
                self._fh = open(self.path, "w", newline="", encoding="utf-8")
            df.to_csv(self._fh, header=first, index=False)
        self.rows += len(df)

    def close(self, empty: pd.DataFrame | None = None) -> Path:
        """Finish the file; when nothing was written, write ``empty`` (columns only)."""
        if self._writer is None and self._fh is None and empty is not None:
            self.write(empty)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file (after an error)."""
        try:
            self.close()
        finally:
            self.path.unlink(missing_ok=True)


def iter_request_chunks(path, chunk_rows: int = STREAM_CHUNK_ROWS):
    """DataFrame chunks of a request file written by :class:`RequestFileWriter` (parquet by
    row groups / record batches, CSV by ``chunk_rows``), in file order."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    else:
        dtypes = {c: "str" for c in _STR_COLUMNS}
        yield from pd.read_csv(path, chunksize=chunk_rows, dtype=dtypes)


def copy_request_file(src, dest) -> Path:
    """Copy (same format) or convert chunk by chunk (parquet ↔ CSV, by the suffix of
    ``dest``) a request file; memory stays at one chunk."""
    src, dest = Path(src), Path(dest)
    if src.resolve() == dest.resolve():
        return dest
    if src.suffix == dest.suffix:
        shutil.copyfile(src, dest)
        return dest
    w = RequestFileWriter(dest, "parquet" if dest.suffix == ".parquet" else "csv")
    try:
        last = None
        for chunk in iter_request_chunks(src):
            w.write(chunk)
            last = chunk
        w.close(empty=None if last is None else last.iloc[:0])
    except BaseException:
        w.abort()
        raise
    return dest


class ReservoirSample:
    """Uniform random sample of at most ``size`` rows of a stream of DataFrame chunks
    (Vitter's Algorithm R, vectorized per chunk; ``rng`` is a ``numpy.random.Generator``).
    Memory: ``size`` rows."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = int(size)
        self.rng = rng
        self.seen = 0
        self._cols: dict[str, np.ndarray] | None = None

    def add(self, df: pd.DataFrame) -> None:
        n = len(df)
        if n == 0 or self.size == 0:
            self.seen += n
            return
        arrays = {c: df[c].to_numpy() for c in df.columns}
        if self._cols is None:
            self._cols = {c: np.empty(self.size, dtype=a.dtype if a.dtype.kind in "biuf"
                                      else object) for c, a in arrays.items()}
        seen = self.seen
        fill = max(0, min(n, self.size - seen))
        if fill:
            for c, a in arrays.items():
                self._cols[c][seen:seen + fill] = a[:fill]
        if n > fill:
            t = np.arange(seen + fill, seen + n, dtype=np.int64)
            j = self.rng.integers(0, t + 1)
            hit = np.flatnonzero(j < self.size)
            if hit.size:
                slots = j[hit]
                # sequential semantics: a later row replacing the same slot wins
                _, first_rev = np.unique(slots[::-1], return_index=True)
                keep = slots.size - 1 - first_rev
                rows = hit[keep] + fill
                for c, a in arrays.items():
                    self._cols[c][slots[keep]] = a[rows]
        self.seen += n

    def frame(self) -> pd.DataFrame | None:
        """The sample (sorted by request_id when present); None before any row."""
        if self._cols is None:
            return None
        m = min(self.seen, self.size)
        df = pd.DataFrame({c: a[:m] for c, a in self._cols.items()})
        if "request_id" in df.columns and len(df):
            df = df.sort_values("request_id", kind="stable").reset_index(drop=True)
        return df


class StreamingRecorder:
    """Recorder of a streaming run (same engine-facing interface as :class:`Recorder`).

    Ended requests are buffered (at most ``chunk_rows``), then turned into table rows with the
    derived columns (``add_derived_columns`` with the targets given to :meth:`bind_slo`, which
    must be called before the first chunk), folded into ``totals`` (a
    :class:`~llmsim.metrics.streaming.StreamingSummary`) and ``reservoir`` (a seeded uniform
    sample of ``sample_rows`` rows), appended to ``path`` and released. The ITL sample goes into
    a histogram (:class:`HistogramItl`); timeline samples stay in memory (columnar, a few bytes
    per sample). ``requests_frame(unfinished)`` writes the remaining rows, closes the file and
    returns an empty table: the rows are in ``path``, in the order the requests ended
    (unfinished ones last), not sorted. ``chunk_rows``/``sample_rows`` default to
    :data:`STREAM_CHUNK_ROWS`/:data:`STREAM_SAMPLE_ROWS` (read when the recorder is built)."""

    def __init__(self, path, *, with_tenant: bool = False, fmt: str = "parquet",
                 chunk_rows: int | None = None, sample_rows: int | None = None, seed=None) -> None:
        self.path = Path(path)
        self.with_tenant = with_tenant
        self.chunk_rows = int(STREAM_CHUNK_ROWS if chunk_rows is None else chunk_rows)
        self.itl = HistogramItl()
        self.writer = RequestFileWriter(self.path, fmt)
        self.reservoir = ReservoirSample(STREAM_SAMPLE_ROWS if sample_rows is None
                                         else sample_rows, np.random.default_rng(seed))
        self.totals: Any = None
        self._slo: Any = None
        self._class_slo: Any = None
        self._pending = RequestRows(with_tenant)     # rows not written yet
        self._closed = False
        self._tl = {c: (array("d") if c in ("time_s", "kv_usage") else
                        list() if c in ("pool", "replica") else array("q"))
                    for c in TIMELINE_COLUMNS}

    def bind_slo(self, slo=None, class_slo=None) -> None:
        """Set the SLO targets (global, per class) that ``slo_met`` is computed with."""
        from llmsim.metrics.streaming import StreamingSummary
        self._slo = slo
        self._class_slo = class_slo
        self.totals = StreamingSummary(slo, class_slo)

    @property
    def rows_written(self) -> int:
        return self.writer.rows

    def request_ended(self, req) -> None:
        pending = self._pending
        pending.add(req)
        if len(pending) >= self.chunk_rows:
            self._flush()
        elif len(self.itl.gaps_s) >= self.itl.flush_at:
            self.itl.flush()

    def _flush(self) -> None:
        if self.totals is None:
            raise RuntimeError("StreamingRecorder.bind_slo must be called before rows arrive")
        rows, self._pending = self._pending, RequestRows(self.with_tenant)
        df = rows.frame()
        del rows
        df = add_derived_columns(df, self._slo, self._class_slo)
        self.totals.add(df)
        self.reservoir.add(df)
        self.writer.write(df)
        self.itl.maybe_flush()

    def sample(self, row: tuple) -> None:
        for col, v in zip(self._tl.values(), row):
            col.append(v)

    def requests_frame(self, extra_requests=()) -> pd.DataFrame:
        """Write ``extra_requests`` and what is buffered, close the file; returns the empty
        table (columns only)."""
        if self._closed:
            raise RuntimeError("the streaming request file is already closed")
        for req in extra_requests:
            self._pending.add(req)
        if len(self._pending):
            self._flush()
        empty = add_derived_columns(request_rows_frame([], self.with_tenant), self._slo,
                                    self._class_slo)
        self.writer.close(empty=empty)
        self._closed = True
        return empty

    def release(self) -> None:
        """Nothing to drop: the rows are on disk and the timeline in arrays (see
        :meth:`Recorder.release`)."""

    def abort(self) -> None:
        """Drop the partial file after a failed run."""
        self._pending = RequestRows(self.with_tenant)
        self._closed = True
        self.writer.abort()

    def timeline_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({c: (np.frombuffer(v, dtype=np.float64 if v.typecode == "d"
                                             else np.int64).copy()
                               if isinstance(v, array) else v)
                           for c, v in self._tl.items()}, columns=TIMELINE_COLUMNS)
        if len(df):
            df = df.sort_values(["time_s", "pool", "replica"], kind="stable").reset_index(drop=True)
        return df
