"""The per-row loops of the trace readers, typed so that the compiled build compiles them
(``llmsim/_compiled.py``; in the pure build they are the same plain Python):

* :func:`jsonl_records` — :func:`llmsim.workload.readers.jsonio.iter_jsonl`;
* :func:`mooncake_rows` — the rows of :class:`~llmsim.workload.readers.json_readers.MooncakeReader`
  (in the compiled build with a fast path for the line shape the Mooncake traces are written
  in: :func:`canonical_mooncake_row`, :class:`TextLines`);
* :func:`guarded_rows` — :meth:`~llmsim.workload.readers.base.TraceReader._guarded` (every
  reader's rows pass through it).

Their contracts are those of the functions and methods that call them (documented there).
"""
from __future__ import annotations

import json
import math
from typing import Any, Final, Iterator

from mypy_extensions import i64

import llmsim
from llmsim.errors import InputError, input_problem
from llmsim.workload.readers.base import MAX_TOKENS, BadRow, check_hash_ids, not_utf8, open_text, \
    parse_tokens
from llmsim.workload.readers.jsonio import _DEC, _EOL, JSONArrayError, first_char, \
    iter_json_array

_SCAN: Any = getattr(_DEC, "scan_once")

#: whether :func:`mooncake_rows` tries :func:`canonical_mooncake_row` on each line before the
#: JSON scanner: in the compiled build only, where it reads a line several times faster than the
#: scanner (a loop over characters in native ints); run as Python it is several times slower.
#: Both ways give the same rows and errors (tests/test_jsonl_fast_mooncake.py).
CANONICAL_FAST_PATH = llmsim.BUILD == "compiled"

_HEAD: Final = b'{"timestamp": '
_INPUT: Final = b', "input_length": '
_OUTPUT: Final = b', "output_length": '
_HASH_IDS: Final = b', "hash_ids": ['
#: most digits of a number the fast path reads (fits an i64; longer numbers, rare and maybe over
#: Python's limit on digits of int conversions, go through the JSON scanner)
_MAX_DIGITS: Final = 18


def _literal_at(b: bytes, i: i64, n: i64, lit: bytes) -> bool:
    """Whether ``b[i:]`` starts with ``lit`` (compiled: no slice, no method call)."""
    m: i64 = len(lit)
    if i + m > n:
        return False
    k: i64 = 0
    while k < m:
        if b[i + k] != lit[k]:
            return False
        k += 1
    return True


def _json_uint(b: bytes, i: i64, n: i64) -> tuple[i64, i64]:
    """``(value, end)`` of the JSON integer without sign at ``b[i:]`` (``0`` or ``[1-9][0-9]*``,
    at most :data:`_MAX_DIGITS` digits, followed by a byte that is not a digit); ``end`` is -1
    when there is none (no digit, a leading zero, too many digits)."""
    v: i64 = 0
    j: i64 = i
    while j < n:
        c = b[j]
        if c < 48 or c > 57:                     # (compiled: a compare of the byte, no arithmetic)
            break
        v = v * 10 + (i64(c) - 48)
        j += 1
    d = j - i
    if d == 0 or d > _MAX_DIGITS or (d > 1 and b[i] == 48):
        return 0, -1
    return v, j


def _canonical_at(b: bytes, i: i64, n: i64) -> tuple[Any, i64]:
    """``(row, end)``: the tuple of :func:`canonical_mooncake_row` of the canonical line that
    starts at ``b[i]``, ``end`` the index after its ``}`` (what follows is the caller's to
    check); ``(None, -1)`` where ``b[i:n]`` does not start with one."""
    # Compiled, a loop over the bytes in native ints reads the line in a fraction of what the
    # JSON scanner takes (that one builds a dict, and each int through a bytes copy and
    # PyLong_FromString); bytes rather than a str: indexing a str reads its kind per character.
    if not _literal_at(b, i, n, _HEAD):
        return None, -1
    t, i = _json_uint(b, i + 14, n)
    if i < 0 or not _literal_at(b, i, n, _INPUT):
        return None, -1
    p, i = _json_uint(b, i + 18, n)
    if i < 0 or not _literal_at(b, i, n, _OUTPUT):
        return None, -1
    o, i = _json_uint(b, i + 19, n)
    if i < 0 or not _literal_at(b, i, n, _HASH_IDS):
        return None, -1
    i += 15
    ids: list = []
    if i < n and b[i] == 93:                     # ]
        i += 1
    else:
        while True:                              # _json_uint, inline (most of the digits)
            v: i64 = 0
            j: i64 = i
            while j < n:
                c = b[j]
                if c < 48 or c > 57:             # (compiled: a compare of the byte)
                    break
                v = v * 10 + (i64(c) - 48)
                j += 1
            d = j - i
            if d == 0 or d > _MAX_DIGITS or (d > 1 and b[i] == 48):
                return None, -1
            ids.append(v)
            i = j
            if i + 1 < n and b[i] == 44 and b[i + 1] == 32:      # ", "
                i += 2
                continue
            if i < n and b[i] == 93:
                i += 1
                break
            return None, -1
    if i >= n or b[i] != 125:                    # }
        return None, -1
    return (t, p, o, ids), i + 1


def canonical_mooncake_row(line: str) -> tuple | None:
    """``(timestamp, input_length, output_length, hash_ids)`` (ints, a list of ints) of a line
    written exactly as the Mooncake traces write them::

        {"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, 2]}

    (these keys in this order, ``", "`` and ``": "`` between items, integers without sign or
    leading zero of at most 18 digits, ``hash_ids`` possibly ``[]``), followed by nothing, ``\\n``
    or ``\\r\\n``; None for any other line. Where it gives a tuple, ``json.loads(line)`` gives the
    dict of these four values: the caller reads any other line with the JSON scanner."""
    try:
        b = line.encode()
    except UnicodeEncodeError:                   # a lone surrogate: not a canonical line
        return None
    n: i64 = len(b)
    row, i = _canonical_at(b, 0, n)
    if i >= 0 and (i == n or (i + 1 == n and b[i] == 10)
                   or (i + 2 == n and b[i] == 13 and b[i + 1] == 10)):
        return row
    return None


#: characters :class:`TextLines` reads from its handle at a time: TextIOWrapper's chunk size,
#: so that (for ASCII text) it decodes the file as far ahead as iterating the handle does
_PIECE_CHARS: Final = 8192
#: the pieces :func:`mooncake_rows` reads (tests set it small: lines across pieces)
PIECE_CHARS = _PIECE_CHARS


class TextLines:
    """Iterator over the lines of the text handle ``f`` (opened with ``newline=""``, as
    :func:`~llmsim.workload.readers.base.open_text` opens it): the same lines as iterating ``f``
    — each ends after ``\\n``, ``\\r\\n`` or a ``\\r`` not followed by ``\\n``, the last one maybe
    after nothing — read with ``f.read`` in pieces of ``piece_chars`` characters. With
    ``canonical``, :meth:`canonical_row` reads the next line where it is canonical without
    making it a str."""

    # Compiled, a str.find for the line end and a slice cost a fraction of TextIOWrapper's
    # readline (which tests each character for both line ends in C and goes through a few
    # Python-level calls per line).

    def __init__(self, f: Any, piece_chars: int = _PIECE_CHARS, canonical: bool = False) -> None:
        self.f = f
        self.piece_chars = piece_chars
        self.canonical = canonical
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.cr = False        # whether buf holds a "\r" (a line may end there)
        # with canonical, buf encoded where it is ASCII (character i is byte i), else b""
        self.data = b""

    def canonical_row(self) -> tuple | None:
        """:func:`canonical_mooncake_row` of the next line, which it consumes, where that line
        is canonical and whole in the buffer; else None, and nothing consumed (the caller reads
        the line as a str)."""
        # Compiled: saves the line's str, its UTF-8 copy and the search for its end. A
        # canonical line holds no line end; the first one after its "}" ends it.
        data = self.data
        n: i64 = len(data)
        row, i = _canonical_at(data, self.pos, n)
        if i < 0 or i >= n:
            return None
        if data[i] == 10:
            self.pos = i + 1
            return row
        if i + 1 < n and data[i] == 13 and data[i + 1] == 10:
            self.pos = i + 2
            return row
        return None

    def __iter__(self) -> TextLines:
        return self

    def __next__(self) -> str:
        line = self.next_line()
        if line is None:
            raise StopIteration
        return line

    def next_line(self) -> str | None:
        """The next line, None at the end."""
        buf = self.buf
        pos = self.pos
        k = buf.find("\n", pos)
        if k >= 0 and not self.cr:
            self.pos = k + 1
            return buf[pos:k + 1]
        return self._next_slow()

    def _next_slow(self) -> str | None:
        """``next_line`` where the buffer holds a ``\\r`` or not all of the line."""
        parts: list[str] = []
        while True:
            buf = self.buf
            pos = self.pos
            n = len(buf)
            k = buf.find("\n", pos)
            r = buf.find("\r", pos, k if k >= 0 else n)
            if r >= 0 and r + 1 < n:
                end = r + 2 if k == r + 1 else r + 1
            elif r < 0 and k >= 0:
                end = k + 1
            elif r >= 0:                      # a "\r" ends the buffer: "\r\n" or "\r"?
                parts.append(buf[pos:])
                self._read()
                if self.buf.startswith("\n"):
                    parts.append("\n")
                    self.pos = 1
                return "".join(parts)
            elif self.eof:
                self.pos = n
                if pos < n:
                    parts.append(buf[pos:])
                if not parts:
                    return None
                return "".join(parts)
            else:                             # no line end: the line goes on in the next piece
                if pos < n:
                    parts.append(buf[pos:])
                self._read()
                continue
            self.pos = end
            if not parts:
                return buf[pos:end]
            parts.append(buf[pos:end])
            return "".join(parts)

    def _read(self) -> None:
        """The next piece of ``f`` into the buffer (``eof`` at the end of ``f``)."""
        piece: str = self.f.read(self.piece_chars)
        self.buf = piece
        self.pos = 0
        self.cr = "\r" in piece
        if self.canonical:
            self.data = piece.encode() if piece.isascii() else b""
        if not piece:
            self.eof = True


_BLANK: Final = object()


def _jsonl_value(line: str) -> Any:
    """The value of one line of a JSONL file (after the byte-order mark is dropped from the
    first): the object, the ValueError of a line that does not parse, or ``_BLANK``."""
    # A line that starts with its value and ends right after it (the common case) is parsed
    # by the C scanner that json.loads ends in, called directly, and needs no blank-line
    # check: json.loads adds three Python calls and two regex matches per line, the check a
    # copy of the line. Any other line (blank, leading or trailing blanks, invalid) goes
    # through json.loads, so records and errors are json.loads'.
    obj: Any = None
    end: int = -1
    try:
        obj, end = _SCAN(line, 0)
    except (StopIteration, ValueError):
        end = -1
    if end == len(line) or (end > 0 and line[end:] in _EOL):
        return obj
    if not line.strip():
        return _BLANK
    try:
        return json.loads(line)
    except ValueError as exc:
        return exc


def jsonl_records(f: Any) -> Iterator[tuple[int, Any]]:
    """``(line, object or ValueError)`` per non-blank line of the text handle ``f``."""
    lineno = 0
    for raw in f:
        line: str = raw
        lineno += 1
        if lineno == 1:
            line = line.lstrip("\ufeff")     # a byte-order mark, as the CSV readers allow
        obj = _jsonl_value(line)
        if obj is not _BLANK:
            yield lineno, obj


def mooncake_rows(reader: Any) -> Iterator[tuple]:
    """Items of a Mooncake JSONL trace (``MooncakeReader._rows``): one per good row, ``t`` in
    seconds from the first row; bad rows go to ``reader.bad``."""
    counts: dict = reader.counts
    B: int = reader.hash_block_tokens
    have_t0 = False
    t0 = 0.0
    have_last = False
    last_t = 0.0
    fast = CANONICAL_FAST_PATH
    max_tokens: int = MAX_TOKENS            # (a local: an imported name is a dict lookup per use)
    with open_text(reader.path) as f:
        # jsonio.iter_records with jsonl_records' loop inline; with the fast path, the lines
        # from TextLines, canonical ones parsed where they lie in its buffer: per canonical
        # line no generator step, no tuple, no str (without it, the handle's own lines: as
        # Python, TextLines costs more than TextIOWrapper's C loop)
        array = first_char(f) == "["
        elements: Iterator[Any] = iter_json_array(f) if array else iter(())
        lines = TextLines(f, PIECE_CHARS, True) if fast and not array else None
        handle: Iterator[Any] = iter(f)
        lineno = 0
        line = 0
        obj: Any = None
        while True:
            if array:
                element = next(elements, None)
                if element is None:
                    break
                line, obj = element
            else:
                lineno += 1
                line = lineno
                canonical = lines.canonical_row() if lines is not None else None
                if canonical is not None:
                    obj = canonical
                else:
                    text: str | None = lines.next_line() if lines is not None \
                        else next(handle, None)
                    if text is None:
                        break
                    if lineno == 1:
                        text = text.lstrip("\ufeff")
                    canonical = canonical_mooncake_row(text) if fast else None
                    if canonical is not None:
                        obj = canonical
                    else:
                        obj = _jsonl_value(text)
                        if obj is _BLANK:
                            continue
            counts["rows_read"] += 1
            try:
                ints = False                        # whether h is known to hold ints only
                if type(obj) is tuple:              # canonical_mooncake_row's: all four keys
                    row: tuple = obj
                    raw_t, p, o, h = row
                    ints = True
                else:
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
                    h = rec.get("hash_ids")
                if type(p) is not int or p < 1 or p > max_tokens:
                    p = parse_tokens(p, "input_length")
                if type(o) is not int or o < 1 or o > max_tokens:
                    o = parse_tokens(o, "output_length")
                if h is not None:
                    if type(h) is not list:
                        raise BadRow("hash_ids", h, "hash_ids must be a list")
                    # check_hash_ids' checks, inline where they pass (once per row); the
                    # type test is a compiled loop (a set of the types costs ≈ 4 times more)
                    ids: list = h
                    n = len(ids)
                    all_int = True
                    if not ints:
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
                if math.isinf(v) or math.isnan(v):      # (not isfinite: mypyc calls that by name)
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
