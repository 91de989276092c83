"""Detect a trace's format from its header / first record.

CSV header with TIMESTAMP, ContextTokens, GeneratedTokens → ``azure2024`` if the first timestamp
carries a UTC offset (``+00:00``/``Z``), else ``azure2023``; Timestamp, Model, Request tokens,
Response tokens, Log Type → ``burstgpt``; num_prefill_tokens, num_decode_tokens → ``lengths``.
JSON: first record with timestamp, input_length, output_length → ``mooncake``; with a
conversation list or prompt/output token counts → ``sharegpt``. Parquet and other CSVs need an
explicit ``format`` with ``columns``.
"""
from __future__ import annotations

import csv
from pathlib import Path

from llmsim.errors import InputError, input_problem
from llmsim.workload.readers.base import check_file, not_utf8, open_text
from llmsim.workload.readers.csv_readers import AZURE_COLUMNS, BURSTGPT_COLUMNS
from llmsim.workload.readers.json_readers import LIST_KEYS, PROMPT_KEYS
from llmsim.workload.readers.jsonio import first_char, iter_records

KNOWN = ("azure2023 (TIMESTAMP, ContextTokens, GeneratedTokens), azure2024 (same, +00:00 "
         "timestamps), burstgpt (Timestamp, Model, Request tokens, Response tokens, Log Type), "
         "lengths (num_prefill_tokens, num_decode_tokens), mooncake JSONL (timestamp, "
         "input_length, output_length, hash_ids), sharegpt JSON/JSONL (conversations or "
         "prompt/output token counts)")


def _fail(path: Path, message: str, value=...):
    return InputError(input_problem(message, where=str(path), line=1, value=value))


def detect_format(path: Path) -> str:
    """Format name for ``path``; InputError naming the file when it is missing, empty or of no
    known format."""
    path = Path(path)
    check_file(path)
    if path.suffix == ".parquet":
        raise _fail(path, "a Parquet trace needs format: parquet and a 'columns' mapping "
                    "(arrival, prompt_tokens, output_tokens)")
    try:
        with open_text(path) as f:
            ch = first_char(f)
            if ch == "":
                raise _fail(path, "trace file is empty")
            if ch in ("[", "{"):
                return _detect_json(path, f)
            rd = csv.reader(f)
            header = [h.strip().lstrip("\ufeff") for h in next(rd, [])]
            first = next(rd, None)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except csv.Error as exc:
        raise _fail(path, f"not a CSV or JSON trace ({exc})") from None
    hs = set(header)
    if set(AZURE_COLUMNS) <= hs:
        if first is not None and len(first) > header.index("TIMESTAMP"):
            ts = first[header.index("TIMESTAMP")].strip()
            if ts.endswith("Z") or (len(ts) > 6 and ts[-6] in "+-" and ts[-3] == ":"):
                return "azure2024"
        return "azure2023"
    if set(BURSTGPT_COLUMNS) <= hs:
        return "burstgpt"
    if {"num_prefill_tokens", "num_decode_tokens"} <= hs:
        return "lengths"
    raise _fail(path, "cannot detect the trace format from the header; known formats: " + KNOWN
                + "; for another CSV give format: csv with a 'columns' mapping", value=header)


def _detect_json(path: Path, f) -> str:
    try:
        for line, obj in iter_records(f):
            if isinstance(obj, Exception) or not isinstance(obj, dict):
                raise _fail(path, "first JSON record is not an object")
            keys = set(obj)
            if {"timestamp", "input_length", "output_length"} <= keys:
                return "mooncake"
            if keys & set(LIST_KEYS) or keys & set(PROMPT_KEYS):
                return "sharegpt"
            raise _fail(path, "cannot detect the JSON trace format from the first record; known "
                        "formats: " + KNOWN, value=sorted(keys))
    except ValueError as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    raise _fail(path, "trace file is empty")
