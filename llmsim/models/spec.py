"""ModelSpec: the architecture numbers the cost model and memory planner need.

Contract: a frozen dataclass of plain ints/floats/bools. Field names follow Hugging Face
``config.json`` where one exists. All sizes are per model (not per GPU); parallel splits are
applied by the cost model. Dense models leave the MoE fields at 0; models without Multi-head
Latent Attention (MLA, DeepSeek-V2/V3) leave the MLA fields at 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int          # width of the dense MLP (dense layers of an MoE model too)
    vocab_size: int
    max_model_len: int              # max_position_embeddings
    gated_mlp: bool = True          # SwiGLU/GeGLU: gate+up+down (3 matrices); else up+down (2)
    sliding_window: int | None = None   # tokens attended per query; None = full attention
    tie_word_embeddings: bool = False
    # --- Mixture of experts (0 = dense) ---
    num_experts: int = 0            # routed experts per MoE layer
    num_experts_per_tok: int = 0    # top-k
    moe_intermediate_size: int = 0  # width of one routed expert's MLP
    num_shared_experts: int = 0     # always-active experts (DeepSeek), each moe_intermediate_size wide
    num_dense_layers: int = 0       # leading layers with a dense MLP (DeepSeek first_k_dense_replace)
    # --- Multi-head latent attention (DeepSeek-V2/V3); 0 = standard MHA/GQA/MQA ---
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    # --- Bookkeeping ---
    published_params: float | None = None   # parameter count the authors publish (for checks)
    source: str = ""                        # where the numbers come from (HF config, paper)
    aliases: tuple[str, ...] = field(default=())

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0
