"""Writing result files: the output folder and tables as Parquet or CSV.

Contract: ``output_dir(path, fmt)`` checks ``fmt`` and creates the folder, raising
:class:`~llmsim.errors.InputError` (exit 2) naming the folder when it cannot; ``write_table``
writes one DataFrame without its index and returns the path.
"""
from __future__ import annotations

from pathlib import Path

from llmsim.errors import InputError, input_problem

TABLE_FORMATS = ("parquet", "csv")


def output_dir(out_dir, fmt: str = "parquet", *, where: str = "--format") -> Path:
    if fmt not in TABLE_FORMATS:
        raise InputError(input_problem("format must be parquet or csv", where=where, value=fmt))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(input_problem(f"cannot create the output folder: {e.strerror or e}",
                                       where=str(out))) from None
    return out


def write_table(df, path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path
