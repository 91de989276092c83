"""CSV trace readers (Python ``csv`` module, one row at a time; ``.csv.gz`` works too).

* ``azure2023`` / ``azure2024`` — Azure LLM inference traces: ``TIMESTAMP`` (ISO wall clock;
  2024 adds ``+00:00``), ``ContextTokens``, ``GeneratedTokens``.
* ``burstgpt`` — ``Timestamp`` (s), ``Model``, ``Request tokens``, ``Response tokens``,
  ``Total tokens``, ``Log Type`` and, in newer releases, ``Session ID`` and ``Elapsed time``.
  Filters on Model / Log Type; Response tokens = 0 marks a failed request (dropped and counted in
  ``failed_rows`` by default, or kept with one output token and ``extra={'failed': True}``).
* ``lengths`` — lengths only (e.g. Vidur's ``num_prefill_tokens``, ``num_decode_tokens``).
* ``csv`` — any CSV with a header and a column mapping (arrival in s/ms/us/ns or ISO datetime).

Line numbers in messages are physical lines of the file (the header is line 1).
"""
from __future__ import annotations

import csv
import json
from datetime import datetime

from llmsim.workload.readers.base import MAX_TOKENS, BadRow, TraceReader, check_hash_ids, \
    open_text, parse_tokens

_TIME_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Log Type")


def parse_hash_ids(value: str, column: str) -> list[int] | None:
    """``[1, 2, 3]`` (JSON) or ``1 2 3`` / ``1;2;3``; empty → None."""
    s = value.strip()
    if not s:
        return None
    try:
        if s[0] == "[":
            ids = json.loads(s)
        else:
            ids = [int(x) for x in s.replace(";", " ").split()]
    except ValueError:
        raise BadRow(column, value, "hash ids must be a JSON list or space/semicolon separated "
                     "integers") from None
    if not isinstance(ids, list):
        raise BadRow(column, value, "hash ids must be a list")
    return check_hash_ids(ids, column)


class CsvReader(TraceReader):
    """Generic CSV reader driven by a column spec; the named formats are thin subclasses.

    ``time_unit`` is ``datetime`` (ISO 8601 text, via ``datetime.fromisoformat``) or a numeric
    unit; times become seconds from the first data row.
    """

    format = "csv"

    def __init__(self, path, *, arrival: str | None, prompt: str, output: str,
                 session: str | None = None, hash_ids: str | None = None,
                 time_unit: str = "s", delimiter: str = ",", hash_block_tokens: int = 16,
                 on_bad_row: str = "error", counts: dict | None = None):
        super().__init__(path, on_bad_row, counts)
        self.cols = {"arrival": arrival, "prompt": prompt, "output": output,
                     "session": session, "hash_ids": hash_ids}
        self.time_unit = time_unit
        self.delimiter = delimiter
        self.has_timestamps = arrival is not None
        self.hash_block_tokens = hash_block_tokens if hash_ids else 0

    # ----------------------------------------------------------------------------------
    def required_columns(self) -> list[str]:
        return [c for c in self.cols.values() if c is not None]

    def _read_header(self, rd) -> dict[str, int]:
        try:
            header = next(rd)
        except StopIteration:
            raise self.header_error("trace file is empty") from None
        except csv.Error as exc:
            raise self.header_error(f"not a CSV file ({exc})") from None
        header = [h.strip().lstrip("\ufeff") for h in header]
        index = {h: i for i, h in enumerate(header)}
        missing = [c for c in self.required_columns() if c not in index]
        if missing:
            raise self.header_error(
                f"header lacks column(s) {missing} needed by format '{self.format}'", value=header)
        twice = [c for c in self.required_columns() if header.count(c) > 1]
        if twice:
            raise self.header_error(f"header names column(s) {twice} more than once; which one "
                                    "holds the values is ambiguous", value=header)
        self._width = len(header)
        return index

    def _check_header(self) -> None:
        with open_text(self.path) as f:
            rd = csv.reader(f, delimiter=self.delimiter)
            self._read_header(rd)
            try:
                first = next(rd, None)
            except csv.Error as exc:
                raise self.header_error(f"not a CSV file ({exc})") from None
            if first is None:
                raise self.header_error("trace file has a header but no data rows")

    # hooks for subclasses ----------------------------------------------------------------
    def _filter(self, row) -> bool:          # True: keep
        return True

    def _output_tokens(self, row, i_o) -> tuple[int, dict | None] | None:
        return parse_tokens(row[i_o], self.cols["output"]), None

    # ----------------------------------------------------------------------------------
    def _rows(self):
        counts = self.counts
        with open_text(self.path) as f:
            rd = csv.reader(f, delimiter=self.delimiter)
            index = self._read_header(rd)
            c = self.cols
            i_t = index[c["arrival"]] if c["arrival"] else None
            i_p, i_o = index[c["prompt"]], index[c["output"]]
            i_s = index[c["session"]] if c["session"] else None
            i_h = index[c["hash_ids"]] if c["hash_ids"] else None
            need = max(i for i in (i_t, i_p, i_o, i_s, i_h) if i is not None) + 1
            width = self._width
            iso = self.time_unit == "datetime"
            scale = _TIME_SCALE.get(self.time_unit, 1.0)
            fromiso = datetime.fromisoformat
            t0 = None
            last_t = None
            simple = i_s is None and i_h is None and type(self)._filter is CsvReader._filter \
                and type(self)._output_tokens is CsvReader._output_tokens
            while True:
                try:
                    row = next(rd)
                except StopIteration:
                    break
                except csv.Error as exc:
                    self.bad(rd.line_num, BadRow(None, None, f"malformed CSV ({exc})"))
                    continue
                if not row:
                    continue       # blank line
                counts["rows_read"] += 1
                try:
                    if len(row) != width:
                        raise BadRow(self._missing(row, index), None if len(row) < need else
                                     row[width:], f"row has {len(row)} fields, the header {width}")
                    if not simple and not self._filter(row):
                        counts["filtered_rows"] += 1
                        continue
                    # fast path: plain integers
                    try:
                        p = int(row[i_p])
                        if p < 1 or p > MAX_TOKENS:
                            raise ValueError
                    except ValueError:
                        p = parse_tokens(row[i_p], c["prompt"])
                    if not simple:
                        res = self._output_tokens(row, i_o)
                        if res is None:
                            continue
                        o, extra = res
                    else:
                        extra = None
                        try:
                            o = int(row[i_o])
                            if o < 1 or o > MAX_TOKENS:
                                raise ValueError
                        except ValueError:
                            o = parse_tokens(row[i_o], c["output"])
                    if not simple:       # finish validating the row before it can set t0
                        s = row[i_s] if i_s is not None else None
                        h = parse_hash_ids(row[i_h], c["hash_ids"]) if i_h is not None else None
                    if i_t is not None:
                        raw = row[i_t]
                        if iso:
                            try:
                                v = fromiso(raw.strip())
                            except ValueError:
                                raise BadRow(c["arrival"], raw, "timestamp is not an ISO 8601 "
                                             "date-time") from None
                            if t0 is None:
                                t0 = v
                            try:
                                t = (v - t0).total_seconds()
                            except TypeError:
                                raise BadRow(c["arrival"], raw, "timestamp mixes time-zone aware "
                                             "and naive values") from None
                        else:
                            try:
                                v = float(raw) * scale
                            except ValueError:
                                raise BadRow(c["arrival"], raw, "timestamp is not a number") from None
                            if v != v or v in (float("inf"), float("-inf")):
                                raise BadRow(c["arrival"], raw, "timestamp is not finite")
                            if t0 is None:
                                t0 = v
                            t = v - t0
                        if last_t is not None and t < last_t:
                            raise BadRow(c["arrival"], raw, f"timestamp goes backwards (previous "
                                         f"row at {last_t:.6f} s from the first, this one at "
                                         f"{t:.6f} s); rows must be in time order")
                        last_t = t
                    else:
                        t = None
                    if simple:
                        yield (t, p, o, None, None, None, 0)
                    else:
                        yield (t, p, o, h, s if s != "" else None, extra, 0)
                except BadRow as exc:
                    self.bad(rd.line_num, exc)

    def _missing(self, row, index) -> str:
        for name in self.required_columns():
            if index[name] >= len(row):
                return name
        return None


class AzureReader(CsvReader):
    format = "azure2023"

    def __init__(self, path, fmt: str = "azure2023", **kw):
        super().__init__(path, arrival="TIMESTAMP", prompt="ContextTokens",
                         output="GeneratedTokens", time_unit="datetime", **kw)
        self.format = fmt


class BurstGPTReader(CsvReader):
    format = "burstgpt"

    def __init__(self, path, models=None, log_types=None, failed="drop", **kw):
        super().__init__(path, arrival="Timestamp", prompt="Request tokens",
                         output="Response tokens", time_unit="s", **kw)
        self.models = set(models) if models else None
        self.log_types = set(log_types) if log_types else None
        self.failed = failed
        self._i_model = self._i_log = self._i_sess = None

    def required_columns(self):
        return list(BURSTGPT_COLUMNS)

    def _read_header(self, rd):
        index = super()._read_header(rd)
        self._i_model = index["Model"]
        self._i_log = index["Log Type"]
        if "Session ID" in index:
            self.cols["session"] = "Session ID"
        return index

    def filtered_out_message(self) -> str:
        kept = [f"{k} {sorted(v)}" for k, v in (("models", self.models),
                                                  ("log_types", self.log_types)) if v]
        return (f"every row was filtered out by {' and '.join(kept)}; check the spelling "
                "against the file's 'Model' / 'Log Type' values")

    def _filter(self, row) -> bool:
        if self.models is not None and row[self._i_model] not in self.models:
            return False
        if self.log_types is not None and row[self._i_log] not in self.log_types:
            return False
        return True

    def _output_tokens(self, row, i_o):
        o = parse_tokens(row[i_o], "Response tokens", allow_zero=True)
        if o == 0:
            if self.failed == "drop":
                self.counts["failed_rows"] += 1
                return None
            return 1, {"failed": True}
        return o, None


class LengthsReader(CsvReader):
    format = "lengths"

    def __init__(self, path, prompt_column="num_prefill_tokens",
                 output_column="num_decode_tokens", **kw):
        super().__init__(path, arrival=None, prompt=prompt_column, output=output_column, **kw)
