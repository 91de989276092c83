"""Model catalog: cards, parameter counts, Hugging Face config import, bad-input errors."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from llmsim.errors import InputError
from llmsim.models.catalog import (cards_dir, list_models, load_card, load_model,
                                   spec_from_dict)
from llmsim.models.hf_config import model_from_hf_config, supported_model_types
from llmsim.models.params import (active_param_count, attention_param_count,
                                  embedding_param_count, param_breakdown, param_count,
                                  weight_bytes)
from llmsim.models.spec import ModelSpec

HF_DIR = Path(__file__).parent / "data" / "hf_configs"
REQUIRED_CARDS = {
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b",
    "llama-3.1-405b", "mistral-7b", "mixtral-8x7b", "qwen2.5-72b", "codellama-34b", "phi-2",
    "opt-13b", "bloom-176b", "deepseek-v3", "mixtral-8x22b", "qwen3-235b-a22b",
}
BOOKKEEPING = ("name", "source", "published_params", "aliases")


def arch(spec: ModelSpec) -> dict:
    """The architecture fields only (no name/source/published size/aliases)."""
    d = dataclasses.asdict(spec)
    for k in BOOKKEEPING:
        d.pop(k)
    return d


def card_text(**fields) -> str:
    base = dict(name="tiny", num_layers=2, hidden_size=64, num_attention_heads=4,
                num_kv_heads=2, head_dim=16, intermediate_size=128, vocab_size=1000,
                max_model_len=512)
    base.update(fields)
    return "\n".join(f"{k}: {json.dumps(v)}" for k, v in base.items() if v is not ...) + "\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------- cards


def test_catalog_lists_every_required_card():
    assert REQUIRED_CARDS <= set(list_models())
    assert list_models() == sorted(list_models())
    assert {p.stem for p in cards_dir().glob("*.yaml")} == set(list_models())


@pytest.mark.parametrize("name", sorted(REQUIRED_CARDS))
def test_card_loads_with_source_and_published_size(name):
    spec = load_model(name)
    assert spec.name == name
    assert spec.source.strip()
    assert spec.published_params and spec.published_params > 0
    assert spec.aliases, "every card names its Hugging Face repo id"


@pytest.mark.parametrize("name", sorted(REQUIRED_CARDS))
def test_param_count_within_2_percent_of_published(name):
    spec = load_model(name)
    assert param_count(spec) == pytest.approx(spec.published_params, rel=0.02)


def test_aliases_and_names_are_case_insensitive_and_unique():
    assert load_model("meta-llama/Llama-3.1-8B") is load_model("llama-3.1-8b")
    assert load_model("META-LLAMA/LLAMA-3.1-8B") is load_model("Llama-3.1-8B")
    assert load_model("  deepseek-ai/DeepSeek-V3 ").name == "deepseek-v3"
    seen: dict[str, str] = {}
    for name in list_models():
        for ref in (name, *load_model(name).aliases):
            assert seen.setdefault(ref.lower(), name) == name, ref


def test_loads_are_cached():
    assert load_model("mixtral-8x7b") is load_model("mistralai/Mixtral-8x7B-v0.1")
    path = cards_dir() / "phi-2.yaml"
    assert load_model(str(path)) is load_model(str(path))


# ------------------------------------------------------------------ parameter counts


def test_llama_2_7b_exact_count_by_hand():
    # per layer: q,k,v,o 4*4096^2; gate/up/down 3*4096*11008; two RMSNorms 2*4096
    per_layer = 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096
    expected = 32 * per_layer + 2 * 32000 * 4096 + 4096   # untied embedding + lm_head, final norm
    assert expected == 6_738_415_616                        # the checkpoint's exact size
    assert param_count(load_model("llama-2-7b")) == expected


def test_llama_3_1_gqa_counts_by_hand():
    def llama(layers, h, inter, kv_heads, vocab=128256):
        att = 2 * h * h + 2 * h * kv_heads * 128
        return layers * (att + 3 * h * inter + 2 * h) + 2 * vocab * h + h

    assert param_count(load_model("llama-3.1-8b")) == llama(32, 4096, 14336, 8) == 8_030_261_248
    assert param_count(load_model("llama-3.1-70b")) == llama(80, 8192, 28672, 8)
    assert param_count(load_model("llama-3.1-70b")) / 1e9 == pytest.approx(70.55, abs=0.01)
    assert param_count(load_model("llama-3.1-405b")) == llama(126, 16384, 53248, 8)
    assert param_count(load_model("llama-3.1-405b")) / 1e9 == pytest.approx(405.85, abs=0.01)


def test_mixtral_total_and_active_by_hand():
    spec = load_model("mixtral-8x7b")
    att = 2 * 4096**2 + 2 * 4096 * 1024
    expert = 3 * 4096 * 14336
    router = 4096 * 8
    total = 32 * (att + 8 * expert + router + 2 * 4096) + 2 * 32000 * 4096 + 4096
    active = total - 32 * 6 * expert
    assert param_count(spec) == total == 46_702_792_704
    assert active_param_count(spec) == active
    assert active / 1e9 == pytest.approx(12.9, rel=0.01)
    big = load_model("mixtral-8x22b")
    assert active_param_count(big) / 1e9 == pytest.approx(39, rel=0.02)


def test_deepseek_v3_mla_and_moe_by_hand():
    spec = load_model("deepseek-v3")
    h, heads = 7168, 128
    mla = (h * 1536 + 1536 + 1536 * heads * 192        # q_a, q_a norm, q_b
           + h * (512 + 64) + 512                       # kv_a (latent + rope key), kv_a norm
           + 512 * heads * (128 + 128)                  # kv_b (nope key + value)
           + heads * 128 * h)                           # o
    assert attention_param_count(spec) == mla == 187_107_328
    expert = 3 * h * 2048
    dense_layer = mla + 3 * h * 18432 + 2 * h
    moe_layer = mla + (256 + 1) * expert + 256 * h + 2 * h
    total = 3 * dense_layer + 58 * moe_layer + 2 * 129280 * h + h
    assert param_count(spec) == total
    assert total / 1e9 == pytest.approx(671, rel=0.005)
    active = total - 58 * (256 - 8) * expert
    assert active_param_count(spec) == active
    assert active / 1e9 == pytest.approx(37, rel=0.02)


def test_mla_without_q_lora_uses_one_q_projection():
    spec = dataclasses.replace(load_model("deepseek-v3"), q_lora_rank=0)
    h = 7168
    assert attention_param_count(spec) == (h * 128 * 192 + h * 576 + 512
                                           + 512 * 128 * 256 + 128 * 128 * h)


def test_qwen3_moe_active_and_wide_heads():
    spec = load_model("qwen3-235b-a22b")
    # q/o are 64 heads x 128 = 8192 wide although hidden is 4096
    assert attention_param_count(spec) == 2 * 4096 * 8192 + 2 * 4096 * 4 * 128
    assert param_count(spec) / 1e9 == pytest.approx(235, rel=0.01)
    assert active_param_count(spec) / 1e9 == pytest.approx(22, rel=0.02)


def test_non_gated_and_tied_models_by_hand():
    opt = load_model("opt-13b")   # ReLU MLP (2 matrices), MHA, tied embedding
    assert embedding_param_count(opt) == 50272 * 5120
    assert param_count(opt) == 40 * (4 * 5120**2 + 2 * 5120 * 20480 + 2 * 5120) \
        + 50272 * 5120 + 5120
    assert param_count(opt) / 1e9 == pytest.approx(12.9, rel=0.01)
    bloom = load_model("bloom-176b")
    assert param_count(bloom) == 70 * (4 * 14336**2 + 2 * 14336 * 57344 + 2 * 14336) \
        + 250880 * 14336 + 14336
    assert param_count(bloom) / 1e9 == pytest.approx(176, rel=0.005)
    phi = load_model("phi-2")   # untied lm_head
    assert param_count(phi) == 32 * (4 * 2560**2 + 2 * 2560 * 10240 + 2 * 2560) \
        + 2 * 51200 * 2560 + 2560
    assert param_count(phi) / 1e9 == pytest.approx(2.78, rel=0.005)


@pytest.mark.parametrize("name", sorted(REQUIRED_CARDS))
def test_breakdown_sums_and_dense_active_equals_total(name):
    spec = load_model(name)
    parts = param_breakdown(spec)
    assert sum(parts.values()) == param_count(spec)
    assert all(v >= 0 for v in parts.values())
    if spec.is_moe:
        assert active_param_count(spec) < param_count(spec)
        assert parts["dense_mlp"] == spec.num_dense_layers * 3 * spec.hidden_size \
            * spec.intermediate_size
    else:
        assert active_param_count(spec) == param_count(spec)
        assert parts["routed_experts"] == parts["router"] == 0


def test_weight_bytes():
    spec = load_model("llama-3.1-8b")
    n = param_count(spec)
    assert weight_bytes(spec, 16) == 2 * n
    assert weight_bytes(spec, 4) == n / 2
    emb = 2 * 128256 * 4096
    assert weight_bytes(spec, 4, embedding_bits=16) == (n - emb) / 2 + 2 * emb
    with pytest.raises(ValueError):
        weight_bytes(spec, 0)


# ------------------------------------------------------------------ Hugging Face import


@pytest.mark.parametrize("card", ["llama-3.1-8b", "llama-2-7b", "mistral-7b", "mixtral-8x7b",
                                  "qwen2.5-72b", "qwen3-235b-a22b", "phi-2", "opt-13b",
                                  "bloom-176b", "deepseek-v3"])
def test_hf_import_equals_card(card):
    imported = model_from_hf_config(HF_DIR / f"{card}.json")
    assert arch(imported) == arch(load_model(card))
    assert imported.published_params is None
    assert "config.json" in imported.source or str(HF_DIR) in imported.source


def test_hf_import_names():
    assert model_from_hf_config(HF_DIR / "llama-3.1-8b.json").name == "llama-3.1-8b"  # stem
    assert model_from_hf_config(HF_DIR / "opt-13b.json").name == "facebook/opt-13b"
    assert model_from_hf_config(HF_DIR / "phi-2.json").name == "microsoft/phi-2"


def test_load_model_from_directory_and_hf_cache_layout(tmp_path):
    d = tmp_path / "my-llama"
    d.mkdir()
    shutil.copy(HF_DIR / "llama-2-7b.json", d / "config.json")
    spec = load_model(str(d))
    assert spec.name == "my-llama"
    assert arch(spec) == arch(load_model("llama-2-7b"))
    assert load_model(d / "config.json") is spec             # PathLike accepted, cached
    snap = tmp_path / "models--mistralai--Mistral-7B-v0.1" / "snapshots" / ("ab" * 20)
    snap.mkdir(parents=True)
    shutil.copy(HF_DIR / "mistral-7b.json", snap / "config.json")
    assert load_model(str(snap)).name == "mistralai/Mistral-7B-v0.1"
    assert load_model(str(snap)).sliding_window == 4096


def test_load_model_from_yaml_card_path(tmp_path):
    p = write(tmp_path, "tiny.yml", card_text(gated_mlp=False, tie_word_embeddings=True))
    spec = load_model(str(p))
    assert (spec.name, spec.num_kv_heads, spec.gated_mlp) == ("tiny", 2, False)
    # 2 layers x (q,o 64x64 + k,v 64x32 + up/down 64x128 + 2 norms) + tied embedding + final norm
    assert param_count(spec) == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 2 * 64 * 128 + 128) \
        + 1000 * 64 + 64


def hf(tmp_path, data, name="config.json"):
    return write(tmp_path, name, json.dumps(data))


def test_hf_other_families(tmp_path):
    neox = model_from_hf_config(hf(tmp_path, {
        "model_type": "gpt_neox", "hidden_size": 6144, "num_hidden_layers": 44,
        "num_attention_heads": 64, "intermediate_size": 24576, "vocab_size": 50432,
        "max_position_embeddings": 2048, "rotary_pct": 0.25}))
    assert (neox.num_kv_heads, neox.head_dim, neox.gated_mlp, neox.tie_word_embeddings) \
        == (64, 96, False, False)
    assert param_count(neox) / 1e9 == pytest.approx(20.55, rel=0.01)    # GPT-NeoX-20B
    falcon7 = model_from_hf_config(hf(tmp_path, {
        "model_type": "falcon", "hidden_size": 4544, "num_hidden_layers": 32,
        "num_attention_heads": 71, "vocab_size": 65024, "multi_query": True,
        "new_decoder_architecture": False}))
    assert (falcon7.num_kv_heads, falcon7.head_dim, falcon7.intermediate_size,
            falcon7.max_model_len) == (1, 64, 4 * 4544, 2048)
    assert param_count(falcon7) / 1e9 == pytest.approx(6.92, rel=0.01)  # Falcon-7B, tied
    falcon40 = model_from_hf_config(hf(tmp_path, {
        "model_type": "falcon", "hidden_size": 8192, "num_hidden_layers": 60,
        "num_attention_heads": 128, "num_kv_heads": 8, "new_decoder_architecture": True,
        "vocab_size": 65024}))
    assert falcon40.num_kv_heads == 8
    refined = model_from_hf_config(hf(tmp_path, {                # original Falcon-40B keys
        "model_type": "RefinedWeb", "hidden_size": 8192, "n_layer": 60, "n_head": 128,
        "n_head_kv": 8, "vocab_size": 65024}))
    assert arch(refined) == arch(falcon40)
    qmoe = model_from_hf_config(hf(tmp_path, {                 # Qwen1.5-MoE-A2.7B
        "model_type": "qwen2_moe", "hidden_size": 2048, "num_hidden_layers": 24,
        "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
        "num_experts": 60, "num_experts_per_tok": 4, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "vocab_size": 151936, "max_position_embeddings": 8192,
        "use_sliding_window": False, "sliding_window": 32768}))
    assert (qmoe.num_shared_experts, qmoe.num_dense_layers, qmoe.sliding_window) == (4, 0, None)
    assert param_count(qmoe) / 1e9 == pytest.approx(14.3, rel=0.02)
    assert active_param_count(qmoe) / 1e9 == pytest.approx(2.7, rel=0.02)
    lite = model_from_hf_config(hf(tmp_path, {                 # DeepSeek-V2-Lite
        "model_type": "deepseek_v2", "hidden_size": 2048, "num_hidden_layers": 27,
        "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "n_routed_experts": 64, "n_shared_experts": 2,
        "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
        "q_lora_rank": None, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128, "v_head_dim": 128, "vocab_size": 102400,
        "max_position_embeddings": 163840}))
    assert (lite.q_lora_rank, lite.num_dense_layers, lite.head_dim) == (0, 1, 192)
    assert param_count(lite) / 1e9 == pytest.approx(15.7, rel=0.02)
    assert active_param_count(lite) == param_count(lite) - 26 * (64 - 6) * 3 * 2048 * 1408
    # DeepSeek's published 2.4B active leaves out the input embedding (a lookup, no FLOPs)
    assert (active_param_count(lite) - 102400 * 2048) / 1e9 == pytest.approx(2.4, rel=0.03)


def test_supported_model_types_cover_the_brief():
    assert {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi",
            "opt", "bloom", "gpt_neox", "falcon", "deepseek_v2",
            "deepseek_v3"} <= set(supported_model_types())


# ------------------------------------------------------------------------- bad input


def error_text(exc: pytest.ExceptionInfo) -> str:
    return exc.value.format()


def test_unknown_name_suggests_close_matches():
    with pytest.raises(InputError) as exc:
        load_model("llama-3.1-8")
    assert "llama-3.1-8b" in error_text(exc) and "Did you mean" in error_text(exc)
    with pytest.raises(InputError, match="unknown model"):
        load_model("gpt-17")
    with pytest.raises(InputError, match="not found"):
        load_model("./nowhere/card.yaml")
    with pytest.raises(InputError):
        load_model("")


def test_hf_unknown_model_type_and_missing_keys(tmp_path):
    with pytest.raises(InputError) as exc:
        model_from_hf_config(hf(tmp_path, {"model_type": "lama", "hidden_size": 1}))
    assert "model_type" in error_text(exc) and "'llama'" in error_text(exc)
    with pytest.raises(InputError, match="key 'model_type'"):
        model_from_hf_config(hf(tmp_path, {"hidden_size": 1}))
    data = json.loads((HF_DIR / "llama-3.1-8b.json").read_text())
    del data["num_hidden_layers"]
    data["vocab_size"] = "many"
    p = hf(tmp_path, data)
    with pytest.raises(InputError) as exc:
        model_from_hf_config(p)
    text = error_text(exc)
    assert "key 'num_hidden_layers'" in text and "key 'vocab_size'" in text and str(p) in text
    assert len(exc.value.problems) == 2


def test_hf_bad_files(tmp_path):
    bad = write(tmp_path, "config.json", '{"model_type": "llama",\n  "hidden_size": }')
    with pytest.raises(InputError) as exc:
        load_model(str(bad))
    assert exc.value.problems[0].line == 2
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_model(str(tmp_path / "empty_dir"))
    data = json.loads((HF_DIR / "opt-13b.json").read_text())
    data["word_embed_proj_dim"] = 512
    with pytest.raises(InputError, match="key 'word_embed_proj_dim'"):
        model_from_hf_config(hf(tmp_path, data, "opt.json"))
    data = json.loads((HF_DIR / "qwen2.5-72b.json").read_text())
    data.update(use_sliding_window=True, max_window_layers=28)
    with pytest.raises(InputError, match="key 'max_window_layers'"):
        model_from_hf_config(hf(tmp_path, data, "qwen.json"))
    data["max_window_layers"] = 0                  # every layer slides
    assert model_from_hf_config(hf(tmp_path, data, "qwen.json")).sliding_window == 131072


@pytest.mark.parametrize("fields, key, needle", [
    (dict(num_layer=2), "num_layer", "Did you mean 'num_layers'"),
    (dict(vocab_size=...), "vocab_size", "required field is missing"),
    (dict(num_layers=-2), "num_layers", "positive"),
    (dict(hidden_size=64.0), "hidden_size", "integer"),
    (dict(num_experts=-1), "num_experts", ">= 0"),
    (dict(gated_mlp="yes"), "gated_mlp", "true or false"),
    (dict(sliding_window=0), "sliding_window", "positive"),
    (dict(published_params="lots"), "published_params", "positive number"),
    (dict(aliases="llama"), "aliases", "list"),
    (dict(num_kv_heads=3), "num_kv_heads", "divide"),
    (dict(num_experts=8, num_experts_per_tok=9, moe_intermediate_size=32),
     "num_experts_per_tok", "between 1 and num_experts"),
    (dict(num_experts=8, num_experts_per_tok=2), "moe_intermediate_size", "MoE"),
    (dict(num_experts_per_tok=2), "num_experts_per_tok", "only allowed on an MoE model"),
    (dict(q_lora_rank=16), "q_lora_rank", "only allowed with MLA"),
    (dict(kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16),
     "head_dim", "qk_nope_head_dim + qk_rope_head_dim"),
])
def test_malformed_card_names_file_key_and_line(tmp_path, fields, key, needle):
    p = write(tmp_path, "bad.yaml", card_text(**fields))
    with pytest.raises(InputError) as exc:
        load_model(str(p))
    text = error_text(exc)
    assert f"key '{key}'" in text and needle in text and str(p) in text
    prob = next(pr for pr in exc.value.problems if pr.key == key)
    if key in p.read_text():                        # present keys carry their line number
        lines = p.read_text().splitlines()
        assert lines[prob.line - 1].startswith(key + ":")


def test_card_yaml_quirks(tmp_path):
    p = write(tmp_path, "ok.yaml", card_text(published_params="1.5e6"))
    assert load_model(str(p)).published_params == 1.5e6     # YAML 1.1 reads 1.5e6 as text
    dup = write(tmp_path, "dup.yaml", card_text() + "num_layers: 3\n")
    with pytest.raises(InputError, match="duplicate key") as exc:
        load_card(dup)
    assert exc.value.problems[0].key == "num_layers"
    broken = write(tmp_path, "broken.yaml", "name: x\nnum_layers: [1,\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_card(broken)
    with pytest.raises(InputError, match="mapping"):
        load_card(write(tmp_path, "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(InputError, match="YAML card"):
        load_model(str(write(tmp_path, "card.txt", "name: x\n")))


def test_spec_from_dict_collects_every_problem():
    with pytest.raises(InputError) as exc:
        spec_from_dict({"name": "x", "num_layers": 0, "hidden_size": "big", "colour": 1},
                       where="inline")
    keys = {p.key for p in exc.value.problems}
    assert {"num_layers", "hidden_size", "colour", "vocab_size", "head_dim"} <= keys
    assert all(p.where == "inline" for p in exc.value.problems)
    good = dataclasses.asdict(load_model("llama-2-7b"))
    with pytest.raises(InputError, match="key 'published_params'"):
        spec_from_dict({**good, "published_params": float("inf")})
    assert spec_from_dict(good) == load_model("llama-2-7b")
