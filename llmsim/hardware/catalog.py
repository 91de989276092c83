"""The accelerator catalog: YAML hardware cards -> :class:`HardwareSpec`.

Contract:

* ``load_hardware(name_or_path)`` takes a catalog name or alias (case-insensitive; spaces and
  underscores count as ``-``, so nvidia-smi product names such as ``"NVIDIA H100 80GB HBM3"``
  work) or the path of a YAML card of the same schema (anything ending in ``.yaml``/``.yml`` or
  containing a path separator is a path). It returns a frozen :class:`HardwareSpec`. Loaded
  cards are cached (keyed on the file and its modification time), so repeated look-ups are
  cheap and return the same object: treat its dicts as read-only.
* ``list_hardware()`` lists the catalog names (sorted); ``hardware_dir()`` is the packaged cards
  directory ``llmsim/hardware/cards`` (a symlink to the top-level ``hardware/`` in a checkout, a
  real directory inside an installed wheel).
* Every defect raises :class:`~llmsim.errors.InputError` naming the file, the key path (and
  line) and what is allowed: unknown name (with close matches and the catalog location),
  unreadable file, YAML syntax error, duplicate key, unknown key, missing key, wrong type,
  non-positive number, a link kind outside :data:`LINK_KINDS`, a numeric figure without a
  ``provenance`` entry, or a ``provenance`` entry for a field the card does not have.

Card schema (one YAML mapping, keys exactly the :class:`HardwareSpec` fields): ``name``,
``display_name``, ``vendor``, ``aliases`` (optional list), ``peak_flops_per_s`` (dense peaks
keyed by dtype, see :data:`llmsim.cost.types.DTYPE_BITS`), ``memory_bytes``,
``memory_bandwidth_bytes_per_s``, ``intra_node`` / ``host_link`` / ``inter_node`` (each
``kind``, ``bandwidth_bytes_per_s`` per GPU per direction, ``latency_s``, optional
``description``), ``gpus_per_node``, ``power_w``, ``price_on_demand_usd_per_h``,
``price_spot_usd_per_h``, ``price_note``, ``efficiency`` (any :class:`Efficiency` field; omitted
fields take the documented defaults; ``source`` is required), ``provenance`` (field path ->
source text; required for every numeric field outside ``efficiency``, whose numbers are covered
by ``efficiency.source``) and an optional ``calibration`` mapping written by ``llmsim
calibrate`` (data, hold-out split and errors of the fit; free-form, not part of HardwareSpec).

Numbers are SI. YAML 1.2 float spellings such as ``989.4e12`` or ``1e-6`` are read as numbers
(parsing goes through :func:`llmsim.yaml_lines.read_yaml`; PyYAML alone reads them as text).
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmsim.errors import InputError, Problem, close_matches, input_problem, suggest
from llmsim.hardware.spec import Efficiency, HardwareSpec, LinkSpec
from llmsim.yaml_lines import dotted, read_yaml

__all__ = ["load_hardware", "list_hardware", "hardware_dir", "LINK_KINDS"]

LINK_KINDS = ("nvlink", "xgmi", "pcie", "ici", "infiniband", "ethernet", "roce")
_LINK_FIELDS = ("intra_node", "host_link", "inter_node")
_CARD_SUFFIXES = (".yaml", ".yml")


# --------------------------------------------------------------------------- YAML reading

def _read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """Parse ``path``; return the data and a map dotted key path -> 1-based line of that key."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(input_problem(f"cannot read hardware card: {exc}", where=where)) from None
    doc = read_yaml(text, where=where)
    if doc.problems:
        raise InputError(doc.problems)
    if doc.data is None:
        raise InputError(input_problem("hardware card is empty", where=where))
    return doc.data, {dotted(k): v for k, v in doc.lines.items() if k}


# --------------------------------------------------------------------------- schema

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class _PeaksModel(_Strict):
    """Dense peak FLOP/s per dtype; list only the dtypes the part runs in hardware."""

    fp32: float | None = Field(None, gt=0)
    tf32: float | None = Field(None, gt=0)
    bf16: float | None = Field(None, gt=0)
    fp16: float | None = Field(None, gt=0)
    fp8: float | None = Field(None, gt=0)
    int8: float | None = Field(None, gt=0)
    int4: float | None = Field(None, gt=0)
    fp4: float | None = Field(None, gt=0)


class _LinkModel(_Strict):
    kind: Literal[LINK_KINDS]  # type: ignore[valid-type]
    bandwidth_bytes_per_s: float = Field(gt=0)
    latency_s: float = Field(ge=0)
    description: str = ""


_EFF_DEFAULTS = Efficiency()


class _EfficiencyModel(_Strict):
    gemm_eff_max: float = Field(_EFF_DEFAULTS.gemm_eff_max, gt=0, le=1)
    gemm_half_tokens: float = Field(_EFF_DEFAULTS.gemm_half_tokens, ge=0)
    mem_eff: float = Field(_EFF_DEFAULTS.mem_eff, gt=0, le=1)
    elementwise_mem_eff: float = Field(_EFF_DEFAULTS.elementwise_mem_eff, gt=0, le=1)
    attn_prefill_eff: float = Field(_EFF_DEFAULTS.attn_prefill_eff, gt=0, le=1)
    attn_decode_mem_eff: float = Field(_EFF_DEFAULTS.attn_decode_mem_eff, gt=0, le=1)
    attn_decode_floor_s: float = Field(_EFF_DEFAULTS.attn_decode_floor_s, ge=0)
    kernel_launch_s: float = Field(_EFF_DEFAULTS.kernel_launch_s, ge=0)
    step_overhead_s: float = Field(_EFF_DEFAULTS.step_overhead_s, ge=0)
    comm_bw_eff: float = Field(_EFF_DEFAULTS.comm_bw_eff, gt=0, le=1)
    comm_latency_s: float = Field(_EFF_DEFAULTS.comm_latency_s, ge=0)
    gemm_fixed_s: float = Field(_EFF_DEFAULTS.gemm_fixed_s, ge=0)
    norm_mem_eff: float | None = Field(None, gt=0, le=1)
    rotary_mem_eff: float | None = Field(None, gt=0, le=1)
    activation_mem_eff: float | None = Field(None, gt=0, le=1)
    residual_mem_eff: float | None = Field(None, gt=0, le=1)
    embedding_mem_eff: float | None = Field(None, gt=0, le=1)
    attn_context_eff: float | None = Field(None, gt=0, le=1)
    attn_prefill_fixed_s: float = Field(_EFF_DEFAULTS.attn_prefill_fixed_s, ge=0)
    attn_decode_fixed_s: float = Field(_EFF_DEFAULTS.attn_decode_fixed_s, ge=0)
    attn_decode_seq_s: float = Field(_EFF_DEFAULTS.attn_decode_seq_s, ge=0)
    comm_base_latency_s: float = Field(_EFF_DEFAULTS.comm_base_latency_s, ge=0)
    p2p_bw_eff: float | None = Field(None, gt=0, le=1)
    host_kernel_s: float = Field(_EFF_DEFAULTS.host_kernel_s, ge=0)
    first_token_overhead_s: float = Field(_EFF_DEFAULTS.first_token_overhead_s, ge=0)
    decode_seq_overhead_s: float = Field(_EFF_DEFAULTS.decode_seq_overhead_s, ge=0)
    source: str = Field(min_length=1)


class _CardModel(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    display_name: str = Field(min_length=1)
    vendor: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    peak_flops_per_s: _PeaksModel
    memory_bytes: float = Field(gt=0)
    memory_bandwidth_bytes_per_s: float = Field(gt=0)
    intra_node: _LinkModel
    gpus_per_node: int = Field(ge=1)
    host_link: _LinkModel
    inter_node: _LinkModel
    power_w: float = Field(gt=0)
    price_on_demand_usd_per_h: float = Field(ge=0)
    price_spot_usd_per_h: float = Field(ge=0)
    price_note: str = Field(min_length=1)
    efficiency: _EfficiencyModel
    provenance: dict[str, str]
    # Written by `llmsim calibrate` (see llmsim.cost.calibrate.calibration_record): what the
    # efficiency section was fitted on and the errors it reached. Kept in the file, not in
    # HardwareSpec; read it with llmsim.cost.calibrate.read_calibration_record.
    calibration: dict[str, Any] | None = None

    @field_validator("peak_flops_per_s")
    @classmethod
    def _some_peak(cls, v: _PeaksModel) -> _PeaksModel:
        if all(x is None for x in v.model_dump().values()):
            raise ValueError("give the dense peak of at least one dtype ("
                             + ", ".join(_PeaksModel.model_fields) + ")")
        return v

    @field_validator("aliases")
    @classmethod
    def _nonempty_aliases(cls, v: list[str]) -> list[str]:
        if any(not a.strip() for a in v):
            raise ValueError("aliases must be non-empty strings")
        return v


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the mapping at ``loc`` (for listing allowed keys)."""
    model: Any = _CardModel
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


_BOUND_WORDS = {"greater_than": "greater than", "greater_than_equal": "at least",
                "less_than": "less than", "less_than_equal": "at most"}


def _problems_from_validation(exc: ValidationError, where: str,
                              lines: dict[str, int]) -> list[Problem]:
    """Turn pydantic's errors into Problems naming the file, line, key path and what is allowed.

    A "missing" key is not reported separately when an unknown key beside it is a close
    spelling of it (the unknown-key problem already says "Did you mean ...").
    """
    errors = exc.errors()
    extras: dict[tuple, list[str]] = {}
    for err in errors:
        if err["type"] == "extra_forbidden":
            extras.setdefault(tuple(err["loc"][:-1]), []).append(str(err["loc"][-1]))
    problems = []
    for err in errors:
        loc = tuple(err["loc"])
        key = dotted(loc)
        line = lines.get(key)
        kind = err["type"]
        value = err.get("input")
        if kind == "extra_forbidden":
            owner = _model_at(loc[:-1])
            allowed = sorted(owner.model_fields) if owner else []
            msg = ("unknown key." + suggest(str(loc[-1]), allowed)
                   + (" Allowed keys: " + ", ".join(allowed) if allowed else ""))
            problems.append(input_problem(msg, where=where, line=line, key=key))
        elif kind == "missing":
            typos = extras.get(loc[:-1], [])
            if any(close_matches(t, [str(loc[-1])]) for t in typos):
                continue
            problems.append(input_problem("required key is missing", where=where,
                                          line=lines.get(dotted(loc[:-1])), key=key))
        elif kind in ("float_type", "int_type") and isinstance(value, str):
            problems.append(input_problem(
                "must be a plain number in SI units (e.g. 989.4e12, 3.35e12), not text",
                where=where, line=line, key=key, value=value))
        elif kind == "literal_error" and loc[-1] == "kind":
            problems.append(input_problem(
                "unknown link kind; allowed: " + ", ".join(LINK_KINDS) + "."
                + suggest(str(value), LINK_KINDS),
                where=where, line=line, key=key, value=value))
        elif kind in _BOUND_WORDS:
            bound = next(iter(err.get("ctx", {}).values()), "?")
            problems.append(input_problem(f"must be {_BOUND_WORDS[kind]} {bound}",
                                          where=where, line=line, key=key, value=value))
        elif kind == "string_pattern_mismatch" and key == "name":
            problems.append(input_problem(
                "must be a lowercase catalog name (letters, digits, '.', '_', '-')",
                where=where, line=line, key=key, value=value))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(input_problem(msg, where=where, line=line, key=key, value=value))
    return problems


def _numeric_paths(card: _CardModel) -> list[str]:
    """Field paths of every numeric figure that needs a provenance entry."""
    paths = [f"peak_flops_per_s.{d}" for d, v in card.peak_flops_per_s.model_dump().items()
             if v is not None]
    paths += ["memory_bytes", "memory_bandwidth_bytes_per_s", "gpus_per_node", "power_w",
              "price_on_demand_usd_per_h", "price_spot_usd_per_h"]
    for link in _LINK_FIELDS:
        paths += [f"{link}.bandwidth_bytes_per_s", f"{link}.latency_s"]
    return paths


def _all_field_paths(card: _CardModel) -> list[str]:
    """Every field path a provenance entry may describe (numeric or not)."""
    paths = _numeric_paths(card) + ["name", "display_name", "vendor", "aliases",
                                    "price_note", "efficiency"]
    for link in _LINK_FIELDS:
        paths += [link, f"{link}.kind", f"{link}.description"]
    paths += [f"efficiency.{f}" for f in _EfficiencyModel.model_fields]
    return paths


def _check_provenance(card: _CardModel, where: str, lines: dict[str, int]) -> list[Problem]:
    problems = []
    prov = card.provenance
    for path in _numeric_paths(card):
        if not prov.get(path, "").strip():
            problems.append(input_problem(
                f"numeric figure has no provenance: add 'provenance: {{{path}: <source>}}' "
                "(datasheet, dense or sparse, how derived)",
                where=where, line=lines.get(path), key=path))
    known = _all_field_paths(card)
    for path in prov:
        if path not in known:
            problems.append(input_problem(
                "provenance entry for a field this card does not have;"
                + (suggest(path, known) or " keys are field paths such as "
                   "'peak_flops_per_s.bf16' or 'intra_node.bandwidth_bytes_per_s'"),
                where=where, line=lines.get(f"provenance.{path}"), key=f"provenance.{path}"))
    return problems


def _link(m: _LinkModel) -> LinkSpec:
    return LinkSpec(kind=m.kind, bandwidth_bytes_per_s=float(m.bandwidth_bytes_per_s),
                    latency_s=float(m.latency_s), description=m.description)


@functools.lru_cache(maxsize=256)
def _load_card(path_str: str, mtime_ns: int) -> HardwareSpec:
    """Parse and validate one card (cached on path and mtime, so edits are picked up)."""
    path = Path(path_str)
    data, lines = _read_yaml(path)
    where = path_str
    if not isinstance(data, dict):
        raise InputError(input_problem(
            "a hardware card must be a YAML mapping of fields (name, peak_flops_per_s, ...)",
            where=where, value=type(data).__name__))
    try:
        card = _CardModel.model_validate(data)
    except ValidationError as exc:
        raise InputError(_problems_from_validation(exc, where, lines)) from None
    problems = _check_provenance(card, where, lines)
    if problems:
        raise InputError(problems)
    eff = card.efficiency.model_dump()
    return HardwareSpec(
        name=card.name,
        display_name=card.display_name,
        vendor=card.vendor,
        peak_flops_per_s={d: float(v) for d, v in card.peak_flops_per_s.model_dump().items()
                          if v is not None},
        memory_bytes=float(card.memory_bytes),
        memory_bandwidth_bytes_per_s=float(card.memory_bandwidth_bytes_per_s),
        intra_node=_link(card.intra_node),
        gpus_per_node=int(card.gpus_per_node),
        host_link=_link(card.host_link),
        inter_node=_link(card.inter_node),
        power_w=float(card.power_w),
        price_on_demand_usd_per_h=float(card.price_on_demand_usd_per_h),
        price_spot_usd_per_h=float(card.price_spot_usd_per_h),
        price_note=card.price_note,
        efficiency=Efficiency(**{k: (v if k == "source" or v is None else float(v))
                                 for k, v in eff.items()}),
        provenance=dict(card.provenance),
        aliases=tuple(card.aliases),
    )


# --------------------------------------------------------------------------- catalog

def hardware_dir() -> Path:
    """The packaged cards directory (``llmsim/hardware/cards``)."""
    return Path(__file__).parent / "cards"


def _normalize(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _card_files() -> list[Path]:
    d = hardware_dir()
    if not d.is_dir():
        raise InputError(input_problem(
            "the hardware catalog directory is missing (broken installation?)", where=str(d)))
    return sorted(p for p in d.iterdir() if p.suffix in _CARD_SUFFIXES and p.is_file())


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, Path]:
    """normalized name/alias -> card file, for the packaged catalog."""
    index: dict[str, Path] = {}
    problems: list[Problem] = []
    for path in _card_files():
        index.setdefault(_normalize(path.stem), path)
    for path in _card_files():
        spec = _load_card(str(path), path.stat().st_mtime_ns)
        if spec.name != path.stem:
            problems.append(input_problem(
                f"card name must equal the file name '{path.stem}'",
                where=str(path), key="name", value=spec.name))
        for alias in spec.aliases:
            key = _normalize(alias)
            other = index.setdefault(key, path)
            if other != path:
                problems.append(input_problem(
                    f"alias also names the card {other.name}", where=str(path),
                    key="aliases", value=alias))
    if problems:
        raise InputError(problems)
    return index


def list_hardware() -> list[str]:
    """Catalog names of every packaged card, sorted."""
    return [p.stem for p in _card_files()]


def _looks_like_path(s: str) -> bool:
    return s.lower().endswith(_CARD_SUFFIXES) or os.sep in s or "/" in s


def load_hardware(name_or_path: str) -> HardwareSpec:
    """Catalog name/alias (case-insensitive) or path of a YAML card -> :class:`HardwareSpec`."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(input_problem("hardware must be a catalog name or a card path",
                                       where="hardware", value=name_or_path))
    raw = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(raw):
        path = Path(raw).expanduser()
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise InputError(input_problem(
                "no such hardware card file; give a catalog name ("
                + ", ".join(list_hardware()) + f") or an existing YAML path",
                where=raw)) from None
        if not path.is_file():
            raise InputError(input_problem("not a file", where=raw))
        return _load_card(str(path), mtime)
    index = _index()
    path = index.get(_normalize(raw))
    if path is None:
        hits = close_matches(_normalize(raw), index)
        names = sorted({index[h].stem for h in hits}) or []
        hint = (" Did you mean " + " or ".join(repr(n) for n in names) + "?") if names else ""
        raise InputError(input_problem(
            f"unknown hardware {raw!r}.{hint} Known: {', '.join(list_hardware())}. "
            f"Cards live in {hardware_dir()}; or pass the path of your own YAML card.",
            where="hardware"))
    return _load_card(str(path), path.stat().st_mtime_ns)
