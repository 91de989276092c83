"""Readers of measured GPU timings for calibration: one tidy table of measurements.

Contract: :func:`read_measurements` takes CSV files and/or directories (every ``*.csv`` in a
directory, sorted) and returns a :class:`pandas.DataFrame` with one row per measured time, in
seconds, whatever the file layout. The layout of each file is recognised from its columns:

- ``ops`` — per-operator times (Vidur profiling layout): ``model, num_tokens,
  num_tensor_parallel_workers, n_head, n_kv_head, n_embd, n_expanded_embd, vocab_size,
  use_gated_mlp`` and ``<op>_ms`` columns (``attn_pre_proj`` = QKV, ``attn_post_proj`` = output
  projection, ``mlp_up_proj`` = gate+up, ``mlp_down_proj``, ``input_layernorm``,
  ``post_attention_layernorm``, ``attn_rope``, ``mlp_act``, ``add``, ``emb``); one row per
  (file row, op) with a value; an empty cell means the model has no such op.
- ``collectives`` — NCCL times: ``node, num_workers, size, collective, devices_per_node`` and
  ``all_reduce.median`` / ``send_recv.median`` (ms).
- ``attention`` — attention kernel times, either the Vidur layout
  (``time_stats.attn_prefill.median``, ``time_stats.attn_decode.median``, ``is_prefill``,
  ``batch_size``, ``prefill_chunk_size``, ``kv_cache_size``, ``n_embd``, ``n_q_head``,
  ``n_kv_head``, ``num_tensor_parallel_workers``) or a points layout (``kind, batch_size,
  prefill_chunk_size, kv_cache_size, attn_median_ms``) whose model is named in the file name (a
  catalog model, e.g. ``..._llama2_7b_...``) and runs on one GPU.
- ``steps`` — whole-step latencies (Splitwise characterization layout): ``model, tp, pp,
  batch_or_concurrency, input_len, output_len, metric, value, unit, notes``;
  ``prefill_batch_latency`` (one prefill step of the batch, ~TTFT) and ``decode_step_latency``
  (mean decode step) rows are used, ``e2e_latency`` rows (derived from the other two) and rows
  whose ``notes`` say SUSPECT are skipped and counted.

Output columns: ``family`` (``gemm``, ``elementwise``, ``attention``, ``collective``, ``step``),
``op`` (our operator name: ``qkv_proj, o_proj, gate_up_proj, down_proj, norm, rotary, activation,
residual, embedding, attn_prefill, attn_decode, all_reduce, send_recv, prefill, decode``),
``column`` (the source column), ``model`` (for collectives: the measured node), ``tp``,
``tokens`` (GEMM rows / tokens of the op),
``batch``, ``chunk`` (new tokens per sequence), ``context`` (cached tokens per sequence),
``output_len``, ``size_bytes``, ``num_workers``, ``devices_per_node``, ``node``, ``node_gpus``
(GPUs in one node of the measured machine, from ``max_devices_per_node``), the model shape
(``hidden, n_head, n_kv_head, head_dim, intermediate, gated, vocab``; whole model, not per GPU),
``measured_s``, ``file`` (base name), ``line`` (1-based line in the file). Columns a family does
not use are NaN / empty. :func:`read_measurements` also returns a ``skipped`` dict
``{file: {reason: rows}}``.

Every unreadable file, unknown layout, missing column or non-positive time raises
:class:`~llmsim.errors.InputError` naming the file, line and column.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.errors import InputError, input_problem

__all__ = ["read_measurements", "Measurements", "LAYOUTS", "OPS_COLUMNS"]

#: Vidur operator column -> (family, our operator name)
OPS_COLUMNS = {
    "attn_pre_proj_ms": ("gemm", "qkv_proj"),
    "attn_post_proj_ms": ("gemm", "o_proj"),
    "mlp_up_proj_ms": ("gemm", "gate_up_proj"),
    "mlp_down_proj_ms": ("gemm", "down_proj"),
    "input_layernorm_ms": ("elementwise", "norm"),
    "post_attention_layernorm_ms": ("elementwise", "norm"),
    "attn_rope_ms": ("elementwise", "rotary"),
    "mlp_act_ms": ("elementwise", "activation"),
    "add_ms": ("elementwise", "residual"),
    "emb_ms": ("elementwise", "embedding"),
}
_OPS_KEYS = ("model", "num_tokens", "num_tensor_parallel_workers", "n_head", "n_kv_head",
             "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp")
_COLL_KEYS = ("node", "num_workers", "size", "collective", "devices_per_node")
_ATTN_VIDUR_KEYS = ("is_prefill", "batch_size", "prefill_chunk_size", "kv_cache_size", "n_embd",
                    "n_q_head", "n_kv_head", "num_tensor_parallel_workers")
_ATTN_POINT_KEYS = ("kind", "batch_size", "prefill_chunk_size", "kv_cache_size",
                    "attn_median_ms")
_STEP_KEYS = ("model", "tp", "batch_or_concurrency", "input_len", "output_len", "metric",
              "value", "unit")
_STEP_METRICS = {"prefill_batch_latency": "prefill", "decode_step_latency": "decode"}
_UNIT_S = {"ms": 1e-3, "s": 1.0, "us": 1e-6}

LAYOUTS = ("ops", "collectives", "attention", "steps")

COLUMNS = ["family", "op", "column", "model", "tp", "tokens", "batch", "chunk", "context",
           "output_len", "size_bytes", "num_workers", "devices_per_node", "node", "node_gpus",
           "hidden",
           "n_head", "n_kv_head", "head_dim", "intermediate", "gated", "vocab", "measured_s",
           "file", "line"]


@dataclass
class Measurements:
    """The tidy table (``frame``), the files read with their layout and data rows
    (``files``: name -> {"layout", "rows", "path"}) and the rows skipped per file and reason."""

    frame: pd.DataFrame
    files: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)


def _expand(paths) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(os.fspath(p)).expanduser()
        if path.is_dir():
            found = sorted(q for q in path.iterdir() if q.suffix.lower() == ".csv" and q.is_file())
            if not found:
                raise InputError(input_problem("directory holds no .csv measurement files",
                                               where=str(path)))
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(input_problem(
                "no such measurement file or directory (give CSV files or a directory such as "
                "../shared/calibration)", where=str(path)))
    return out


def _layout(cols: set[str]) -> str | None:
    if "attn_pre_proj_ms" in cols or ("num_tokens" in cols and any(c in cols for c in OPS_COLUMNS)):
        return "ops"
    if {"collective", "size"} <= cols:
        return "collectives"
    if "time_stats.attn_prefill.median" in cols or "time_stats.attn_decode.median" in cols \
            or "attn_median_ms" in cols:
        return "attention"
    if {"metric", "value", "batch_or_concurrency"} <= cols:
        return "steps"
    return None


def _require(df: pd.DataFrame, keys, where: str) -> None:
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise InputError(input_problem(
            f"missing column(s) {', '.join(missing)}; this layout needs {', '.join(keys)}",
            where=where, line=1))


def _numeric(df: pd.DataFrame, col: str, where: str, *, positive: bool = True,
             allow_nan: bool = False) -> np.ndarray:
    """Column as float; a non-number (or non-positive value) raises naming file, line, column."""
    v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    raw = df[col].to_numpy()
    bad = np.isnan(v) & ~(pd.isna(raw) & allow_nan)
    if positive:
        bad |= ~np.isnan(v) & ~(v > 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "a positive number" if positive else "a number"
        raise InputError(input_problem(f"must be {what}", where=where, line=int(df.index[i]) + 2,
                                       key=col, value=raw[i]))
    return v


def _bool(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    raw = df[col]
    s = raw.astype(str).str.strip().str.lower()
    ok = s.isin(["true", "false", "1", "0"])
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise InputError(input_problem("must be True or False", where=where,
                                       line=int(df.index[i]) + 2, key=col, value=raw.iloc[i]))
    return s.isin(["true", "1"]).to_numpy()


def _frame(**cols) -> pd.DataFrame:
    n = max(len(v) for v in cols.values() if hasattr(v, "__len__") and not isinstance(v, str))
    data = {}
    for c in COLUMNS:
        v = cols.get(c, np.nan)
        if np.isscalar(v) or v is None:
            v = [v] * n
        data[c] = v
    return pd.DataFrame(data)


def _read_ops(df: pd.DataFrame, where: str, name: str) -> tuple[pd.DataFrame, dict]:
    _require(df, _OPS_KEYS, where)
    present = [c for c in OPS_COLUMNS if c in df.columns]
    if not present:
        raise InputError(input_problem("no operator time columns; expected some of "
                                       + ", ".join(OPS_COLUMNS), where=where, line=1))
    T = _numeric(df, "num_tokens", where)
    tp = _numeric(df, "num_tensor_parallel_workers", where)
    H = _numeric(df, "n_head", where)
    Hkv = _numeric(df, "n_kv_head", where)
    h = _numeric(df, "n_embd", where)
    inter = _numeric(df, "n_expanded_embd", where)
    vocab = _numeric(df, "vocab_size", where)
    gated = _bool(df, "use_gated_mlp", where)
    frames, skipped = [], 0
    lines = df.index.to_numpy() + 2
    for col in present:
        fam, op = OPS_COLUMNS[col]
        ms = _numeric(df, col, where, allow_nan=True)
        keep = ~np.isnan(ms)
        skipped += int((~keep).sum())
        frames.append(_frame(
            family=fam, op=op, column=col, model=df["model"].astype(str).to_numpy()[keep],
            tp=tp[keep], tokens=T[keep], hidden=h[keep], n_head=H[keep], n_kv_head=Hkv[keep],
            head_dim=(h / H)[keep], intermediate=inter[keep], gated=gated[keep],
            vocab=vocab[keep], measured_s=ms[keep] * 1e-3, file=name, line=lines[keep]))
    return pd.concat(frames, ignore_index=True), ({"empty cell (op absent)": skipped}
                                                  if skipped else {})


def _read_collectives(df: pd.DataFrame, where: str, name: str) -> tuple[pd.DataFrame, dict]:
    _require(df, _COLL_KEYS, where)
    kind = df["collective"].astype(str).str.strip()
    bad = ~kind.isin(["all_reduce", "send_recv"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(input_problem("unknown collective; allowed: all_reduce, send_recv",
                                       where=where, line=int(df.index[i]) + 2, key="collective",
                                       value=kind.iloc[i]))
    frames = []
    lines = df.index.to_numpy() + 2
    for coll in ("all_reduce", "send_recv"):
        sel = (kind == coll).to_numpy()
        if not sel.any():
            continue
        sub = df[sel]
        col = f"{coll}.median"
        _require(sub, (col,), where)
        frames.append(_frame(
            family="collective", op=coll, column=col,
            size_bytes=_numeric(sub, "size", where),
            num_workers=_numeric(sub, "num_workers", where),
            devices_per_node=_numeric(sub, "devices_per_node", where),
            node=sub["node"].astype(str).to_numpy(), model=sub["node"].astype(str).to_numpy(),
            node_gpus=(_numeric(sub, "max_devices_per_node", where)
                       if "max_devices_per_node" in sub.columns else np.nan),
            tp=_numeric(sub, "num_workers", where),
            measured_s=_numeric(sub, col, where) * 1e-3, file=name, line=lines[sel]))
    return pd.concat(frames, ignore_index=True), {}


def _model_from_name(name: str):
    """The catalog model whose name or alias (letters and digits only) occurs in ``name``."""
    from llmsim.models.catalog import list_models, load_model

    key = re.sub(r"[^a-z0-9]", "", name.lower())
    best = None
    for m in list_models():
        spec = load_model(m)
        for cand in (spec.name, *spec.aliases):
            c = re.sub(r"[^a-z0-9]", "", cand.lower())
            if c and c in key and (best is None or len(c) > best[0]):
                best = (len(c), spec)
    return best[1] if best else None


def _read_attention(df: pd.DataFrame, where: str, name: str) -> tuple[pd.DataFrame, dict]:
    lines = df.index.to_numpy() + 2
    if "attn_median_ms" in df.columns:
        _require(df, _ATTN_POINT_KEYS, where)
        spec = _model_from_name(Path(name).stem)
        if spec is None:
            raise InputError(input_problem(
                "attention points without shape columns: name a catalog model in the file name "
                "(e.g. a100_llama2_7b_attention_points_ms.csv) or use the Vidur layout with "
                "n_embd, n_q_head, n_kv_head, num_tensor_parallel_workers", where=where))
        kind = df["kind"].astype(str).str.strip().str.lower()
        bad = ~kind.isin(["prefill", "decode"])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(input_problem("must be prefill or decode", where=where,
                                           line=int(lines[i]), key="kind", value=kind.iloc[i]))
        is_prefill = (kind == "prefill").to_numpy()
        ms = _numeric(df, "attn_median_ms", where)
        model, tp = spec.name, np.ones(len(df))
        h, H, Hkv, d = spec.hidden_size, spec.num_attention_heads, spec.num_kv_heads, spec.head_dim
        col = np.where(is_prefill, "attn_median_ms (prefill)", "attn_median_ms (decode)")
    else:
        _require(df, _ATTN_VIDUR_KEYS, where)
        is_prefill = _bool(df, "is_prefill", where)
        ms = np.full(len(df), np.nan)
        col = np.empty(len(df), dtype=object)
        for flag, c in ((True, "time_stats.attn_prefill.median"),
                        (False, "time_stats.attn_decode.median")):
            sel = is_prefill == flag
            if sel.any():
                _require(df, (c,), where)
                ms[sel] = _numeric(df[sel], c, where)
                col[sel] = c
        h = _numeric(df, "n_embd", where)
        H = _numeric(df, "n_q_head", where)
        Hkv = _numeric(df, "n_kv_head", where)
        d = h / H
        tp = _numeric(df, "num_tensor_parallel_workers", where)
        model = [f"attention h{int(a)} {int(b)}q/{int(c)}kv" for a, b, c in zip(h, H, Hkv)]
    batch = _numeric(df, "batch_size", where)
    chunk = _numeric(df, "prefill_chunk_size", where, positive=False)
    ctx = _numeric(df, "kv_cache_size", where, positive=False)
    chunk = np.where(is_prefill, chunk, 1.0)
    bad = is_prefill & ~(chunk >= 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(input_problem("a prefill row needs prefill_chunk_size >= 1", where=where,
                                       line=int(lines[i]), key="prefill_chunk_size",
                                       value=chunk[i]))
    return _frame(family="attention", op=np.where(is_prefill, "attn_prefill", "attn_decode"),
                  column=col, model=model, tp=tp, batch=batch, chunk=chunk, context=ctx,
                  tokens=batch * chunk, hidden=h, n_head=H, n_kv_head=Hkv, head_dim=d,
                  measured_s=ms * 1e-3, file=name, line=lines), {}


def _read_steps(df: pd.DataFrame, where: str, name: str) -> tuple[pd.DataFrame, dict]:
    _require(df, _STEP_KEYS, where)
    skipped: dict[str, int] = {}
    metric = df["metric"].astype(str).str.strip()
    unknown = ~metric.isin(list(_STEP_METRICS) + ["e2e_latency"])
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(input_problem(
            "unknown metric; allowed: " + ", ".join(list(_STEP_METRICS) + ["e2e_latency"]),
            where=where, line=int(df.index[i]) + 2, key="metric", value=metric.iloc[i]))
    e2e = (metric == "e2e_latency").to_numpy()
    if e2e.any():
        skipped["e2e_latency (derived from prefill + decode)"] = int(e2e.sum())
    notes = df["notes"].astype(str) if "notes" in df.columns else pd.Series([""] * len(df))
    suspect = notes.str.contains("SUSPECT", case=True).to_numpy() & ~e2e
    if suspect.any():
        skipped["flagged SUSPECT in notes"] = int(suspect.sum())
    keep = ~e2e & ~suspect
    sub = df[keep]
    unit = sub["unit"].astype(str).str.strip()
    badu = ~unit.isin(list(_UNIT_S))
    if badu.any():
        i = int(np.flatnonzero(badu.to_numpy())[0])
        raise InputError(input_problem("unknown unit; allowed: " + ", ".join(_UNIT_S),
                                       where=where, line=int(sub.index[i]) + 2, key="unit",
                                       value=unit.iloc[i]))
    if "pp" in sub.columns:
        pp = _numeric(sub, "pp", where)
        if (pp != 1).any():
            i = int(np.flatnonzero(pp != 1)[0])
            raise InputError(input_problem("only pp = 1 step measurements are supported",
                                           where=where, line=int(sub.index[i]) + 2, key="pp",
                                           value=pp[i]))
    val = _numeric(sub, "value", where) * unit.map(_UNIT_S).to_numpy(dtype=float)
    m = metric[keep]
    return _frame(family="step", op=m.map(_STEP_METRICS).to_numpy(), column=m.to_numpy(),
                  model=sub["model"].astype(str).to_numpy(), tp=_numeric(sub, "tp", where),
                  batch=_numeric(sub, "batch_or_concurrency", where),
                  chunk=_numeric(sub, "input_len", where),
                  output_len=_numeric(sub, "output_len", where), measured_s=val, file=name,
                  line=sub.index.to_numpy() + 2), skipped


_READERS = {"ops": _read_ops, "collectives": _read_collectives, "attention": _read_attention,
            "steps": _read_steps}


def read_measurements(paths) -> Measurements:
    """Read measurement CSVs (files or directories of them) into one tidy table (see module
    docstring). Raises InputError for a file it cannot use."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames, files, skipped = [], {}, {}
    for path in _expand(paths):
        where = str(path)
        try:
            df = pd.read_csv(path, low_memory=False)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError,
                pd.errors.EmptyDataError) as exc:
            raise InputError(input_problem(f"cannot read CSV: {exc}", where=where)) from None
        layout = _layout(set(df.columns))
        if layout is None:
            raise InputError(input_problem(
                "unknown measurement layout: expected operator times (Vidur: num_tokens, "
                "attn_pre_proj_ms, ...), collectives (collective, size, ...), attention "
                "(time_stats.attn_*.median or attn_median_ms) or step latencies (Splitwise: "
                "metric, value, batch_or_concurrency, ...)", where=where, line=1))
        if path.name in files:
            raise InputError(input_problem("two measurement files with the same name",
                                           where=where, value=path.name))
        frame, skip = _READERS[layout](df, where, path.name)
        frames.append(frame)
        files[path.name] = {"layout": layout, "rows": int(len(df)), "path": where}
        if skip:
            skipped[path.name] = skip
    frame = pd.concat(frames, ignore_index=True)
    return Measurements(frame, files, skipped)
