"""Generic Parquet trace reader: record batches of 65,536 rows via
``pyarrow.parquet.ParquetFile.iter_batches`` (memory bounded by one batch). "line" in messages is
the 1-based data row number."""
from __future__ import annotations

import numpy as np

from llmsim.workload.readers.base import BadRow, TraceReader, check_hash_ids, parse_tokens
from llmsim.workload.readers.csv_readers import _TIME_SCALE, parse_hash_ids

BATCH_ROWS = 65536


def _open(path, where):
    import pyarrow.parquet as pq
    from llmsim.errors import InputError, input_problem
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError subclasses
        raise InputError(input_problem(f"not a Parquet file ({exc})", where=where)) from None


class ParquetReader(TraceReader):
    format = "parquet"

    def __init__(self, path, *, arrival, prompt, output, session=None, hash_ids=None,
                 time_unit="s", hash_block_tokens=16, on_bad_row="error", counts=None):
        super().__init__(path, on_bad_row, counts)
        self.cols = {"arrival": arrival, "prompt": prompt, "output": output,
                     "session": session, "hash_ids": hash_ids}
        self.time_unit = time_unit
        self.has_timestamps = arrival is not None
        self.hash_block_tokens = hash_block_tokens if hash_ids else 0

    def _names(self):
        return [c for c in self.cols.values() if c is not None]

    def _check_header(self):
        pf = _open(self.path, self.where)
        names = set(pf.schema_arrow.names)
        missing = [c for c in self._names() if c not in names]
        if missing:
            raise self.header_error(f"Parquet file lacks column(s) {missing}", value=sorted(names))
        if pf.metadata.num_rows == 0:
            raise self.header_error("Parquet file has no rows")

    def _times(self, col) -> tuple[np.ndarray, object]:
        """(seconds as float64 with NaN for unusable, the column: raw values for messages)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        if pa.types.is_boolean(col.type):              # true/false is no time
            return np.full(len(col), np.nan), col
        if pa.types.is_timestamp(col.type):
            ns = pc.cast(col, pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64())
            arr = ns.to_numpy(zero_copy_only=False).astype(np.float64) * 1e-9
            return np.where(col.is_null().to_numpy(zero_copy_only=False), np.nan, arr), col
        if self.time_unit == "datetime":
            from datetime import datetime, timezone
            vals = col.to_pylist()
            out = np.empty(len(vals))
            for i, v in enumerate(vals):
                try:
                    d = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
                    if d.tzinfo is None:       # naive: read as UTC (no local-time/DST shifts)
                        d = d.replace(tzinfo=timezone.utc)
                    out[i] = d.timestamp()
                except (TypeError, ValueError):
                    out[i] = np.nan
            return out, col
        try:
            arr = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            vals = col.to_pylist()
            arr = np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in vals])
        return arr * _TIME_SCALE[self.time_unit], col

    def _rows(self):
        pf = _open(self.path, self.where)
        self._check_header()
        counts = self.counts
        c = self.cols
        row0 = 0
        t0 = None
        last_t = None
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=self._names()):
            n = batch.num_rows
            get = lambda name: batch.column(batch.schema.get_field_index(name))  # noqa: E731
            P = get(c["prompt"]).to_pylist()
            O = get(c["output"]).to_pylist()
            T, T_raw = self._times(get(c["arrival"])) if c["arrival"] else (None, None)
            S = get(c["session"]).to_pylist() if c["session"] else None
            H = get(c["hash_ids"]).to_pylist() if c["hash_ids"] else None
            for i in range(n):
                counts["rows_read"] += 1
                try:
                    p = parse_tokens(P[i], c["prompt"])
                    o = parse_tokens(O[i], c["output"])
                    h = None
                    if H is not None and H[i] is not None:
                        h = check_hash_ids(H[i], c["hash_ids"]) if isinstance(H[i], list) \
                            else parse_hash_ids(str(H[i]), c["hash_ids"])
                    if T is not None:
                        v = float(T[i])
                        if not np.isfinite(v):
                            raise BadRow(c["arrival"], T_raw[i].as_py(),
                                         "timestamp is missing or not "
                                         + ("a finite number" if self.time_unit != "datetime"
                                            else "an ISO 8601 date-time"))
                        if t0 is None:
                            t0 = v
                        t = v - t0
                        if last_t is not None and t < last_t:
                            raise BadRow(c["arrival"], t, "timestamp goes backwards; rows must be "
                                         "in time order")
                        last_t = t
                    else:
                        t = None
                    s = S[i] if S is not None else None
                    yield (t, p, o, h, s, None, 0)
                except BadRow as exc:
                    self.bad(row0 + i + 1, exc)
            row0 += n
