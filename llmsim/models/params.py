"""Parameter counts and weight sizes of a :class:`ModelSpec`.

Contract: pure functions of the spec, exact integer arithmetic. What is counted:

- token embedding ``vocab_size x hidden_size`` and the LM head (the same matrix counted once when
  ``tie_word_embeddings``);
- per layer, attention projections: standard (MHA/GQA/MQA) = q and o with ``num_attention_heads``
  heads, k and v with ``num_kv_heads`` heads, each ``head_dim`` wide; MLA (DeepSeek-V2/V3) =
  ``q_a`` (hidden -> q_lora_rank) + its norm + ``q_b`` (q_lora_rank -> heads x (nope + rope)), or
  one ``q`` projection when ``q_lora_rank == 0``; ``kv_a`` (hidden -> kv_lora_rank + rope) + its
  norm; ``kv_b`` (kv_lora_rank -> heads x (nope + v)); ``o`` (heads x v -> hidden);
- per layer, the MLP: 3 matrices (gate, up, down) when ``gated_mlp`` else 2 (up, down); dense
  layers are ``intermediate_size`` wide; MoE layers have ``num_experts`` routed experts and
  ``num_shared_experts`` shared experts, each ``moe_intermediate_size`` wide, plus a router
  (hidden x num_experts);
- norms: two per layer (before attention and before the MLP) and a final norm, ``hidden_size``
  weights each.

Not counted (each well under 0.5% of any catalog model): biases (linear and LayerNorm biases of
OPT/BLOOM/Phi, Qwen2 QKV biases), learned absolute position embeddings (OPT: 2050 x hidden),
BLOOM's embedding LayerNorm, Qwen3 per-head q/k norms, DeepSeek's router bias and its
multi-token-prediction module. A model whose layers share one norm (Phi-2's parallel block)
is counted with two.

MoE layers are the last ``num_layers - num_dense_layers`` layers (DeepSeek's
``first_k_dense_replace``); a dense model has no MoE layers.
"""
from __future__ import annotations

from .spec import ModelSpec


def embedding_param_count(spec: ModelSpec) -> int:
    """Token embedding plus LM head (counted once when tied)."""
    table = spec.vocab_size * spec.hidden_size
    return table if spec.tie_word_embeddings else 2 * table


def attention_param_count(spec: ModelSpec) -> int:
    """Parameters of one layer's attention block (projections and MLA's internal norms)."""
    h = spec.hidden_size
    heads = spec.num_attention_heads
    if spec.is_mla:
        qk_head_dim = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        if spec.q_lora_rank > 0:
            q = h * spec.q_lora_rank + spec.q_lora_rank + spec.q_lora_rank * heads * qk_head_dim
        else:
            q = h * heads * qk_head_dim
        kv_a = h * (spec.kv_lora_rank + spec.qk_rope_head_dim) + spec.kv_lora_rank
        kv_b = spec.kv_lora_rank * heads * (spec.qk_nope_head_dim + spec.v_head_dim)
        o = heads * spec.v_head_dim * h
        return q + kv_a + kv_b + o
    q = h * heads * spec.head_dim
    kv = 2 * h * spec.num_kv_heads * spec.head_dim
    o = heads * spec.head_dim * h
    return q + kv + o


def mlp_matrices(spec: ModelSpec) -> int:
    """Number of weight matrices in one MLP: 3 (gate, up, down) if gated else 2 (up, down)."""
    return 3 if spec.gated_mlp else 2


def dense_mlp_param_count(spec: ModelSpec) -> int:
    """Parameters of one dense MLP (``intermediate_size`` wide)."""
    return mlp_matrices(spec) * spec.hidden_size * spec.intermediate_size


def expert_param_count(spec: ModelSpec) -> int:
    """Parameters of one routed or shared expert (``moe_intermediate_size`` wide); 0 if dense."""
    if not spec.is_moe:
        return 0
    return mlp_matrices(spec) * spec.hidden_size * spec.moe_intermediate_size


def router_param_count(spec: ModelSpec) -> int:
    """Parameters of one MoE layer's router (hidden -> num_experts logits); 0 if dense."""
    return spec.hidden_size * spec.num_experts if spec.is_moe else 0


def num_moe_layers(spec: ModelSpec) -> int:
    """Layers whose MLP is a mixture of experts."""
    return spec.num_layers - spec.num_dense_layers if spec.is_moe else 0


def num_dense_mlp_layers(spec: ModelSpec) -> int:
    """Layers whose MLP is dense (all layers of a dense model)."""
    return spec.num_layers - num_moe_layers(spec)


def param_breakdown(spec: ModelSpec) -> dict[str, int]:
    """Total parameters by component, summed over layers.

    Keys: ``embedding`` (embedding + LM head), ``attention``, ``dense_mlp``, ``routed_experts``,
    ``shared_experts``, ``router``, ``norms``. Values sum to :func:`param_count`.
    """
    n_moe = num_moe_layers(spec)
    expert = expert_param_count(spec)
    return {
        "embedding": embedding_param_count(spec),
        "attention": spec.num_layers * attention_param_count(spec),
        "dense_mlp": num_dense_mlp_layers(spec) * dense_mlp_param_count(spec),
        "routed_experts": n_moe * spec.num_experts * expert,
        "shared_experts": n_moe * spec.num_shared_experts * expert,
        "router": n_moe * router_param_count(spec),
        "norms": (2 * spec.num_layers + 1) * spec.hidden_size,
    }


def param_count(spec: ModelSpec) -> int:
    """Total parameters of the model (see the module docstring for what is counted)."""
    return sum(param_breakdown(spec).values())


def active_param_count(spec: ModelSpec) -> int:
    """Parameters used per token: everything except the routed experts not selected, i.e. each
    MoE layer contributes ``num_experts_per_tok`` routed experts, its shared experts and its
    router. Embedding and LM head are included (the convention of the Mixtral and DeepSeek-V3
    papers). Equals :func:`param_count` for a dense model."""
    parts = param_breakdown(spec)
    unused = num_moe_layers(spec) * (spec.num_experts - spec.num_experts_per_tok) \
        * expert_param_count(spec)
    return sum(parts.values()) - unused


def weight_bytes(spec: ModelSpec, weight_bits: float, embedding_bits: float | None = None) -> float:
    """Bytes of all weights stored at ``weight_bits`` per parameter.

    ``embedding_bits``, when given, stores the embedding and LM head at that width instead
    (quantized checkpoints usually keep them at 16 bits). Raises ValueError for a non-positive
    width (callers validate user input before this point).
    """
    if weight_bits <= 0 or (embedding_bits is not None and embedding_bits <= 0):
        raise ValueError(f"bit widths must be positive (got {weight_bits}, {embedding_bits})")
    total = param_count(spec)
    if embedding_bits is None:
        return total * weight_bits / 8
    emb = embedding_param_count(spec)
    return ((total - emb) * weight_bits + emb * embedding_bits) / 8
