"""The per-row loops of the trace readers, typed so that the compiled build compiles them
(``llmsim/_compiled.py``; in the pure build they are the same plain Python):

* :func:`jsonl_records` — :func:`llmsim.workload.readers.jsonio.iter_jsonl`;
* :func:`mooncake_rows` — the rows of :class:`~llmsim.workload.readers.json_readers.MooncakeReader`;
* :func:`guarded_rows` — :meth:`~llmsim.workload.readers.base.TraceReader._guarded` (every
  reader's rows pass through it).

Their contracts are those of the functions and methods that call them (documented there).
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterator

from llmsim.errors import InputError, input_problem
from llmsim.workload.readers.base import MAX_TOKENS, BadRow, check_hash_ids, not_utf8, open_text, \
    parse_tokens
from llmsim.workload.readers.jsonio import _DEC, _EOL, JSONArrayError, iter_records

_SCAN: Any = getattr(_DEC, "scan_once")


def jsonl_records(f: Any) -> Iterator[tuple[int, Any]]:
    """``(line, object or ValueError)`` per non-blank line of the text handle ``f``."""
    # A line that starts with its value and ends right after it (the common case) is parsed
    # by the C scanner that json.loads ends in, called directly, and needs no blank-line
    # check: json.loads adds three Python calls and two regex matches per line, the check a
    # copy of the line. Any other line (blank, leading or trailing blanks, invalid) goes
    # through json.loads, so records and errors are json.loads'.
    scan = _SCAN
    lineno = 0
    for raw in f:
        line: str = raw
        lineno += 1
        if lineno == 1:
            line = line.lstrip("\ufeff")     # a byte-order mark, as the CSV readers allow
        obj: Any = None
        end: int = -1
        try:
            obj, end = scan(line, 0)
        except (StopIteration, ValueError):
            end = -1
        if end == len(line) or (end > 0 and line[end:] in _EOL):
            yield lineno, obj
            continue
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            yield lineno, exc
            continue
        yield lineno, rec


def mooncake_rows(reader: Any) -> Iterator[tuple]:
    """Items of a Mooncake JSONL trace (``MooncakeReader._rows``): one per good row, ``t`` in
    seconds from the first row; bad rows go to ``reader.bad``."""
    counts: dict = reader.counts
    B: int = reader.hash_block_tokens
    have_t0 = False
    t0 = 0.0
    have_last = False
    last_t = 0.0
    with open_text(reader.path) as f:
        for line, obj in iter_records(f):
            counts["rows_read"] += 1
            try:
                if type(obj) is not dict:           # (what json makes: no checks)
                    if isinstance(obj, Exception):
                        raise BadRow(None, None, f"line is not valid JSON ({obj})")
                    if not isinstance(obj, dict):
                        raise BadRow(None, obj, "record is not a JSON object")
                rec: dict = obj
                try:
                    raw_t = rec["timestamp"]
                    p = rec["input_length"]
                    o = rec["output_length"]
                except KeyError as exc:
                    raise BadRow(exc.args[0], None, "missing key") from None
                if type(p) is not int or p < 1 or p > MAX_TOKENS:
                    p = parse_tokens(p, "input_length")
                if type(o) is not int or o < 1 or o > MAX_TOKENS:
                    o = parse_tokens(o, "output_length")
                h = rec.get("hash_ids")
                if h is not None:
                    if type(h) is not list:
                        raise BadRow("hash_ids", h, "hash_ids must be a list")
                    # check_hash_ids' checks, inline where they pass (once per row); the
                    # type test is a compiled loop (a set of the types costs ≈ 4 times more)
                    ids: list = h
                    n = len(ids)
                    all_int = True
                    for x in ids:
                        if type(x) is not int:
                            all_int = False
                            break
                    if (B and n != -(-p // B) and n != p // B) or not all_int:
                        check_hash_ids(h, "hash_ids", p, B)
                if type(raw_t) is not int and type(raw_t) is not float:
                    raise BadRow("timestamp", raw_t, "timestamp must be a number (ms)")
                try:
                    v: float = raw_t / 1000.0
                except OverflowError:
                    v = math.inf
                if not math.isfinite(v):
                    raise BadRow("timestamp", raw_t, "timestamp must be a finite number (ms)")
                if not have_t0:
                    t0 = v
                    have_t0 = True
                t = v - t0
                if have_last and t < last_t:
                    raise BadRow("timestamp", raw_t, f"timestamp goes backwards (previous row "
                                 f"at {last_t * 1000:.3f} ms from the first); rows must be in "
                                 "time order")
                last_t = t
                have_last = True
                yield (t, p, o, h, None, None, 0)
            except BadRow as exc:
                reader.bad(line, exc)


_END = object()


def guarded_rows(reader: Any) -> Iterator[Any]:
    """``reader._rows()`` with a file that is not UTF-8 or a broken JSON array turned into
    InputError naming the file, and InputError when the file has no data row or every row was
    filtered out (``TraceReader._guarded``)."""
    counts: dict = reader.counts
    n0, f0 = counts["rows_read"], counts["filtered_rows"]
    kept = False
    try:
        rows = reader._rows()
        first = next(rows, _END)
        kept = first is not _END
        if kept:
            yield first
            yield from rows
    except UnicodeDecodeError:
        raise not_utf8(reader.path) from None
    except JSONArrayError as exc:
        raise InputError(input_problem(str(exc), where=reader.where)) from None
    if reader.counts["rows_read"] == n0:
        raise InputError(input_problem("trace file has no data rows", where=reader.where))
    if not kept and reader.counts["filtered_rows"] > f0:
        raise InputError(input_problem(reader.filtered_out_message(), where=reader.where))
