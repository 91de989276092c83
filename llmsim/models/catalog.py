"""The model catalog: built-in YAML cards, user cards and Hugging Face ``config.json`` files.

Contract:

- :func:`load_model` accepts, in this order of precedence: a built-in card name or alias
  (case-insensitive, e.g. ``llama-3.1-8b`` or ``meta-llama/Llama-3.1-8B``); a path to a YAML
  card (``.yaml``/``.yml``); a path to a Hugging Face ``config.json`` (any ``.json`` file) or to a
  directory holding one. Prefix a relative path with ``./`` if it could be taken for a name.
  Anything else raises :class:`~llmsim.errors.InputError` with close matches.
- A card is a YAML mapping whose keys are exactly the fields of
  :class:`~llmsim.models.spec.ModelSpec` (``aliases`` as a list). Unknown keys, missing required
  fields, wrong types, non-positive sizes, negative counts and inconsistent combinations (e.g.
  ``num_experts_per_tok > num_experts``, MoE fields on a dense model) raise InputError naming
  the file, the line and the key. ``1e9``-style numbers, which YAML 1.1 reads as text, are
  accepted for ``published_params``.
- Loads are cached (built-in cards once per process; files by path and modification time), so
  repeated lookups return the same frozen object.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import InputError, Problem, input_problem, suggest
from .spec import ModelSpec

_FIELDS = {f.name: f for f in dataclasses.fields(ModelSpec)}
_REQUIRED = [n for n, f in _FIELDS.items()
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
_POSITIVE_INT = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
                 "intermediate_size", "vocab_size", "max_model_len")
_NONNEG_INT = ("num_experts", "num_experts_per_tok", "moe_intermediate_size",
               "num_shared_experts", "num_dense_layers", "q_lora_rank", "kv_lora_rank",
               "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
_BOOL = ("gated_mlp", "tie_word_embeddings")
_MOE_ONLY = ("num_experts_per_tok", "moe_intermediate_size", "num_shared_experts",
             "num_dense_layers")
_MLA_ONLY = ("q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_CARD_SUFFIXES = (".yaml", ".yml")


def cards_dir() -> Path:
    """Directory of the built-in model cards (shipped in the wheel)."""
    return Path(__file__).resolve().parent / "cards"


def list_models() -> list[str]:
    """Names of the built-in model cards, sorted."""
    return sorted(_builtin_specs())


def load_model(name_or_path: str | os.PathLike, *, where: str | None = None,
               key: str | None = None) -> ModelSpec:
    """Resolve a card name/alias or a path to a :class:`ModelSpec` (see the module contract).

    ``where`` and ``key`` say where the reference came from (e.g. the scenario file and
    ``model``) and are used in error messages only.
    """
    if isinstance(name_or_path, os.PathLike):
        return _load_path(Path(name_or_path), where, key)
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise InputError(input_problem(
            "expected a model card name, an alias, or a path to a YAML card / HF config.json",
            where=where, key=key, value=name_or_path))
    text = name_or_path.strip()
    hit = _index().get(text.lower())
    if hit is not None:
        return _builtin_specs()[hit]
    path = Path(text).expanduser()
    if path.exists():
        return _load_path(path, where, key)
    if path.suffix.lower() in _CARD_SUFFIXES + (".json",) or text.startswith(("/", ".", "~")):
        raise InputError(input_problem("model file not found", where=where, key=key, value=text))
    choices = list_models() + sorted({a for s in _builtin_specs().values() for a in s.aliases})
    raise InputError(input_problem(
        "unknown model; use a built-in card (" + ", ".join(list_models()) + "), an alias, or a "
        "path to a YAML card or a Hugging Face config.json." + suggest(text, choices),
        where=where, key=key, value=text))


def load_card(path: str | os.PathLike) -> ModelSpec:
    """Load and validate one YAML model card (cached by path and modification time)."""
    p = Path(path).expanduser()
    try:
        stamp = p.stat().st_mtime_ns
    except OSError as exc:
        raise InputError(input_problem(f"cannot read model card: {exc.strerror}",
                                       where=str(p))) from None
    return _load_card_cached(str(p.resolve()), stamp)


def spec_from_dict(data: Any, where: str | None = None,
                   lines: Mapping[str, int] | None = None) -> ModelSpec:
    """Validate a mapping of ModelSpec fields (a parsed card) and build the spec.

    Raises InputError listing every defect, each naming ``where``, the key and (when ``lines``
    maps keys to 1-based line numbers) the line.
    """
    lines = lines or {}

    def prob(msg: str, k: str | None = None, value: Any = ...) -> Problem:
        return input_problem(msg, where=where, line=lines.get(k) if k else None, key=k,
                             value=value)

    if not isinstance(data, Mapping):
        raise InputError(prob("a model card must be a mapping of ModelSpec fields",
                              value=type(data).__name__))
    problems: list[Problem] = []
    for k in data:
        if k not in _FIELDS:
            problems.append(prob("unknown key; allowed keys: " + ", ".join(_FIELDS) + "."
                                 + suggest(str(k), _FIELDS), str(k)))
    for k in _REQUIRED:
        if k not in data:
            problems.append(prob("required field is missing", k))
    values: dict[str, Any] = {}
    for k, v in data.items():
        if k not in _FIELDS:
            continue
        checked = _check_field(k, v)
        if isinstance(checked, str):
            problems.append(prob(checked, k, v))
        else:
            values[k] = checked[0]
    if problems:
        raise InputError(problems)
    problems = [prob(msg, k, values.get(k, _FIELDS[k].default)) for k, msg in _consistency(values)]
    if problems:
        raise InputError(problems)
    return ModelSpec(**values)


# ----------------------------------------------------------------------------- internals


def _check_field(k: str, v: Any) -> tuple[Any] | str:
    """(normalized value,) or an error message saying what is allowed."""
    if k in _POSITIVE_INT or k in _NONNEG_INT:
        low = 1 if k in _POSITIVE_INT else 0
        if isinstance(v, bool) or not isinstance(v, int):
            return "must be an integer"
        if v < low:
            return "must be a positive integer" if low else "must be an integer >= 0"
        return (v,)
    if k in _BOOL:
        return (v,) if isinstance(v, bool) else "must be true or false"
    if k == "sliding_window":
        if v is None:
            return (None,)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            return "must be a positive integer (tokens) or null for full attention"
        return (v,)
    if k == "published_params":
        if v is None:
            return (None,)
        if isinstance(v, str) and _FLOAT_TEXT.match(v.strip()):
            v = float(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            return "must be a positive number of parameters (e.g. 6.74e9) or null"
        return (float(v),)
    if k in ("name", "source"):
        if not isinstance(v, str) or (k == "name" and not v.strip()):
            return "must be a non-empty string" if k == "name" else "must be a string"
        return (v.strip() if k == "name" else v,)
    if k == "aliases":
        if v is None:
            return ((),)
        if not isinstance(v, (list, tuple)) or not all(isinstance(a, str) and a.strip() for a in v):
            return "must be a list of non-empty strings"
        return (tuple(a.strip() for a in v),)
    raise AssertionError(f"ModelSpec field {k!r} has no validator")  # a bug, not bad input


def _consistency(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for combinations of valid fields that do not make a model."""
    out: list[tuple[str, str]] = []
    get = lambda k: v.get(k, _FIELDS[k].default)  # noqa: E731
    if get("num_experts") > 0:
        if not 1 <= get("num_experts_per_tok") <= get("num_experts"):
            out.append(("num_experts_per_tok",
                        f"must be between 1 and num_experts ({get('num_experts')}) for an MoE model"))
        if get("moe_intermediate_size") < 1:
            out.append(("moe_intermediate_size", "must be a positive integer for an MoE model"))
        if get("num_dense_layers") >= get("num_layers"):
            out.append(("num_dense_layers",
                        f"must be less than num_layers ({get('num_layers')}) for an MoE model"))
    else:
        for k in _MOE_ONLY:
            if get(k) != 0:
                out.append((k, "only allowed on an MoE model (num_experts > 0); must be 0"))
    if get("kv_lora_rank") > 0:
        for k in ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
            if get(k) < 1:
                out.append((k, "must be a positive integer for MLA (kv_lora_rank > 0)"))
        want = get("qk_nope_head_dim") + get("qk_rope_head_dim")
        if want > 0 and get("head_dim") != want:
            out.append(("head_dim", f"for MLA must equal qk_nope_head_dim + qk_rope_head_dim "
                                    f"({want})"))
    else:
        for k in _MLA_ONLY:
            if get(k) != 0:
                out.append((k, "only allowed with MLA (kv_lora_rank > 0); must be 0"))
        if get("num_attention_heads") % get("num_kv_heads") != 0:
            out.append(("num_kv_heads", f"must divide num_attention_heads "
                                        f"({get('num_attention_heads')})"))
    return out


def _read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """Parse one YAML document; returns (data, {top-level key: 1-based line})."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(input_problem(f"cannot read model card: {exc}", where=where)) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InputError(input_problem("the model card is empty", where=where))
        lines: dict[str, int] = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                k = str(key_node.value)
                if k in lines:
                    raise InputError(input_problem(
                        f"duplicate key (first on line {lines[k]})", where=where,
                        line=key_node.start_mark.line + 1, key=k))
                lines[k] = key_node.start_mark.line + 1
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(input_problem(
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}", where=where,
            line=mark.line + 1 if mark is not None else None)) from None
    finally:
        loader.dispose()
    return data, lines


@functools.lru_cache(maxsize=256)
def _load_card_cached(path: str, mtime_ns: int) -> ModelSpec:
    data, lines = _read_yaml(Path(path))
    return spec_from_dict(data, where=path, lines=lines)


@functools.lru_cache(maxsize=256)
def _load_hf_cached(path: str, mtime_ns: int) -> ModelSpec:
    from .hf_config import model_from_hf_config  # local import: hf_config uses spec_from_dict
    return model_from_hf_config(path)


def _load_path(path: Path, where: str | None, key: str | None) -> ModelSpec:
    path = path.expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise InputError(input_problem(
                "directory holds no config.json (expected a Hugging Face model directory)",
                where=where, key=key, value=str(path)))
        path = cfg
    if not path.is_file():
        raise InputError(input_problem("model file not found", where=where, key=key,
                                       value=str(path)))
    suffix = path.suffix.lower()
    if suffix in _CARD_SUFFIXES:
        return load_card(path)
    if suffix == ".json":
        return _load_hf_cached(str(path.resolve()), path.stat().st_mtime_ns)
    raise InputError(input_problem(
        "model file must be a YAML card (.yaml/.yml) or a Hugging Face config (.json)",
        where=where, key=key, value=str(path)))


@functools.lru_cache(maxsize=1)
def _builtin_specs() -> dict[str, ModelSpec]:
    """name -> spec for every built-in card (each card's ``name`` must equal its file stem)."""
    specs: dict[str, ModelSpec] = {}
    for path in sorted(cards_dir().glob("*.yaml")):
        spec = load_card(path)
        if spec.name != path.stem:
            raise InputError(input_problem(f"card name must equal the file name ({path.stem!r})",
                                           where=str(path), key="name", value=spec.name))
        specs[spec.name] = spec
    return specs


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """lower-cased name or alias -> card name. A clash between built-in cards is an error."""
    index: dict[str, str] = {}
    for name, spec in _builtin_specs().items():
        for ref in (name, *spec.aliases):
            prev = index.setdefault(ref.lower(), name)
            if prev != name:
                raise InputError(input_problem(
                    f"alias already used by card {prev!r}", where=str(cards_dir() / f"{name}.yaml"),
                    key="aliases", value=ref))
    return index
