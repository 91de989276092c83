"""Streaming JSON records: JSONL (one object per line) or one top-level JSON array, read in
64 KiB pieces with ``json.JSONDecoder.raw_decode`` so a multi-GB array never sits in memory
(memory is bounded by the largest single record).

``iter_records(f)`` yields ``(line, obj_or_exception)``: the 1-based line where the record
starts and the parsed object, or a ``ValueError`` for a record that does not parse (JSONL only;
a broken JSON array cannot be resynchronised and raises).
"""
from __future__ import annotations

import json
from typing import Iterator

_DEC = json.JSONDecoder()
_WS = " \t\r\n"
_PIECE = 1 << 16
_EOL = ("\n", "\r\n")     # what ends a line that iter_jsonl reads (newline="")


class JSONArrayError(ValueError):
    """A top-level JSON array that does not parse (no record can be skipped past it)."""


def first_char(f) -> str:
    """First non-blank character of a text file ('' if blank); rewinds the handle."""
    while True:
        piece = f.read(4096)
        if not piece:
            ch = ""
            break
        s = piece.lstrip(_WS + "\ufeff")
        if s:
            ch = s[0]
            break
    f.seek(0)
    return ch


def iter_jsonl(f) -> Iterator[tuple[int, object]]:
    """``(line, object or ValueError)`` per non-blank line (the loop runs compiled in the
    compiled build: :func:`llmsim.workload.readers.rows.jsonl_records`)."""
    from llmsim.workload.readers.rows import jsonl_records   # (rows imports this module)
    return jsonl_records(f)


def iter_json_array(f) -> Iterator[tuple[int, object]]:
    """Elements of a top-level JSON array, streaming."""
    buf = f.read(_PIECE).lstrip(_WS + "\ufeff")
    line = 1
    if not buf.startswith("["):
        raise JSONArrayError("expected a JSON array")
    pos = 1
    eof = False
    expect_value = True     # after '[' or ','
    while True:
        # skip whitespace / one comma, refilling as needed
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buf) or eof:
                break
            buf, pos = f.read(_PIECE), 0
            eof = not buf
        if pos >= len(buf):
            raise JSONArrayError(f"JSON array not closed (line {line})")
        ch = buf[pos]
        if ch == "]":
            rest = buf[pos + 1:]
            while not rest.strip(_WS):
                rest = f.read(_PIECE)
                if not rest:
                    return
            raise JSONArrayError(f"text after the end of the JSON array (line {line}): "
                                 f"{rest.strip(_WS)[:40]!r}")
        if ch == ",":
            if expect_value:
                raise JSONArrayError(f"unexpected ',' in JSON array (line {line})")
            pos += 1
            expect_value = True
            continue
        if not expect_value:
            raise JSONArrayError(f"expected ',' or ']' in JSON array (line {line})")
        while True:
            try:
                obj, end = _DEC.raw_decode(buf, pos)
                if end == len(buf) and not eof:
                    raise ValueError("maybe truncated")   # a number may continue in next piece
                break
            except ValueError:
                if eof:
                    raise JSONArrayError(f"invalid JSON in array element starting at line "
                                         f"{line}") from None
                more = f.read(_PIECE)
                if not more:
                    eof = True
                buf = buf[pos:] + more
                pos = 0
        yield line, obj
        line += buf.count("\n", pos, end)
        pos = end
        expect_value = False


def iter_records(f) -> Iterator[tuple[int, object]]:
    ch = first_char(f)
    if ch == "[":
        return iter_json_array(f)
    return iter_jsonl(f)
