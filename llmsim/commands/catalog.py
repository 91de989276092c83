"""`llmsim catalog [models|hardware] [--json]`: list the built-in model and hardware cards.

Models: parameters (total, active per token), layers, hidden size, attention heads / KV heads
(MLA noted), experts (routed/top-k/shared), context, bf16 weight size, KV bytes per token (bf16).
Hardware: dense bf16 and fp8 peaks, memory, bandwidth, GPU-GPU link inside a node, GPUs per node,
power and on-demand price. ``--json`` prints ``{"models": [...], "hardware": [...]}`` with the
numbers in SI units.
"""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("catalog", help="list the built-in model and hardware cards")
    p.add_argument("kind", nargs="?", choices=("models", "hardware"), default=None,
                   help="which catalog (default: both)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def model_rows() -> list[dict]:
    """One dict per built-in model card."""
    from llmsim.cost.memory import kv_bytes_per_token
    from llmsim.models.catalog import list_models, load_model
    from llmsim.models.params import active_param_count, param_count, weight_bytes

    rows = []
    for name in list_models():
        m = load_model(name)
        rows.append({
            "name": m.name,
            "params": param_count(m),
            "active_params": active_param_count(m),
            "num_layers": m.num_layers,
            "hidden_size": m.hidden_size,
            "num_attention_heads": m.num_attention_heads,
            "num_kv_heads": m.num_kv_heads,
            "attention": "mla" if m.is_mla else (
                "mha" if m.num_kv_heads == m.num_attention_heads else
                "mqa" if m.num_kv_heads == 1 else "gqa"),
            "num_experts": m.num_experts,
            "num_experts_per_tok": m.num_experts_per_tok,
            "num_shared_experts": m.num_shared_experts,
            "max_model_len": m.max_model_len,
            "sliding_window": m.sliding_window,
            "weights_bytes_bf16": weight_bytes(m, 16),
            "kv_bytes_per_token_bf16": kv_bytes_per_token(m),
            "aliases": list(m.aliases),
        })
    return rows


def hardware_rows() -> list[dict]:
    """One dict per built-in hardware card."""
    from llmsim.hardware.catalog import list_hardware, load_hardware

    rows = []
    for name in list_hardware():
        hw = load_hardware(name)
        peaks = hw.peak_flops_per_s
        rows.append({
            "name": hw.name,
            "display_name": hw.display_name,
            "vendor": hw.vendor,
            "peak_bf16_flops_per_s": peaks.get("bf16", peaks.get("fp16")),
            "peak_fp8_flops_per_s": peaks.get("fp8"),
            "peak_flops_per_s": dict(peaks),
            "memory_bytes": hw.memory_bytes,
            "memory_bandwidth_bytes_per_s": hw.memory_bandwidth_bytes_per_s,
            "intra_node_kind": hw.intra_node.kind,
            "intra_node_bytes_per_s": hw.intra_node.bandwidth_bytes_per_s,
            "gpus_per_node": hw.gpus_per_node,
            "inter_node_bytes_per_s": hw.inter_node.bandwidth_bytes_per_s,
            "power_w": hw.power_w,
            "price_on_demand_usd_per_h": hw.price_on_demand_usd_per_h,
            "price_spot_usd_per_h": hw.price_spot_usd_per_h,
            "efficiency_source": hw.efficiency.source,
        })
    return rows


def _opt(x, scale, fmt="{:.0f}") -> str:
    return "-" if x is None else fmt.format(x / scale)


def render_models(rows: list[dict]) -> list[str]:
    out = [f"{'model':<18} {'params':>8} {'active':>8} {'layers':>6} {'hidden':>6} "
           f"{'heads':>9} {'attn':>4} {'experts':>9} {'context':>8} {'bf16 GB':>8} "
           f"{'KV kB/tok':>9}"]
    for r in rows:
        experts = (f"{r['num_experts']}/{r['num_experts_per_tok']}"
                   + (f"+{r['num_shared_experts']}" if r["num_shared_experts"] else "")
                   if r["num_experts"] else "-")
        out.append(
            f"{r['name']:<18} {r['params'] / 1e9:>7.1f}B {r['active_params'] / 1e9:>7.1f}B "
            f"{r['num_layers']:>6} {r['hidden_size']:>6} "
            f"{str(r['num_attention_heads']) + '/' + str(r['num_kv_heads']):>9} "
            f"{r['attention']:>4} {experts:>9} {r['max_model_len']:>8} "
            f"{r['weights_bytes_bf16'] / 1e9:>8.1f} {r['kv_bytes_per_token_bf16'] / 1e3:>9.1f}")
    return out


def render_hardware(rows: list[dict]) -> list[str]:
    out = [f"{'hardware':<10} {'bf16 TF/s':>9} {'fp8 TF/s':>8} {'mem GB':>6} {'TB/s':>5} "
           f"{'link':>7} {'GB/s':>5} {'GPUs/node':>9} {'W':>5} {'$/h':>6}  name"]
    for r in rows:
        out.append(
            f"{r['name']:<10} {_opt(r['peak_bf16_flops_per_s'], 1e12):>9} "
            f"{_opt(r['peak_fp8_flops_per_s'], 1e12):>8} {r['memory_bytes'] / 1e9:>6.0f} "
            f"{r['memory_bandwidth_bytes_per_s'] / 1e12:>5.2f} {r['intra_node_kind']:>7} "
            f"{r['intra_node_bytes_per_s'] / 1e9:>5.0f} {r['gpus_per_node']:>9} "
            f"{r['power_w']:>5.0f} {r['price_on_demand_usd_per_h']:>6.2f}  {r['display_name']}")
    return out


def run(args) -> int:
    doc = {}
    if args.kind in (None, "models"):
        doc["models"] = model_rows()
    if args.kind in (None, "hardware"):
        doc["hardware"] = hardware_rows()
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    parts = []
    if "models" in doc:
        parts.append("\n".join(render_models(doc["models"])))
    if "hardware" in doc:
        parts.append("\n".join(render_hardware(doc["hardware"])
                               + ["(dense peaks; GB = 1e9 bytes; link GB/s per GPU per direction; "
                                  "$/h on-demand per GPU, see each card's price_note)"]))
    print("\n\n".join(parts))
    return 0
