"""Streaming trace readers. ``open_reader(cfg, path, on_bad_row, counts)`` builds the reader for
a trace config of a known format; ``detect_format(path)`` names the format of a file;
``reader_for_file(path, fmt=None)`` does both for a bare file (``llmsim trace stats``)."""
from __future__ import annotations

from pathlib import Path

from llmsim.workload import config as C
from llmsim.workload.readers.base import TraceReader, new_counts
from llmsim.workload.readers.csv_readers import (AzureReader, BurstGPTReader, CsvReader,
                                                 LengthsReader)
from llmsim.workload.readers.detect import detect_format
from llmsim.workload.readers.json_readers import MooncakeReader, ShareGPTReader
from llmsim.workload.readers.parquet_reader import ParquetReader

__all__ = ["TraceReader", "open_reader", "detect_format", "reader_for_file", "new_counts"]


def open_reader(cfg, path: Path, on_bad_row: str = "error", counts: dict | None = None
                ) -> TraceReader:
    """Reader for a trace config whose ``format`` is known (not ``auto``)."""
    kw = {"on_bad_row": on_bad_row, "counts": counts}
    f = cfg.format
    if f in ("azure2023", "azure2024"):
        return AzureReader(path, fmt=f, **kw)
    if f == "burstgpt":
        return BurstGPTReader(path, models=cfg.models, log_types=cfg.log_types,
                              failed=cfg.failed, **kw)
    if f == "mooncake":
        return MooncakeReader(path, hash_block_tokens=cfg.hash_block_tokens, **kw)
    if f == "sharegpt":
        return ShareGPTReader(path, turns=cfg.turns, chars_per_token=cfg.chars_per_token,
                              hash_block_tokens=cfg.hash_block_tokens, **kw)
    if f == "lengths":
        return LengthsReader(path, prompt_column=cfg.prompt_column,
                             output_column=cfg.output_column, **kw)
    m = cfg.columns if f in ("csv", "parquet") else None
    if f == "csv":
        return CsvReader(path, arrival=m.arrival, prompt=m.prompt_tokens, output=m.output_tokens,
                         session=m.session_id, hash_ids=m.hash_ids, time_unit=cfg.time_unit,
                         delimiter=cfg.delimiter, hash_block_tokens=cfg.hash_block_tokens, **kw)
    if f == "parquet":
        return ParquetReader(path, arrival=m.arrival, prompt=m.prompt_tokens,
                             output=m.output_tokens, session=m.session_id, hash_ids=m.hash_ids,
                             time_unit=cfg.time_unit, hash_block_tokens=cfg.hash_block_tokens, **kw)
    raise ValueError(f"open_reader needs a concrete format, got {f!r}")


_STATS_DEFAULTS = {"sharegpt": {"turns": "all", "think_time_s": 0.0}}


def reader_for_file(path: Path, fmt: str | None = None, on_bad_row: str = "error",
                    extra: dict | None = None) -> TraceReader:
    """Reader for a bare file (format detected when ``fmt`` is None). Formats without timestamps
    are read as they are (no synthetic arrivals); ShareGPT expands every turn. ``extra`` adds
    config keys (e.g. ``columns`` for csv/parquet)."""
    from pydantic import TypeAdapter, ValidationError

    from llmsim.errors import InputError, input_problem
    path = Path(path)
    fmt = fmt or detect_format(path)
    data = {"path": str(path), "format": fmt, **_STATS_DEFAULTS.get(fmt, {}), **(extra or {})}
    if fmt in ("sharegpt", "lengths") or (fmt in ("csv", "parquet")
                                         and not (extra or {}).get("columns", {}).get("arrival")):
        data["arrival"] = {"process": "constant", "rate_per_s": 1.0}   # placeholder, unused
    try:
        cfg = TypeAdapter(C.TraceConfig).validate_python(data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(input_problem(f"cannot read as format '{fmt}': {msgs}",
                                       where=str(path))) from None
    return open_reader(cfg, path, on_bad_row)
