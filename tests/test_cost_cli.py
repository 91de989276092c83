"""`llmsim roofline` and `llmsim catalog` end to end, on the built-in cards."""
from __future__ import annotations

import json

import pytest

from llmsim.cli import main
from llmsim.cost.memory import memory_plan
from llmsim.cost.roofline import CostModel
from llmsim.cost.types import BatchAggregates, ParallelConfig, QuantConfig
from llmsim.hardware.catalog import load_hardware
from llmsim.models.catalog import load_model


def run_json(capsys, *argv):
    assert main(list(argv) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_roofline_json_matches_the_cost_model(capsys):
    r = run_json(capsys, "roofline", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
                 "--batch", "8", "--prompt-len", "2048", "--context-len", "4000")
    cm = CostModel(load_model("llama-3.1-8b"), load_hardware("h100-sxm"))
    dec = BatchAggregates(decode_seqs=8, decode_ctx_sum=8 * 4000, num_sampled=8)
    assert r["decode"]["time_s"] == pytest.approx(cm.step_time_s(dec), rel=1e-12)
    assert r["totals"]["decode_tokens_per_s"] == pytest.approx(8 / cm.step_time_s(dec))
    ttft = cm.step_time_s(BatchAggregates.from_pairs([(2048, 0)]))
    assert r["totals"]["ttft_s"] == pytest.approx(ttft, rel=1e-12)
    ops = {o["name"]: o for o in r["prefill"]["ops"]}
    assert ops["gate_up_proj"]["bound"] == "compute"
    assert {o["name"]: o for o in r["decode"]["ops"]}["gate_up_proj"]["bound"] == "memory"
    assert sum(o["share"] for o in r["decode"]["ops"]) == pytest.approx(1.0)
    plan = memory_plan(load_model("llama-3.1-8b"), load_hardware("h100-sxm"))
    assert r["memory"]["fits"] and r["memory"]["kv_capacity_tokens"] == plan.kv_capacity_tokens
    assert r["memory"]["kv_bytes_per_token"] == 131072


def test_roofline_fp8_tp_and_moe(capsys):
    r = run_json(capsys, "roofline", "--model", "mixtral-8x7b", "--hardware", "h100-sxm",
                 "--tp", "2", "--dtype", "fp8", "--batch", "4")
    assert r["quant"] == {"weight_dtype": "fp8", "activation_dtype": "fp8",
                          "kv_cache_dtype": "bf16"}
    names = {o["name"] for o in r["decode"]["ops"]}
    assert {"expert_gate_up", "router", "tp_allreduce"} <= names
    cm = CostModel(load_model("mixtral-8x7b"), load_hardware("h100-sxm"), ParallelConfig(tp=2),
                   QuantConfig("fp8", "fp8", "bf16"))
    assert r["memory"]["weights_bytes_per_gpu"] == cm.weights_bytes_per_gpu


def test_roofline_text_and_plot(capsys, tmp_path):
    out = tmp_path / "roof.html"
    assert main(["roofline", "--model", "llama-3.1-8b", "--hardware", "a100-80gb",
                 "--plot", str(out)]) == 0
    text = capsys.readouterr().out
    assert "attn_decode" in text and "TTFT" in text and "KV cache" in text
    html = out.read_text()
    assert "plotly" in html.lower() and "gate_up_proj" in html and len(html) > 1_000_000


def test_roofline_reports_a_plan_that_does_not_fit(capsys):
    r = run_json(capsys, "roofline", "--model", "llama-3.1-70b", "--hardware", "h100-sxm")
    assert r["memory"]["fits"] is False
    assert "141 GB" in r["memory"]["error"]


@pytest.mark.parametrize("argv, needle", [
    (["--model", "llama-9b", "--hardware", "h100-sxm"], "unknown model"),
    (["--model", "llama-3.1-8b", "--hardware", "h100x"], "unknown hardware"),
    (["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--tp", "3"], "tp=3"),
    (["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--batch", "0"], "--batch"),
    (["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--dtype", "bf61"], "bf16"),
    (["--model", "llama-2-7b", "--hardware", "h100-sxm", "--prompt-len", "9000"], "4096"),
])
def test_roofline_bad_input_exits_2(capsys, argv, needle):
    assert main(["roofline"] + argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_catalog_lists_cards(capsys):
    doc = run_json(capsys, "catalog")
    models = {m["name"]: m for m in doc["models"]}
    hw = {h["name"]: h for h in doc["hardware"]}
    assert models["llama-3.1-8b"]["kv_bytes_per_token_bf16"] == 131072
    assert models["deepseek-v3"]["attention"] == "mla"
    assert hw["h100-sxm"]["peak_bf16_flops_per_s"] == pytest.approx(989.4e12)
    only = run_json(capsys, "catalog", "hardware")
    assert set(only) == {"hardware"}
    assert main(["catalog", "models"]) == 0
    assert "mixtral-8x7b" in capsys.readouterr().out


def test_catalog_bad_kind_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["catalog", "gpus"])
    assert exc.value.code == 2
