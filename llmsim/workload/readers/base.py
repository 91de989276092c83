"""Shared machinery of the trace readers: opening files, bad-row policy, counters, time order.

A reader is an iterable of items (see :mod:`llmsim.workload.items`) with ``t`` in seconds from
the first row (``None`` for lengths-only formats); the ShareGPT reader yields sessions instead
(``yields_sessions``). Every reader streams: memory does not grow with the number of rows.

Bad rows (missing column, token count that is not an integer >= 1, unparsable timestamp,
timestamp earlier than the previous row's) raise :class:`InputError` naming file, line and
column, or — with ``on_bad_row='skip'`` — are counted in ``counts['skipped_bad_rows']`` (the
first few messages kept in ``counts['bad_row_examples']``). A missing or empty file or a header
of another format raises InputError naming the file whatever ``on_bad_row`` says.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

from llmsim.errors import InputError, input_problem
from llmsim.workload.readers.jsonio import JSONArrayError

MAX_BAD_ROW_EXAMPLES = 5

#: largest token count a trace row or a length file may hold: 100 times the longest context of
#: any model card, and small enough that no count or ``hash_ids`` list built from it can overflow
MAX_TOKENS = 100_000_000

COUNTER_KEYS = ("rows_read", "skipped_bad_rows", "filtered_rows", "failed_rows")


def new_counts() -> dict:
    d = {k: 0 for k in COUNTER_KEYS}
    d["bad_row_examples"] = []
    return d


class BadRow(Exception):
    """Raised inside a reader loop for one malformed row (converted by ``TraceReader.bad``)."""

    def __init__(self, column, value, message):
        super().__init__(message)
        self.column, self.value, self.message = column, value, message


def check_hash_ids(ids: list, column: str, prompt: int | None = None, block: int = 0) -> list:
    """``ids`` when every id is an integer, else BadRow naming ``column``: a float would be cut
    to an integer and a string or a list taken for a different prefix, without a word. With
    ``prompt`` and ``block`` the list must hold ceil(prompt / block) ids (or floor: full blocks
    only)."""
    if prompt is not None and block:
        n, want = len(ids), -(-prompt // block)
        if n != want and n != prompt // block:
            raise BadRow(column, f"{n} ids", f"expected ceil(prompt tokens / {block}) = {want} "
                         f"ids for a prompt of {prompt} tokens")
    if set(map(type, ids)) - {int}:
        bad = next(x for x in ids if type(x) is not int)
        raise BadRow(column, bad, "hash ids must be integers")
    return ids


def check_file(path: Path) -> None:
    """InputError naming the file when it is missing, not a file, or empty."""
    where = str(path)
    if not path.exists():
        raise InputError(input_problem("trace file not found", where=where))
    if not path.is_file():
        raise InputError(input_problem("not a regular file", where=where))
    if path.stat().st_size == 0:
        raise InputError(input_problem("trace file is empty", where=where))


def open_text(path: Path):
    """Text handle (UTF-8, universal newlines off for csv); ``.gz`` files are decompressed."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def not_utf8(path: Path, key: str | None = None) -> InputError:
    """InputError naming the first line of ``path`` that is not UTF-8 (for a UnicodeDecodeError
    raised while reading it as text; the error path only, so it reads the file again)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    line = None
    with opener(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = i
                bad = raw[exc.start:exc.end]
                break
    msg = "file is not UTF-8 text (a binary file, or another encoding: convert it to UTF-8)" \
        + (f"; undecodable byte(s) {bad!r}" if line else "")
    return InputError(input_problem(msg, where=str(path), line=line, key=key))


def parse_tokens(value, column: str, allow_zero: bool = False) -> int:
    """A token count: an integer (``12``, ``"12"``, ``12.0`` or ``"12.0"``) >= 1 (>= 0 with
    ``allow_zero``) and <= :data:`MAX_TOKENS`; anything else raises :class:`BadRow`."""
    if isinstance(value, bool) or value is None:
        raise BadRow(column, value, "token count is missing or not an integer")
    if isinstance(value, int):
        n = value
    else:
        try:
            n = int(value)
            if not isinstance(value, str) and n != value:   # 12.5, Decimal('12.5'): not cut
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            try:
                f = float(value)
            except (TypeError, ValueError):
                raise BadRow(column, value, "token count is not an integer") from None
            if not f.is_integer():
                raise BadRow(column, value, "token count is not an integer")
            n = int(f)
    if n > MAX_TOKENS:
        raise BadRow(column, value, f"token count must be <= {MAX_TOKENS:,}")
    if n < 1 and not (allow_zero and n == 0):
        raise BadRow(column, value, "token count must be >= 1" if not allow_zero
                     else "token count must be >= 0")
    return n


class TraceReader:
    """Base class. Subclasses implement ``_rows()`` yielding items and call ``self.bad(...)`` on
    malformed rows; ``counts`` accumulates as iteration goes."""

    format = "?"
    has_timestamps = True
    yields_sessions = False
    hash_block_tokens = 0

    def __init__(self, path: Path, on_bad_row: str = "error", counts: dict | None = None):
        self.path = Path(path)
        self.where = str(path)
        self.on_bad_row = on_bad_row
        self.counts = counts if counts is not None else new_counts()

    # -- public -------------------------------------------------------------------------
    def check(self) -> None:
        """Cheap validation without reading all rows: file exists, is not empty, the header
        (or first record) has this format's columns. Raises InputError."""
        check_file(self.path)
        try:
            self._check_header()
        except UnicodeDecodeError:
            raise not_utf8(self.path) from None
        except JSONArrayError as exc:
            raise InputError(input_problem(str(exc), where=self.where)) from None

    def __iter__(self):
        check_file(self.path)
        return self._guarded()

    def _guarded(self):
        """The rows of ``_rows()``; InputError naming the file when it is not UTF-8, is a broken
        JSON array, has no data row, or every row was filtered out (the loop runs compiled in
        the compiled build: :func:`llmsim.workload.readers.rows.guarded_rows`)."""
        from llmsim.workload.readers.rows import guarded_rows   # (rows imports this module)
        return guarded_rows(self)

    def filtered_out_message(self) -> str:
        return "every row was filtered out"

    # -- helpers for subclasses ------------------------------------------------------------
    def bad(self, line: int | None, exc: BadRow) -> None:
        hint = " (set on_bad_row: skip to skip such rows)" if self.on_bad_row == "error" else ""
        prob = input_problem(exc.message + hint, where=self.where, line=line,
                             key=exc.column, value=exc.value)
        if self.on_bad_row == "error":
            raise InputError(prob)
        self.counts["skipped_bad_rows"] += 1
        ex = self.counts["bad_row_examples"]
        if len(ex) < MAX_BAD_ROW_EXAMPLES:
            ex.append(input_problem(exc.message, where=self.where, line=line, key=exc.column,
                                    value=exc.value).format())

    def header_error(self, message: str, value=...) -> InputError:
        return InputError(input_problem(message, where=self.where, line=1, value=value))

    def _check_header(self) -> None:
        raise NotImplementedError

    def _rows(self):
        raise NotImplementedError
