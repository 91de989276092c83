"""Read whole integer columns of a file into memory (for empirical length distributions):
CSV with a header (``.csv``/``.csv.gz`` or anything not JSON/Parquet), JSONL / JSON array of
objects, Parquet. Every value must be an integer >= 1; anything else is an InputError naming
file, line and column. Memory: 8 bytes per value."""
from __future__ import annotations

import csv
from array import array
from pathlib import Path

import numpy as np

from llmsim.errors import InputError, input_problem
from llmsim.workload.readers.base import BadRow, check_file, not_utf8, open_text, parse_tokens
from llmsim.workload.readers.jsonio import first_char, iter_records


def read_columns(path: Path, columns: list[str], key: str | None = None) -> list[np.ndarray]:
    path = Path(path)
    where = str(path)
    check_file(path)
    out = [array("q") for _ in columns]

    def fail(line, exc: BadRow):
        raise InputError(input_problem(exc.message, where=where, line=line, key=exc.column,
                                       value=exc.value))

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            raise InputError(input_problem(f"not a Parquet file ({exc})", where=where)) from None
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise InputError(input_problem(f"file lacks column(s) {missing}", where=where, key=key,
                                           value=pf.schema_arrow.names))
        row = 0
        for batch in pf.iter_batches(batch_size=65536, columns=columns):
            cols = [batch.column(batch.schema.get_field_index(c)).to_pylist() for c in columns]
            for i in range(batch.num_rows):
                for j, c in enumerate(columns):
                    try:
                        out[j].append(parse_tokens(cols[j][i], c))
                    except BadRow as exc:
                        fail(row + i + 1, exc)
            row += batch.num_rows
    else:
        try:
            _read_text_columns(path, columns, key, out, fail)
        except UnicodeDecodeError:
            raise not_utf8(path, key) from None
        except ValueError as exc:        # a broken JSON array (cannot resynchronise)
            raise InputError(input_problem(f"not valid JSON ({exc})", where=where, key=key)) \
                from None
    if len(out[0]) == 0:
        raise InputError(input_problem("file has no data rows", where=where, key=key))
    return [np.frombuffer(a, dtype=np.int64).copy() for a in out]


def _read_text_columns(path: Path, columns: list[str], key, out, fail) -> None:
    """The CSV / JSON part of :func:`read_columns`."""
    where = str(path)
    with open_text(path) as f:
        ch = first_char(f)
        if ch in ("[", "{"):
            for line, obj in iter_records(f):
                if isinstance(obj, Exception):
                    fail(line, BadRow(None, None, f"line is not valid JSON ({obj})"))
                if not isinstance(obj, dict):
                    fail(line, BadRow(None, obj, "record is not a JSON object"))
                for j, c in enumerate(columns):
                    try:
                        if c not in obj:
                            raise BadRow(c, None, "missing key")
                        out[j].append(parse_tokens(obj[c], c))
                    except BadRow as exc:
                        fail(line, exc)
        else:
            rd = csv.reader(f)
            header = [h.strip().lstrip("\ufeff") for h in next(rd, [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise InputError(input_problem(f"header lacks column(s) {missing}", where=where,
                                               line=1, key=key, value=header))
            twice = [c for c in columns if header.count(c) > 1]
            if twice:
                raise InputError(input_problem(
                    f"header names column(s) {twice} more than once; which one holds the "
                    "values is ambiguous", where=where, line=1, key=key, value=header))
            idx = [header.index(c) for c in columns]
            for row in rd:
                if not row:
                    continue
                if len(row) > len(header):
                    fail(rd.line_num, BadRow(None, row[len(header):], f"row has {len(row)} "
                                             f"fields, the header {len(header)}"))
                for j, c in enumerate(columns):
                    try:
                        if idx[j] >= len(row):
                            raise BadRow(c, None, "missing column")
                        out[j].append(parse_tokens(row[idx[j]], c))
                    except BadRow as exc:
                        fail(rd.line_num, exc)


def check_columns(path: Path, columns: list[str], key: str | None = None) -> None:
    """Cheap check for :func:`read_columns`: the file exists, is not empty and has the columns
    (header / first record / Parquet schema). Raises InputError."""
    path = Path(path)
    where = str(path)
    check_file(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:
            raise InputError(input_problem(f"not a Parquet file ({exc})", where=where)) from None
    else:
        try:
            names = _text_names(path)
        except UnicodeDecodeError:
            raise not_utf8(path, key) from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(input_problem(f"file lacks column(s) {missing}", where=where, line=1,
                                       key=key, value=names))


def _text_names(path: Path) -> list[str]:
    """Column names of a CSV header or of the first JSON record."""
    with open_text(path) as f:
        if first_char(f) not in ("[", "{"):
            return [h.strip().lstrip("\ufeff") for h in next(csv.reader(f), [])]
        try:
            for _, obj in iter_records(f):
                return list(obj) if isinstance(obj, dict) else []
        except UnicodeDecodeError:
            raise
        except ValueError as exc:
            raise InputError(input_problem(f"not valid JSON ({exc})", where=str(path))) from None
    return []
