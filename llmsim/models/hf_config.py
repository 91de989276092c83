"""Import a local Hugging Face ``config.json`` as a :class:`ModelSpec` (no network access).

Contract: :func:`model_from_hf_config` reads one file (or ``<dir>/config.json``) and maps the
keys of its ``model_type`` family onto ModelSpec. Supported ``model_type`` values:

=====================  ===================================================================
llama, mistral, phi3   gated MLP; ``num_key_value_heads`` missing/null -> MHA; ``head_dim``
                       missing/null -> hidden_size / num_attention_heads; ``sliding_window``
                       (mistral, phi3)
mixtral                ``num_local_experts`` experts of ``intermediate_size``, top
                       ``num_experts_per_tok``, every layer MoE
qwen2, qwen3           as llama; a sliding window only when ``use_sliding_window`` is true
qwen2_moe, qwen3_moe   ``num_experts`` of ``moe_intermediate_size``; qwen2_moe's shared expert
                       (``shared_expert_intermediate_size``) becomes ``num_shared_experts``
                       experts of ``moe_intermediate_size``; dense layers from
                       ``decoder_sparse_step`` / ``mlp_only_layers``
deepseek_v2/v3         MLA (``q_lora_rank`` null -> 0) and DeepSeekMoE (``n_routed_experts``,
                       ``n_shared_experts``, ``first_k_dense_replace``, ``moe_layer_freq``);
                       head_dim = qk_nope_head_dim + qk_rope_head_dim
phi                    non-gated MLP, MHA unless ``num_key_value_heads`` (partial rotary is
                       irrelevant to sizes)
opt                    ``ffn_dim``, non-gated, MHA; ``word_embed_proj_dim`` must equal
                       hidden_size (OPT-350m's projected embeddings are not representable)
bloom                  ``n_layer``/``n_head``/``n_embed`` or their long names; MLP 4 x hidden,
                       non-gated; context ``seq_length`` if present, else 2048 (BLOOM's training
                       length, arXiv:2211.05100 Sec. 3.3; ALiBi has no position table)
gpt_neox               non-gated, MHA
falcon (RefinedWeb*)   non-gated; KV heads ``num_kv_heads`` with ``new_decoder_architecture``,
                       1 with ``multi_query`` (default true), else MHA; ``ffn_hidden_size``
                       default 4 x hidden; ``max_position_embeddings`` default 2048
=====================  ===================================================================

``tie_word_embeddings`` defaults to the family's transformers default when absent (true for
opt, bloom, falcon; false otherwise). Integer keys must hold integers. An unknown model_type, a
missing required key or a value of the wrong type raises InputError naming the file and key.
The spec is named after ``_name_or_path`` when present (its last component if it is a local
path), else the Hugging Face cache repo (``models--org--name``), else the parent directory of a
file called ``config.json``, else the file's stem. ``published_params`` is left empty.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, Problem, input_problem, suggest
from .catalog import spec_from_dict
from .spec import ModelSpec

_MISSING = object()


class _Config:
    """Typed access to a config dict; records a Problem per bad/missing key instead of raising."""

    def __init__(self, data: dict[str, Any], where: str):
        self.data = data
        self.where = where
        self.problems: list[Problem] = []

    def _get(self, keys: tuple[str, ...]) -> tuple[str, Any]:
        for k in keys:
            if k in self.data and self.data[k] is not None:
                return k, self.data[k]
        return keys[0], _MISSING

    def int(self, *keys: str, default: Any = _MISSING, minimum: int = 1) -> int:
        """First non-null key of ``keys`` as an int >= minimum; ``default`` when all are absent
        (or null). Records a problem and returns ``minimum`` when missing or invalid."""
        k, v = self._get(keys)
        if v is _MISSING:
            if default is not _MISSING:
                return default
            alt = f" (or {', '.join(keys[1:])})" if len(keys) > 1 else ""
            self.problems.append(input_problem(f"required key{alt} is missing",
                                               where=self.where, key=k))
            return minimum
        if isinstance(v, bool) or not isinstance(v, int):
            self.problems.append(input_problem("must be an integer", where=self.where, key=k,
                                               value=v))
            return minimum
        if v < minimum:
            self.problems.append(input_problem(f"must be an integer >= {minimum}",
                                               where=self.where, key=k, value=v))
            return minimum
        return v

    def bool(self, key: str, default: bool) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.problems.append(input_problem("must be true or false", where=self.where,
                                               key=key, value=v))
            return default
        return v

    def int_list(self, key: str) -> list[int]:
        v = self.data.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                              for x in v):
            self.problems.append(input_problem("must be a list of layer indices",
                                               where=self.where, key=key, value=v))
            return []
        return v

    def fail(self, key: str, message: str, value: Any = ...) -> None:
        self.problems.append(input_problem(message, where=self.where, key=key, value=value))


# ---------------------------------------------------------------------------- families


def _attention(c: _Config, hidden: int, heads_keys=("num_attention_heads",),
               kv_keys=("num_key_value_heads",)) -> dict[str, int]:
    heads = c.int(*heads_keys)
    kv = c.int(*kv_keys, default=heads)
    head_dim = c.int("head_dim", default=0)
    if head_dim == 0:
        if hidden % heads:
            c.fail(heads_keys[0], f"must divide hidden_size ({hidden}) when head_dim is absent",
                   heads)
        head_dim = max(hidden // heads, 1)
    return {"num_attention_heads": heads, "num_kv_heads": kv, "head_dim": head_dim}


def _common(c: _Config, tie_default: bool, hidden_keys=("hidden_size",),
            layer_keys=("num_hidden_layers",)) -> dict[str, Any]:
    return {"num_layers": c.int(*layer_keys), "hidden_size": c.int(*hidden_keys),
            "vocab_size": c.int("vocab_size"),
            "tie_word_embeddings": c.bool("tie_word_embeddings", tie_default)}


def _llama_like(c: _Config) -> dict[str, Any]:
    out = _common(c, tie_default=False)
    out.update(_attention(c, out["hidden_size"]))
    out.update(intermediate_size=c.int("intermediate_size"),
               max_model_len=c.int("max_position_embeddings"), gated_mlp=True)
    return out


def _window_key(c: _Config) -> dict[str, Any]:
    """mistral/mixtral/phi3: ``sliding_window`` applies to every layer when set."""
    return {"sliding_window": c.int("sliding_window", default=None)}


def _qwen_window(c: _Config, num_layers: int) -> dict[str, Any]:
    """Qwen2/3: sliding only with use_sliding_window, on layers >= max_window_layers (or as
    listed in ``layer_types``); a mix of sliding and full layers is not representable."""
    if not c.bool("use_sliding_window", False):
        return {"sliding_window": None}
    window = c.int("sliding_window")
    types = c.data.get("layer_types")
    if isinstance(types, list) and types:
        kinds = set(types)
        sliding = kinds == {"sliding_attention"}
        if not sliding and kinds != {"full_attention"}:
            c.fail("layer_types", "a mix of sliding-window and full-attention layers is not "
                                  "supported (ModelSpec has one window for all layers)")
        return {"sliding_window": window if sliding else None}
    first = c.int("max_window_layers", default=0, minimum=0)
    if first >= num_layers:
        return {"sliding_window": None}
    if first > 0:
        c.fail("max_window_layers", "a mix of sliding-window and full-attention layers is not "
                                    "supported (ModelSpec has one window for all layers)", first)
    return {"sliding_window": window}


def _llama(c: _Config) -> dict[str, Any]:
    return _llama_like(c)


def _mistral(c: _Config) -> dict[str, Any]:
    return {**_llama_like(c), **_window_key(c)}


def _mixtral(c: _Config) -> dict[str, Any]:
    out = {**_llama_like(c), **_window_key(c)}
    out.update(num_experts=c.int("num_local_experts"),
               num_experts_per_tok=c.int("num_experts_per_tok"),
               moe_intermediate_size=out["intermediate_size"])
    return out


def _qwen(c: _Config) -> dict[str, Any]:
    out = _llama_like(c)
    out.update(_qwen_window(c, out["num_layers"]))
    return out


def _qwen_moe(c: _Config, shared: bool) -> dict[str, Any]:
    out = _qwen(c)
    experts = c.int("num_experts", default=0, minimum=0)
    if experts == 0:
        return out
    width = c.int("moe_intermediate_size")
    step = c.int("decoder_sparse_step", default=1)
    dense_only = set(c.int_list("mlp_only_layers"))
    n = out["num_layers"]
    dense = sum(1 for i in range(n) if i in dense_only or (i + 1) % step != 0)
    n_shared = 0
    if shared:
        shared_width = c.int("shared_expert_intermediate_size", default=0, minimum=0)
        if shared_width % width:
            c.fail("shared_expert_intermediate_size",
                   f"must be a multiple of moe_intermediate_size ({width}) to be represented as "
                   f"shared experts", shared_width)
        n_shared = shared_width // width
    out.update(num_experts=experts, num_experts_per_tok=c.int("num_experts_per_tok"),
               moe_intermediate_size=width, num_shared_experts=n_shared,
               num_dense_layers=min(dense, n - 1))
    if dense >= n:
        c.fail("mlp_only_layers", "every layer is dense although num_experts > 0")
    return out


def _deepseek(c: _Config) -> dict[str, Any]:
    out = _common(c, tie_default=False)
    heads = c.int("num_attention_heads")
    rope, nope = c.int("qk_rope_head_dim"), c.int("qk_nope_head_dim")
    out.update(num_attention_heads=heads,
               num_kv_heads=c.int("num_key_value_heads", default=heads),
               head_dim=rope + nope, intermediate_size=c.int("intermediate_size"),
               max_model_len=c.int("max_position_embeddings"), gated_mlp=True,
               q_lora_rank=c.int("q_lora_rank", default=0, minimum=0),
               kv_lora_rank=c.int("kv_lora_rank"), qk_rope_head_dim=rope,
               qk_nope_head_dim=nope, v_head_dim=c.int("v_head_dim"))
    experts = c.int("n_routed_experts", default=0, minimum=0)
    if experts:
        n = out["num_layers"]
        first = c.int("first_k_dense_replace", default=0, minimum=0)
        freq = c.int("moe_layer_freq", default=1)
        dense = sum(1 for i in range(n) if not (i >= first and i % freq == 0))
        if dense >= n:
            c.fail("first_k_dense_replace", f"leaves no MoE layer of {n}", first)
        out.update(num_experts=experts, num_experts_per_tok=c.int("num_experts_per_tok"),
                   moe_intermediate_size=c.int("moe_intermediate_size"),
                   num_shared_experts=c.int("n_shared_experts", default=0, minimum=0),
                   num_dense_layers=min(dense, n - 1))
    return out


def _phi(c: _Config) -> dict[str, Any]:
    out = _llama_like(c)
    out["gated_mlp"] = False
    return out


def _phi3(c: _Config) -> dict[str, Any]:
    return {**_llama_like(c), **_window_key(c)}


def _opt(c: _Config) -> dict[str, Any]:
    out = _common(c, tie_default=True)
    out.update(_attention(c, out["hidden_size"], kv_keys=("num_attention_heads",)))
    proj = c.int("word_embed_proj_dim", default=out["hidden_size"])
    if proj != out["hidden_size"]:
        c.fail("word_embed_proj_dim", f"must equal hidden_size ({out['hidden_size']}); projected "
                                      "embeddings (OPT-350m) are not supported", proj)
    out.update(intermediate_size=c.int("ffn_dim"),
               max_model_len=c.int("max_position_embeddings"), gated_mlp=False)
    return out


_BLOOM_CONTEXT_TOKENS = 2048  # BLOOM training sequence length (arXiv:2211.05100 Sec. 3.3)


def _bloom(c: _Config) -> dict[str, Any]:
    out = _common(c, tie_default=True, hidden_keys=("hidden_size", "n_embed"),
                  layer_keys=("n_layer", "num_hidden_layers"))
    out.update(_attention(c, out["hidden_size"], heads_keys=("n_head", "num_attention_heads"),
                          kv_keys=("n_head", "num_attention_heads")))
    out.update(intermediate_size=4 * out["hidden_size"],
               max_model_len=c.int("seq_length", default=_BLOOM_CONTEXT_TOKENS), gated_mlp=False)
    return out


def _gpt_neox(c: _Config) -> dict[str, Any]:
    out = _common(c, tie_default=False)
    out.update(_attention(c, out["hidden_size"], kv_keys=("num_attention_heads",)))
    out.update(intermediate_size=c.int("intermediate_size"),
               max_model_len=c.int("max_position_embeddings"), gated_mlp=False)
    return out


def _falcon(c: _Config) -> dict[str, Any]:
    out = _common(c, tie_default=True, layer_keys=("num_hidden_layers", "n_layer"))
    out.update(_attention(c, out["hidden_size"], heads_keys=("num_attention_heads", "n_head"),
                          kv_keys=("num_attention_heads", "n_head")))
    # the original "RefinedWeb" configs (Falcon-40B) predate the new_decoder_architecture flag
    if c.bool("new_decoder_architecture", c.data.get("model_type") == "RefinedWeb"):
        out["num_kv_heads"] = c.int("num_kv_heads", "n_head_kv")
    elif c.bool("multi_query", True):
        out["num_kv_heads"] = 1
    out.update(intermediate_size=c.int("ffn_hidden_size", default=4 * out["hidden_size"]),
               max_model_len=c.int("max_position_embeddings", default=2048), gated_mlp=False)
    return out


_FAMILIES: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "llama": _llama, "mistral": _mistral, "mixtral": _mixtral, "phi3": _phi3,
    "qwen2": _qwen, "qwen3": _qwen,
    "qwen2_moe": lambda c: _qwen_moe(c, shared=True),
    "qwen3_moe": lambda c: _qwen_moe(c, shared=False),
    "deepseek_v2": _deepseek, "deepseek_v3": _deepseek,
    "phi": _phi, "opt": _opt, "bloom": _bloom, "gpt_neox": _gpt_neox,
    "falcon": _falcon, "RefinedWeb": _falcon, "RefinedWebModel": _falcon,
}


def supported_model_types() -> list[str]:
    """The ``model_type`` values :func:`model_from_hf_config` understands."""
    return sorted(_FAMILIES)


# ------------------------------------------------------------------------------ entry


def model_from_hf_config(path: str | os.PathLike) -> ModelSpec:
    """Read a Hugging Face ``config.json`` (or a directory holding one) into a ModelSpec."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "config.json"
    where = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(input_problem("Hugging Face config file not found", where=where)) \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(input_problem(f"cannot read Hugging Face config: {exc}",
                                       where=where)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(input_problem(f"invalid JSON: {exc.msg}", where=where,
                                       line=exc.lineno)) from None
    if not isinstance(data, dict):
        raise InputError(input_problem("a config.json must hold a JSON object", where=where,
                                       value=type(data).__name__))
    model_type = data.get("model_type")
    if model_type is None:
        raise InputError(input_problem(
            "required key is missing; supported: " + ", ".join(supported_model_types()),
            where=where, key="model_type"))
    family = _FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise InputError(input_problem(
            "unsupported model_type; supported: " + ", ".join(supported_model_types()) + "."
            + suggest(str(model_type), _FAMILIES), where=where, key="model_type",
            value=model_type))
    c = _Config(data, where)
    fields = family(c)
    if c.problems:
        raise InputError(c.problems)
    fields.update(name=_model_name(p, data), source=f"Hugging Face config.json ({where}), "
                                                     f"model_type {model_type}")
    return spec_from_dict(fields, where=where)


_SNAPSHOT = re.compile(r"^[0-9a-f]{40}$")


def _model_name(path: Path, data: dict[str, Any]) -> str:
    """See the module contract (naming rules)."""
    given = data.get("_name_or_path")
    if isinstance(given, str) and given.strip():
        given = given.strip().rstrip("/\\")
        is_local = given.startswith(("/", ".", "~")) or os.path.isabs(given) or "\\" in given
        return Path(given).name if is_local else given
    parent = path.resolve().parent
    if _SNAPSHOT.match(parent.name) and parent.parent.name == "snapshots" \
            and parent.parent.parent.name.startswith("models--"):
        return parent.parent.parent.name[len("models--"):].replace("--", "/")
    if path.name == "config.json":
        return parent.name
    return path.stem

