"""`llmsim roofline`: per-operator roofline of one prefill and one decode step.

Prints, for the prefill of ``--batch`` prompts of ``--prompt-len`` tokens and for one decode step
of ``--batch`` sequences at ``--context-len`` tokens of context, a table of operator families
(FLOPs, bytes, arithmetic intensity, bound, time, share of the step), then totals: TTFT of one
prompt on an idle replica, prefill tokens/s, decode tokens/s at that batch, and the memory plan
(weights, activation reserve, KV capacity). ``--json`` prints the same as one JSON object;
``--plot FILE.html`` writes an offline plotly roofline chart (attainable FLOP/s against
arithmetic intensity, the operators as points).

``--dtype`` sets the weight dtype; activations follow it, except 4-bit weights run with 16-bit
activations (W4A16) unless ``--activation-dtype`` says otherwise; the KV cache defaults to 16 bits
(bf16, or the dtype itself when it is fp16/fp32), as vLLM's ``kv_cache_dtype=auto``.
A plan whose weights do not fit is still analysed; the memory section says why it does not fit.
"""
from __future__ import annotations

import dataclasses

import json
import sys

from llmsim.commands.args import int_arg
from llmsim.errors import InputError, input_problem, suggest

_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")


def register(sub) -> None:
    p = sub.add_parser("roofline", help="per-operator roofline (FLOPs, bytes, bound, time) of a "
                       "prefill and a decode step")
    p.add_argument("--model", required=True, help="model card name/alias or path")
    p.add_argument("--hardware", required=True, help="hardware card name/alias or path")
    p.add_argument("--tp", default="1", help="tensor-parallel degree (default 1)")
    p.add_argument("--pp", default="1", help="pipeline stages (default 1)")
    p.add_argument("--ep", default="1", help="expert-parallel degree within tp (default 1)")
    p.add_argument("--batch", default="1", help="prompts in the prefill / sequences in the "
                   "decode step (default 1)")
    p.add_argument("--prompt-len", default="1024", help="tokens per prompt (default 1024)")
    p.add_argument("--context-len", default=None,
                   help="context tokens per decoding sequence (default: --prompt-len)")
    p.add_argument("--dtype", default="bf16", help=f"weight dtype ({', '.join(_DTYPES)})")
    p.add_argument("--activation-dtype", default=None, help="activation/GEMM dtype "
                   "(default: follows --dtype; bf16 for 4-bit weights)")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default bf16)")
    p.add_argument("--gpu-memory-utilization", default="0.9",
                   help="fraction of GPU memory vLLM may use (default 0.9)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.html", default=None,
                   help="write an offline plotly roofline chart")
    p.set_defaults(func=run)


def _dtype_arg(name: str, text: str) -> str:
    v = text.strip().lower()
    if v not in _DTYPES:
        raise InputError(input_problem(f"unknown dtype; allowed: {', '.join(_DTYPES)}."
                                       + suggest(v, _DTYPES), where=name, value=text))
    return v


def _quant(args):
    from llmsim.cost.types import DTYPE_BITS, QuantConfig

    w = _dtype_arg("--dtype", args.dtype)
    if args.activation_dtype is not None:
        a = _dtype_arg("--activation-dtype", args.activation_dtype)
    else:
        a = w if DTYPE_BITS[w] >= 8 else "bf16"
    if args.kv_dtype is not None:
        kv = _dtype_arg("--kv-dtype", args.kv_dtype)
    else:
        kv = w if w in ("fp16", "fp32") else "bf16"
    return QuantConfig(weight_dtype=w, activation_dtype=a, kv_cache_dtype=kv)


def analyse(args) -> dict:
    """Everything the command shows, as plain data (also the --json document)."""
    from llmsim.cost.memory import memory_plan
    from llmsim.cost.roofline import CostModel
    from llmsim.cost.types import BatchAggregates, ParallelConfig
    from llmsim.hardware.catalog import load_hardware
    from llmsim.models.catalog import load_model

    model = load_model(args.model, where="--model")
    try:
        hw = load_hardware(args.hardware)
    except InputError as exc:   # name the flag the user typed
        raise InputError([dataclasses.replace(p, where="--hardware")
                          if p.where in (None, "hardware") else p
                          for p in exc.problems]) from None
    parallel = ParallelConfig(tp=int_arg("--tp", args.tp), pp=int_arg("--pp", args.pp),
                              ep=int_arg("--ep", args.ep))
    batch = int_arg("--batch", args.batch)
    prompt = int_arg("--prompt-len", args.prompt_len)
    ctx = prompt if args.context_len is None else int_arg("--context-len", args.context_len, 0)
    try:
        util = float(args.gpu_memory_utilization)
    except ValueError:
        util = -1.0
    if not 0 < util <= 1:
        raise InputError(input_problem("must be a number in (0, 1]",
                                       where="--gpu-memory-utilization",
                                       value=args.gpu_memory_utilization))
    for name, n in (("--prompt-len", prompt), ("--context-len", ctx + 1)):
        if n > model.max_model_len:
            raise InputError(input_problem(
                f"{model.name} has a context of {model.max_model_len} tokens", where=name,
                value=n if name == "--prompt-len" else ctx))
    quant = _quant(args)
    cm = CostModel(model, hw, parallel, quant)
    win = model.sliding_window
    pre_ctx = 0
    dec_ctx = min(ctx, win) if win else ctx
    pre = BatchAggregates.from_pairs([(prompt, pre_ctx)] * batch) if prompt > 1 else \
        BatchAggregates.from_pairs([(1, 0)] * batch)
    one = BatchAggregates.from_pairs([(prompt, pre_ctx)] if prompt > 1 else [(1, 0)])
    dec = BatchAggregates(decode_seqs=batch, decode_ctx_sum=batch * dec_ctx, num_sampled=batch)

    def phase(agg, label):
        ops = cm.breakdown(agg)
        t = cm.step_time_s(agg)
        return {"label": label, "batch": agg._asdict(), "time_s": t,
                "stage_time_s": cm.stage_time_s(agg),
                "ops": [dict(o.as_dict(), share=o.time_s / t if t else 0.0) for o in ops]}

    prefill = phase(pre, f"prefill: {batch} prompt{'s' if batch > 1 else ''} x {prompt} tokens")
    decode = phase(dec, f"decode: {batch} sequence{'s' if batch > 1 else ''} at context {ctx}"
                   + (f" (capped at the {win}-token window)" if win and ctx > win else ""))
    ttft = cm.step_time_s(one)
    interval_dec = max(decode["stage_time_s"], decode["time_s"] / parallel.pp)
    totals = {
        "ttft_s": ttft,
        "prefill_tokens_per_s": batch * prompt / prefill["time_s"],
        "decode_step_s": decode["time_s"],
        "decode_tokens_per_s": batch / decode["time_s"],
        "decode_tokens_per_s_per_sequence": 1.0 / decode["time_s"],
        "decode_tokens_per_s_pipelined": batch / interval_dec if parallel.pp > 1 else None,
    }
    try:
        plan = memory_plan(model, hw, parallel, quant, gpu_memory_utilization=util)
        memory = dict(plan.as_dict(), fits=True)
        memory["max_batch_at_context"] = plan.kv_capacity_tokens // (ctx + 1)
        memory["batch_fits"] = batch * (ctx + 1) <= plan.kv_capacity_tokens
    except InputError as exc:
        memory = {"fits": False, "error": "; ".join(p.message for p in exc.problems),
                  "weights_bytes_per_gpu": cm.weights_bytes_per_gpu,
                  "weights_bytes_per_replica": cm.weights_bytes_per_replica,
                  "kv_bytes_per_token": cm.kv_bytes_per_token}
    return {
        "model": model.name, "hardware": hw.name, "hardware_display_name": hw.display_name,
        "parallel": {"tp": parallel.tp, "pp": parallel.pp, "ep": parallel.ep},
        "quant": {"weight_dtype": quant.weight_dtype, "activation_dtype": quant.activation_dtype,
                  "kv_cache_dtype": quant.kv_cache_dtype},
        "gemm_peak_flops_per_s": hw.peak_for(quant.activation_dtype),
        "memory_bandwidth_bytes_per_s": hw.memory_bandwidth_bytes_per_s,
        "efficiency": {k: getattr(hw.efficiency, k) for k in (
            "gemm_eff_max", "gemm_half_tokens", "mem_eff", "elementwise_mem_eff",
            "attn_prefill_eff", "attn_decode_mem_eff", "attn_decode_floor_s", "kernel_launch_s",
            "step_overhead_s", "comm_bw_eff", "comm_latency_s", "source")},
        "prefill": prefill, "decode": decode, "totals": totals, "memory": memory,
    }


def _si(x: float, unit: str = "") -> str:
    for div, p in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {p}{unit}"
    return f"{x:.0f} {unit}".rstrip()


def _table(phase: dict) -> list[str]:
    lines = [f"{phase['label']}: step {phase['time_s'] * 1e3:.3f} ms",
             f"  {'operator':<20} {'FLOPs':>10} {'bytes':>10} {'FLOP/B':>8} {'bound':>9} "
             f"{'time ms':>9} {'share':>6} {'kernels':>7}"]
    for o in phase["ops"]:
        lines.append(f"  {o['name']:<20} {_si(o['flops']):>10} {_si(o['bytes'], 'B'):>10} "
                     f"{o['intensity']:>8.1f} {o['bound']:>9} {o['time_s'] * 1e3:>9.4f} "
                     f"{o['share'] * 100:>5.1f}% {o['count']:>7}")
    flops = sum(o["flops"] for o in phase["ops"])
    nbytes = sum(o["bytes"] for o in phase["ops"])
    lines.append(f"  {'total':<20} {_si(flops):>10} {_si(nbytes, 'B'):>10} "
                 f"{(flops / nbytes if nbytes else 0):>8.1f} {'':>9} "
                 f"{phase['time_s'] * 1e3:>9.4f} {100.0:>5.1f}%")
    return lines


def render_text(r: dict) -> str:
    p, q = r["parallel"], r["quant"]
    gpus = p["tp"] * p["pp"]
    out = [f"{r['model']} on {gpus}x {r['hardware']} ({r['hardware_display_name']}), "
           f"tp={p['tp']} pp={p['pp']} ep={p['ep']}; weights {q['weight_dtype']}, activations "
           f"{q['activation_dtype']}, KV cache {q['kv_cache_dtype']}",
           f"roofline per GPU: {_si(r['gemm_peak_flops_per_s'], 'FLOP/s')} peak "
           f"({q['activation_dtype']}), {_si(r['memory_bandwidth_bytes_per_s'], 'B/s')}; "
           f"efficiencies: {r['efficiency']['source']}", ""]
    out += _table(r["prefill"]) + [""] + _table(r["decode"]) + [""]
    t = r["totals"]
    out.append("totals")
    out.append(f"  TTFT of one prompt (idle replica): {t['ttft_s'] * 1e3:.2f} ms")
    out.append(f"  prefill throughput: {t['prefill_tokens_per_s']:,.0f} tokens/s")
    out.append(f"  decode: {t['decode_step_s'] * 1e3:.3f} ms per step, "
               f"{t['decode_tokens_per_s']:,.0f} tokens/s at this batch "
               f"({t['decode_tokens_per_s_per_sequence']:,.1f} tokens/s per sequence)")
    if t["decode_tokens_per_s_pipelined"] is not None:
        mb = r["decode"]["batch"]["decode_seqs"]
        out.append(f"  decode with {p['pp']} micro-batches of {mb} in flight: "
                   f"{t['decode_tokens_per_s_pipelined']:,.0f} tokens/s")
    m = r["memory"]
    if m["fits"]:
        out.append(f"  memory per GPU: weights {m['weights_bytes_per_gpu'] / 1e9:.2f} GB, "
                   f"activation reserve {m['activation_reserve_bytes'] / 1e9:.2f} GB, KV cache "
                   f"{m['free_kv_bytes_per_gpu'] / 1e9:.2f} GB of "
                   f"{m['usable_bytes_per_gpu'] / 1e9:.1f} GB usable")
        out.append(f"  KV cache: {m['kv_bytes_per_token'] / 1e3:.1f} kB per token "
                   f"({m['kv_bytes_per_token_per_gpu'] / 1e3:.1f} kB per GPU), capacity "
                   f"{m['kv_capacity_tokens']:,} tokens per replica "
                   f"({m['num_gpu_blocks']:,} blocks of {m['block_size']}); "
                   f"max batch at this context {m['max_batch_at_context']:,}"
                   + ("" if m["batch_fits"] else " — the requested batch does NOT fit"))
    else:
        out.append(f"  memory: DOES NOT FIT — {m['error']}")
    return "\n".join(out)


def write_plot(r: dict, path: str) -> None:
    """Offline plotly roofline chart (plotly.js embedded)."""
    import plotly.graph_objects as go

    peak = r["gemm_peak_flops_per_s"]
    bw = r["memory_bandwidth_bytes_per_s"]
    eff = r["efficiency"]
    pts = [o for ph in ("prefill", "decode") for o in r[ph]["ops"] if o["flops"] > 0]
    xs = [o["intensity"] for o in pts if o["intensity"] > 0] or [1.0]
    lo, hi = min(min(xs) / 4, 0.1), max(max(xs) * 4, 4 * peak / bw)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    fig = go.Figure()
    fig.add_scatter(x=grid, y=[min(peak, bw * x) for x in grid], mode="lines",
                    name="datasheet roofline", line={"dash": "dash", "color": "gray"})
    fig.add_scatter(x=grid, y=[min(peak * eff["gemm_eff_max"], bw * eff["mem_eff"] * x)
                               for x in grid], mode="lines", name="roofline at card efficiency",
                    line={"color": "black"})
    for ph, sym in (("prefill", "circle"), ("decode", "diamond")):
        ops = [o for o in r[ph]["ops"] if o["flops"] > 0 and o["time_s"] > 0]
        fig.add_scatter(
            x=[o["intensity"] for o in ops], y=[o["flops"] / o["time_s"] for o in ops],
            mode="markers+text", name=r[ph]["label"], text=[o["name"] for o in ops],
            textposition="top center", marker={"symbol": sym, "size": 10},
            hovertext=[f"{o['name']}: {o['time_s'] * 1e3:.3f} ms, {o['bound']}-bound, "
                       f"{o['share'] * 100:.1f}% of step" for o in ops], hoverinfo="text")
    fig.update_layout(
        title=f"Roofline: {r['model']} on {r['hardware']} (tp={r['parallel']['tp']}, "
              f"pp={r['parallel']['pp']}, {r['quant']['activation_dtype']})",
        xaxis={"type": "log", "title": "arithmetic intensity (FLOP/byte)"},
        yaxis={"type": "log", "title": "attained FLOP/s per GPU"}, template="plotly_white")
    try:
        fig.write_html(path, include_plotlyjs=True, full_html=True)
    except OSError as exc:
        raise InputError(input_problem(f"cannot write the plot: {exc.strerror}", where="--plot",
                                       value=path)) from None


def run(args) -> int:
    r = analyse(args)
    if args.plot:
        write_plot(r, args.plot)
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_text(r))
        if args.plot:
            print(f"\nwrote {args.plot}")
    return 0
