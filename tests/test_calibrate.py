"""Calibration: the fit recovers known parameters from data the model generates, the vectorised
predictions equal the cost model's, hold-out rules, card writing and carrying, and the
committed A100 card reproduces the errors it records on the shared measurements."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmsim.cost import comm
from llmsim.cost.calibrate import (GPU_SIDE, HOST_SIDE, STAGES, carry_efficiency, evaluate, fit,
                                   holdout_mask, parse_holdout, read_calibration_record,
                                   round_sig, target_report, write_card)
from llmsim.cost.calibrate_data import COLUMNS, Measurements, read_measurements
from llmsim.cost.calibrate_predict import op_arrays, predict, predict_ops
from llmsim.cost.roofline import CostModel
from llmsim.cost.types import BatchAggregates, ParallelConfig, QuantConfig
from llmsim.errors import InputError
from llmsim.hardware.catalog import hardware_dir, load_hardware
from llmsim.hardware.spec import Efficiency
from llmsim.models.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "calibration"
A100 = load_hardware("a100-80gb")

# A known efficiency, away from the defaults the fit starts from. (comm_latency_s is above the
# A100 NVLink's 1 us link latency: below it the per-hop term is the link's and not identifiable.)
TRUTH = Efficiency(
    gemm_eff_max=0.70, gemm_half_tokens=60.0, mem_eff=0.78, kernel_launch_s=3e-6,
    gemm_fixed_s=5e-6, norm_mem_eff=0.40, rotary_mem_eff=0.45, activation_mem_eff=0.50,
    residual_mem_eff=0.90, embedding_mem_eff=0.20, elementwise_mem_eff=0.90,
    attn_prefill_eff=0.18, attn_context_eff=0.40, attn_prefill_fixed_s=2e-5,
    attn_decode_mem_eff=0.80, attn_decode_fixed_s=1.2e-5, attn_decode_seq_s=3e-7,
    attn_decode_floor_s=0.0, comm_bw_eff=0.55, comm_latency_s=3e-6, comm_base_latency_s=4e-5,
    p2p_bw_eff=0.75, step_overhead_s=2e-3, host_kernel_s=35e-6, first_token_overhead_s=1e-2,
    decode_seq_overhead_s=4e-4, source="truth")


def _rows(**cols) -> pd.DataFrame:
    n = max(len(v) for v in cols.values() if isinstance(v, (list, np.ndarray)))
    return pd.DataFrame({c: cols.get(c, [np.nan] * n) if isinstance(cols.get(c), (list, np.ndarray))
                         or c not in cols else [cols[c]] * n for c in COLUMNS})


def synthetic_frame() -> pd.DataFrame:
    """Rows of every family, shaped like the shared measurements, measured_s left empty."""
    frames = []
    tokens = np.unique(np.geomspace(1, 8192, 16).round())
    ops = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj", "norm", "rotary", "activation",
           "residual", "embedding"]
    for (h, H, Hkv, inter, gated) in ((4096, 32, 8, 14336, 1.0), (2560, 32, 32, 10240, 0.0)):
        for tp in (1, 2, 8):
            for op in ops:
                fam = "gemm" if op.endswith("proj") else "elementwise"
                frames.append(_rows(family=fam, op=op, model=f"m{h}", tp=float(tp),
                                    tokens=tokens, hidden=float(h), n_head=float(H),
                                    n_kv_head=float(Hkv), head_dim=float(h // H),
                                    intermediate=float(inter), gated=gated, vocab=32000.0,
                                    file="ops.csv", line=np.arange(len(tokens)) + 2))
    pre = [(n, c) for n in (64, 256, 1024, 4096) for c in (0, 512, 2048)]
    frames.append(_rows(family="attention", op="attn_prefill", model="attn", tp=1.0,
                        batch=[1.0] * len(pre), chunk=[float(n) for n, _ in pre],
                        context=[float(c) for _, c in pre], hidden=4096.0, n_head=32.0,
                        n_kv_head=8.0, head_dim=128.0, file="attn.csv",
                        line=np.arange(len(pre)) + 2))
    dec = [(b, c) for b in (1, 4, 16, 64, 128) for c in (32, 512, 2048, 4096)]
    frames.append(_rows(family="attention", op="attn_decode", model="attn", tp=1.0,
                        batch=[float(b) for b, _ in dec], chunk=[1.0] * len(dec),
                        context=[float(c) for _, c in dec], hidden=4096.0, n_head=32.0,
                        n_kv_head=8.0, head_dim=128.0, file="attn.csv",
                        line=np.arange(len(dec)) + 2))
    sizes = np.geomspace(2048, 512e6, 12).round()
    for op, workers in (("all_reduce", (2, 4, 8)), ("send_recv", (2,))):
        for n in workers:
            frames.append(_rows(family="collective", op=op, model="node", tp=float(n),
                                num_workers=float(n), devices_per_node=float(n), node="node",
                                node_gpus=8.0, size_bytes=sizes, file="coll.csv",
                                line=np.arange(len(sizes)) + 2))
    steps = [("prefill", tp, b, p, 1) for tp in (2, 8) for b in (1, 4, 16)
             for p in (128, 1024, 4096)]
    steps += [("decode", tp, b, 512, 128) for tp in (2, 8) for b in (1, 8, 64)]
    frames.append(_rows(family="step", op=[s[0] for s in steps], model="llama-2-70b",
                        tp=[float(s[1]) for s in steps], batch=[float(s[2]) for s in steps],
                        chunk=[float(s[3]) for s in steps],
                        output_len=[float(s[4]) for s in steps], file="steps.csv",
                        line=np.arange(len(steps)) + 2))
    frame = pd.concat(frames, ignore_index=True)
    for col in ("family", "op", "model", "file", "node"):
        frame[col] = frame[col].astype(object)
    return frame


def synthetic_measurements(noise: float = 0.0, seed: int = 0) -> Measurements:
    frame = synthetic_frame()
    t = predict(frame, A100, TRUTH)
    assert np.isfinite(t).all()
    rng = np.random.default_rng(seed)
    frame["measured_s"] = t * np.exp(noise * rng.standard_normal(len(t)))
    return Measurements(frame, {}, {})


# --- the fit recovers what generated the data --------------------------------------------------
def test_fit_recovers_known_parameters_from_model_generated_data():
    res = fit(synthetic_measurements(), A100)
    eff = res.efficiency
    assert {s.stage for s in res.stages} == set(STAGES)
    for stage in STAGES.values():
        for p in stage:
            true, got = getattr(TRUTH, p.name), getattr(eff, p.name)
            assert got == pytest.approx(true, rel=0.03, abs=1e-9), p.name
    # rounding to 4 significant digits is the only difference left: errors are ~0
    assert res.frame["ape"].max() < 0.01
    assert eff.attn_decode_floor_s == 0.0 and eff.elementwise_mem_eff == eff.residual_mem_eff


def test_fit_with_noise_stays_close_and_is_deterministic():
    meas = synthetic_measurements(noise=0.05, seed=3)
    a = fit(meas, A100).efficiency
    b = fit(meas, A100).efficiency
    assert a == b
    for name in ("gemm_eff_max", "mem_eff", "norm_mem_eff", "attn_prefill_eff",
                 "attn_decode_mem_eff", "comm_bw_eff", "host_kernel_s"):
        assert getattr(a, name) == pytest.approx(getattr(TRUTH, name), rel=0.05), name
    # 12 decode steps with 5% noise pin the per-sequence overhead less tightly
    assert a.decode_seq_overhead_s == pytest.approx(TRUTH.decode_seq_overhead_s, rel=0.25)


def test_fit_does_not_depend_on_the_input_cards_efficiency():
    meas = synthetic_measurements()
    other = dataclasses.replace(A100, efficiency=TRUTH)
    assert fit(meas, A100).efficiency == fit(meas, other).efficiency


# --- the vectorised predictions are the cost model's --------------------------------------------
def test_predictions_equal_the_cost_model_breakdown():
    frame = synthetic_frame()
    hw = dataclasses.replace(A100, efficiency=TRUTH)
    pred = predict(frame, hw)
    per_kernel = {"norm": ("norms", 3), "residual": ("residual", 2)}   # 1-layer model
    rng = np.random.default_rng(1)
    idx = rng.choice(np.flatnonzero(np.isin(frame["family"], ["gemm", "elementwise",
                                                             "attention"])), 60, replace=False)
    for i in idx:
        r = frame.iloc[i]
        spec = ModelSpec(name="x", num_layers=1, hidden_size=int(r.hidden),
                         num_attention_heads=int(r.n_head), num_kv_heads=int(r.n_kv_head),
                         head_dim=int(r.head_dim),
                         intermediate_size=int(r.intermediate) if r.intermediate == r.intermediate
                         else 256, vocab_size=1000, max_model_len=100000,
                         gated_mlp=not (r.gated == 0))
        cm = CostModel(spec, hw, ParallelConfig(tp=int(r.tp)), QuantConfig("fp16", "fp16", "fp16"))
        if r.family == "attention":
            B, n, c = int(r.batch), int(r.chunk), int(r.context)
            agg = (BatchAggregates.from_pairs([(n, c)] * B, num_sampled=0) if n > 1
                   else BatchAggregates(decode_seqs=B, decode_ctx_sum=B * c))
            t = {o.name: o for o in cm.breakdown(agg)}[r.op].time_s
        else:
            ops = {o.name: o for o in cm.breakdown(BatchAggregates(decode_seqs=int(r.tokens)))}
            name, k = per_kernel.get(r.op, ({"rotary": "rotary", "activation": "activation",
                                              "embedding": "embedding"}.get(r.op, r.op), 1))
            t = ops[name].time_s / k
        assert pred[i] == pytest.approx(t, rel=1e-12), (r.family, r.op)


def test_gemm_and_allreduce_predictions_by_hand():
    eff = TRUTH
    f = _rows(family="gemm", op="down_proj", model="m", tp=2.0, tokens=[512.0], hidden=4096.0,
              n_head=32.0, n_kv_head=8.0, head_dim=128.0, intermediate=14336.0, gated=1.0)
    # down_proj on tp=2: K = 7168, N = 4096, M = 512; fp16
    flops = 2 * 512 * 7168 * 4096
    compute = flops / (312e12 * 0.70 * 512 / (512 + 60))
    memory = (7168 * 4096 * 2 + 512 * (7168 + 4096) * 2) / (2039e9 * 0.78)
    assert compute > memory
    t = predict_ops(op_arrays(f), A100, eff)[0]
    assert t == pytest.approx(3e-6 + 5e-6 + compute, rel=1e-12)
    # all-reduce of 64 MB over 8 NVLink GPUs: 40 us + 14 hops x 3 us + 2*7/8*S/(300e9*0.55)
    c = _rows(family="collective", op="all_reduce", num_workers=[8.0], devices_per_node=8.0,
              node_gpus=8.0, size_bytes=64e6)
    t = predict(c, A100, eff)[0]
    assert t == pytest.approx(4e-5 + 14 * 3e-6 + 2 * 7 / 8 * 64e6 / (300e9 * 0.55), rel=1e-12)
    assert t == pytest.approx(comm.allreduce_time_s(64e6, 8, A100.intra_node, eff), rel=1e-12)
    # another topology (a 4-GPU node for an 8-GPU card) is not predicted
    c["node_gpus"] = 4.0
    assert math.isnan(predict(c, A100, eff)[0])


# --- hold-out rules -------------------------------------------------------------------------------
def test_holdout_rules_select_rows():
    frame = synthetic_frame()
    rules = parse_holdout(["model=M4096", "tp=8", "attention:op=attn_decode"])
    held = holdout_mask(frame, rules)
    expect = ((frame["model"] == "m4096") | (frame["tp"] == 8.0)
              | ((frame["family"] == "attention") & (frame["op"] == "attn_decode")))
    assert (held == expect.to_numpy()).all()
    # the short name after "/" matches, case-insensitively
    f2 = frame.assign(model=frame["model"].map(lambda m: f"org/{m.upper()}"))
    assert holdout_mask(f2, parse_holdout(["model=m2560"])).sum() == \
        (frame["model"] == "m2560").sum()


@pytest.mark.parametrize("text, words", [
    ("model", ["KEY=V1"]), ("colour=red", ["unknown hold-out key"]),
    ("gpu:model=x", ["unknown family"]), ("tp=four", ["numbers"]),
    ("model=Llama-9", ["matches no measured row", "m4096"]),
])
def test_bad_holdout_rules_are_input_errors(text, words):
    with pytest.raises(InputError) as exc:
        holdout_mask(synthetic_frame(), parse_holdout([text]))
    for w in words:
        assert w in str(exc.value)


def test_held_out_rows_do_not_influence_the_fit():
    meas = synthetic_measurements()
    spoiled = meas.frame.copy()
    sel = (spoiled["family"] == "gemm") & (spoiled["tp"] == 8.0)
    spoiled.loc[sel, "measured_s"] *= 3.0              # garbage in the held-out part only
    rules = parse_holdout(["tp=8"])
    a = fit(Measurements(spoiled, {}, {}), A100, rules)
    b = fit(meas, A100, rules)
    assert a.efficiency == b.efficiency
    ev = a.frame
    assert ev.loc[sel.to_numpy(), "split"].eq("holdout").all()
    assert ev.loc[sel.to_numpy(), "ratio"].median() == pytest.approx(1 / 3, rel=0.02)
    lin = next(t for t in target_report(ev) if t["target"] == "linear ops >= 64 tokens")
    assert lin["judged_on"] == "holdout" and not lin["met"]


# --- cards ------------------------------------------------------------------------------------
def test_write_card_replaces_only_efficiency_and_calibration(tmp_path):
    base = hardware_dir() / "h100-sxm.yaml"
    eff = dataclasses.replace(TRUTH, source="test fit")
    out = write_card(base, eff, {"command": "x", "targets": []}, tmp_path / "h100-sxm.yaml")
    spec = load_hardware(str(out))
    orig = load_hardware("h100-sxm")
    assert spec.efficiency == eff
    assert spec.provenance == orig.provenance and spec.peak_flops_per_s == orig.peak_flops_per_s
    assert read_calibration_record(str(out)) == {"command": "x", "targets": []}
    # writing again replaces (not duplicates) both sections
    out = write_card(out, eff, None, tmp_path / "h100-sxm.yaml")
    text = out.read_text()
    assert text.count("efficiency:") == 1 and "calibration:" not in text


def test_round_sig():
    assert round_sig(0.123456) == 0.1235 and round_sig(3.801234e-5) == 3.801e-5
    assert round_sig(0.0) == 0.0


def test_carry_keeps_host_side_and_carries_gpu_side():
    src = dataclasses.replace(A100, efficiency=TRUTH)
    dst = load_hardware("l4")
    eff, rec = carry_efficiency(src, dst, "cmd")
    for f in GPU_SIDE:
        assert getattr(eff, f) == getattr(TRUTH, f), f
    for f in HOST_SIDE:
        assert getattr(eff, f) == getattr(dst.efficiency, f), f
    assert "pcie" in eff.source and "not fitted" in eff.source
    assert rec["carried_from"] == "a100-80gb" and set(rec["kept"]) == set(HOST_SIDE)
    eff2, _ = carry_efficiency(src, dst, carry_host=True)
    assert all(getattr(eff2, f) == getattr(TRUTH, f) for f in HOST_SIDE)


def test_catalog_cards_say_what_is_fitted_carried_or_assumed():
    rec = read_calibration_record("a100-80gb")
    assert rec and rec["command"].startswith("llmsim calibrate ")
    for name in ("h100-sxm", "h200", "b200", "l4", "a100-40gb", "rtx-4090"):
        spec = load_hardware(name)
        assert spec.efficiency.source.startswith("Nothing fitted on this part")
        assert read_calibration_record(name)["carried_from"] == "a100-80gb"
        for f in GPU_SIDE:
            assert getattr(spec.efficiency, f) == getattr(A100.efficiency, f), (name, f)
    for name in ("mi300x", "gaudi2", "tpu-v5e"):
        src = load_hardware(name).efficiency.source
        assert "not carried" in src and "assumed defaults" in src


# --- the committed card on the shared measurements ------------------------------------------------
@pytest.mark.skipif(not SHARED.is_dir(),
                    reason=f"shared calibration data not found at {SHARED} (../shared beside "
                           "the checkout)")
def test_committed_a100_card_reproduces_its_recorded_errors():
    rec = read_calibration_record("a100-80gb")
    meas = read_measurements(SHARED)
    for name, info in rec["files"].items():
        assert name in meas.files, f"{name} recorded in the card but not in {SHARED}"
        assert meas.files[name]["rows"] == info["rows"], name
    ev = evaluate(meas.frame, A100, rules=parse_holdout(rec["holdout"]))
    now = {t["target"]: t for t in target_report(ev)}
    assert rec["targets"], "the card records no targets"
    for t in rec["targets"]:
        got = now[t["target"]]
        assert got["judged_on"] == t["judged_on"]
        assert got[t["judged_on"]]["median_ape"] == pytest.approx(t["median_ape"], abs=1e-3)
        assert got[t["judged_on"]]["n"] == t["n"]
        assert got["met"] == t["met"] and t["met"], t["target"]
    # per operator family, held-out medians as recorded
    for group, e in rec["errors_by_op"]["holdout"].items():
        sel = (ev["group"] == group) & (ev["split"] == "holdout")
        assert np.median(ev.loc[sel, "ape"]) == pytest.approx(e["median_ape"], abs=1e-3), group
