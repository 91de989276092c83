"""The Mooncake reader's fast path (``llmsim/workload/readers/rows.py``) gives what the JSON path
gives.

- ``canonical_mooncake_row`` gives a tuple only for a line that ``json.loads`` reads as the
  object of these four values, and does give it for the lines the Mooncake traces write
  (hypothesis: canonical lines and near misses of them).
- ``TextLines`` gives the lines that iterating the text handle gives (hypothesis: any mix of
  ``\\n``, ``\\r\\n`` and ``\\r``, non-ASCII text, pieces from one character up).
- The reader with the fast path on and off, reading in pieces of any size: the same items,
  counters and errors (hypothesis: files of canonical, near-miss and bad lines; ``on_bad_row``
  error and skip).
"""
from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import InputError
from llmsim.workload.readers import rows
from llmsim.workload.readers.json_readers import MooncakeReader
from llmsim.workload.readers.rows import TextLines, canonical_mooncake_row

KEYS = ["timestamp", "input_length", "output_length", "hash_ids"]


def canonical(t, p, o, ids, end="\n"):
    """A line as the Mooncake traces write it."""
    return ('{"timestamp": %d, "input_length": %d, "output_length": %d, "hash_ids": [%s]}%s'
            % (t, p, o, ", ".join(map(str, ids)), end))


_ints = st.one_of(st.integers(0, 3000), st.integers(0, 10 ** 18 - 1),
                  st.integers(10 ** 18, 10 ** 22))
_small = st.integers(0, 10 ** 18 - 1)
_canonical = st.builds(canonical, _ints, _ints, _ints, st.lists(_ints, max_size=6),
                       st.sampled_from(["\n", "\r\n", ""]))
# characters a near miss inserts or puts in place of one: what JSON allows or rejects around
# numbers and separators, whitespace, line ends, non-ASCII
_chars = st.sampled_from(list("0123456789 -+.eE,[]{}\":\t\r\nx") + ["\u00e9", "\ufeff", "00",
                                                                    "1.5", "1e3", "-0", "null"])


@st.composite
def _near_miss(draw):
    line = draw(_canonical)
    k = draw(st.integers(0, len(line)))
    how = draw(st.sampled_from(["insert", "delete", "replace", "swap keys", "extra key"]))
    if how == "insert":
        return line[:k] + draw(_chars) + line[k:]
    if how == "delete":
        return line[:k] + line[k + 1:]
    if how == "replace":
        return line[:k] + draw(_chars) + line[k + 1:]
    d = json.loads(line)
    if how == "swap keys":
        keys = draw(st.permutations(KEYS))
        return json.dumps({key: d[key] for key in keys}) + "\n"
    return json.dumps(dict(d, extra=1)) + "\n"


_line = st.one_of(_canonical, _near_miss(), st.sampled_from(
    ["\n", " \n", "not json\n", "[1, 2]\n", "{}\n", '{"timestamp": 1}\n', "\r",
     canonical(5, 600, 2, [1, 2], "\r"), canonical(1, 0, 2, [1]), canonical(1, 10, 0, [])]))


def _json_row(line):
    try:
        d = json.loads(line)
    except ValueError:
        return None
    return d


@settings(max_examples=400, deadline=None)
@given(st.one_of(_canonical, _near_miss(), st.text(max_size=20)))
def test_canonical_row_only_where_json_reads_the_same(line):
    row = canonical_mooncake_row(line)
    if row is None:
        return
    d = _json_row(line)
    assert type(d) is dict and list(d) == KEYS
    assert row == tuple(d[k] for k in KEYS)
    assert [type(x) for x in row] == [int, int, int, list]
    assert all(type(x) is int for x in row[3])


@settings(max_examples=200, deadline=None)
@given(_small, _small, _small, st.lists(_small, max_size=40),
       st.sampled_from(["\n", "\r\n", ""]))
def test_canonical_lines_take_the_fast_path(t, p, o, ids, end):
    assert canonical_mooncake_row(canonical(t, p, o, ids, end)) == (t, p, o, ids)


@pytest.mark.parametrize("line", [
    canonical(0, 10, 2, [1, 2], "\r"),               # a lone "\r" ends the line
    canonical(0, 10, 2, [1, 2], "\n\n"),
    canonical(0, 10, 2, [1, 2], " \n"),
    '{"timestamp": 01, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n',
    '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1, 02]}\n',
    '{"timestamp": -1, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n',
    '{"timestamp": 1.0, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n',
    '{"timestamp": 1e3, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n',
    '{"timestamp": 1, "input_length": 10, "output_length": 2, "hash_ids": [1,2]}\n',
    '{"timestamp": 1, "input_length": 10, "output_length": 2, "hash_ids": [1, ]}\n',
    '{"timestamp": 1, "input_length": 10, "output_length": 2, "hash_ids": [1]}x\n',
    '{"timestamp": 1, "input_length": 10, "output_length": 2, "hash_ids": [1]',
    canonical(10 ** 18, 10, 2, [1]),                  # 19 digits: the JSON scanner reads it
    canonical(1, 10, 2, [1]).replace("[1]", "[" + "9" * 5000 + "]"),   # over Python's limit
    canonical(1, 10, 2, [1]).replace("1]", "\u0661]"),  # a digit that is not ASCII
    '{"timestamp": 1, "input_length": 10, "output_length": 2, "hash_ids": [1]}\ud800\n',
])
def test_near_misses_go_to_the_json_path(line):
    assert canonical_mooncake_row(line) is None


def test_ids_of_18_digits_and_empty_list():
    big = 10 ** 18 - 1
    assert canonical_mooncake_row(canonical(big, big, big, [big, 0])) == (big, big, big,
                                                                           [big, 0])
    assert canonical_mooncake_row(canonical(0, 1, 1, [])) == (0, 1, 1, [])


def _handle(text):
    return io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8", newline="")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab\r\n") + ["\u00e9", "\r\n"]), max_size=40).map("".join),
       st.sampled_from([1, 2, 3, 5, 8192]))
def test_text_lines_are_the_handles_lines(text, piece):
    assert list(TextLines(_handle(text), piece)) == list(_handle(text))


def _read(path, mode):
    """Items and counters of the Mooncake reader, or the InputError it raised."""
    r = MooncakeReader(path, on_bad_row=mode)
    try:
        items = list(r)
    except InputError as exc:
        return ("error", str(exc), r.counts)
    return ("ok", items, r.counts)


@settings(max_examples=200, deadline=None)
@given(st.lists(_line, min_size=1, max_size=8), st.booleans(),
       st.sampled_from([1, 7, 40, 100, 8192]))
def test_reader_fast_path_on_and_off_agree(tmp_path_factory, lines, bom, piece):
    """(In pieces of ``piece`` characters: canonical lines across pieces and line ends.)"""
    path = tmp_path_factory.mktemp("mc") / "m.jsonl"
    path.write_bytes((("\ufeff" if bom else "") + "".join(lines)).encode("utf-8"))
    was = rows.CANONICAL_FAST_PATH, rows.PIECE_CHARS
    try:
        rows.CANONICAL_FAST_PATH, rows.PIECE_CHARS = False, 8192
        want = {mode: _read(path, mode) for mode in ("error", "skip")}
        rows.PIECE_CHARS = piece
        for mode in ("error", "skip"):
            for on in (True, False):
                rows.CANONICAL_FAST_PATH = on
                assert _read(path, mode) == want[mode]
    finally:
        rows.CANONICAL_FAST_PATH, rows.PIECE_CHARS = was


def test_fast_path_is_on_in_the_compiled_build_only():
    import llmsim
    assert rows.CANONICAL_FAST_PATH is (llmsim.BUILD == "compiled")


def test_the_switch_decides_which_path_reads(tmp_path, monkeypatch):
    """With ``CANONICAL_FAST_PATH`` the JSON scanner reads no canonical line (so the test
    above compares two different paths), without it every line."""
    p = tmp_path / "m.jsonl"
    p.write_text(canonical(0, 600, 2, [1, 2]) + canonical(5, 10, 2, [3]) + "{bad\n")
    scanned = []
    scan = rows._SCAN
    monkeypatch.setattr(rows, "_SCAN", lambda s, i: scanned.append(s) or scan(s, i))
    for on, want in ((True, 1), (False, 3)):
        monkeypatch.setattr(rows, "CANONICAL_FAST_PATH", on)
        scanned.clear()
        assert len(list(MooncakeReader(p, on_bad_row="skip"))) == 2
        assert len(scanned) == want
