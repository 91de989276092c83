"""Scenario loading: YAML line map, --set overrides, schema errors, defaults and helpers.

The bad-input table (docs/bad_input.md) is exercised through the CLI in
tests/test_scenario_cli.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.errors import InputError
from llmsim.scenario import PoolConfig, Scenario, load_scenario
from llmsim.scenario_errors import clean_loc
from llmsim.scenario_overrides import apply_overrides
from llmsim.scenario_schema import MemoryConfig, SchedulerConfig, resolve_path_ref
from llmsim.yaml_lines import line_of, read_yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"

BASE = """\
name: base
seed: 3
model: llama-3.1-8b
cluster:
  router: least_outstanding
  pools:
    - name: h100
      hardware: h100-sxm
      replicas: 2
      parallel: {tp: 1, pp: 1}
      scheduler:
        policy: vllm
        max_num_seqs: 256
      memory:
        block_size: 16
workload:
  num_requests: 100
  arrival: {process: poisson, rate_per_s: 5}
  prompt_tokens: {dist: constant, value: 100}
  output_tokens: {dist: constant, value: 20}
slo:
  ttft_s: 1.0
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems_of(exc: pytest.ExceptionInfo) -> list:
    return exc.value.problems


# ----------------------------------------------------------------------------- yaml_lines
def test_line_map_points_at_keys_and_items():
    doc = read_yaml(BASE, "s.yaml")
    assert doc.lines[("model",)] == 3
    assert doc.lines[("cluster", "pools", 0)] == 7      # the '- name:' line
    assert doc.lines[("cluster", "pools", 0, "replicas")] == 9
    assert doc.lines[("cluster", "pools", 0, "parallel", "tp")] == 10  # flow mapping
    assert doc.lines[("workload", "arrival", "rate_per_s")] == 18
    # a path that is not in the file falls back to its nearest ancestor
    assert line_of(doc.lines, ("cluster", "pools", 0, "memory", "watermark")) == 14
    assert line_of(doc.lines, ("nope",)) == 1


def test_duplicate_key_is_a_problem_and_last_value_line_wins():
    doc = read_yaml("a: 1\nb:\n  c: 1\n  c: 2\n", "f.yaml")
    assert doc.data == {"a": 1, "b": {"c": 2}}
    [p] = doc.problems
    assert (p.line, p.key) == (4, "b.c") and "first written at line 3" in p.message
    assert doc.lines[("b", "c")] == 4


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(InputError) as e:
        read_yaml("a: 1\nb: [1, 2\nc: 3\n", "bad.yaml")
    [p] = problems_of(e)
    assert p.where == "bad.yaml" and p.line in (2, 3) and "invalid YAML" in p.message


def test_exponent_floats_are_numbers_and_no_objects_are_built():
    doc = read_yaml("a: 1e3\nb: 2.5e-3\nc: '1e3'\nd: 10\n")
    assert doc.data == {"a": 1000.0, "b": 0.0025, "c": "1e3", "d": 10}
    with pytest.raises(InputError):
        read_yaml("a: !!python/object/apply:os.system ['echo hi']\n")


# ----------------------------------------------------------------------------- overrides
def test_overrides_set_values_with_yaml_types_and_do_not_mutate_input():
    data = {"a": {"b": [{"c": 1}, {"c": 2}]}, "s": None}
    new, where, probs = apply_overrides(
        data, ["a.b.1.c=8", "a.x=0.5", "s.t=true", "a.b.0={c: 3, d: [1, 2]}", "n="])
    assert probs == []
    assert new == {"a": {"b": [{"c": 3, "d": [1, 2]}, {"c": 8}], "x": 0.5},
                   "s": {"t": True}, "n": None}
    assert data == {"a": {"b": [{"c": 1}, {"c": 2}]}, "s": None}
    assert where[("a", "b", 1, "c")] == "--set a.b.1.c=8"


@pytest.mark.parametrize("spec, fragment", [
    ("a.b.5.c=1", "index 5 is out of range: 'a.b' has 2 item(s)"),
    ("a.b.x=1", "'a.b' is a list: 'x' must be an item index"),
    ("a.b.0.c.d=1", "cannot go into 'a.b.0.c': it holds a int"),
    ("a..b=1", "empty segment"),
    ("novalue", "expected KEY=VALUE"),
    ("a=[1,", "not a valid YAML value"),
])
def test_bad_override_paths_name_the_set(spec, fragment):
    _, _, probs = apply_overrides({"a": {"b": [{"c": 1}, {"c": 2}]}}, [spec])
    [p] = probs
    assert p.where == f"--set {spec}" and fragment in p.message


# ----------------------------------------------------------------------------- schema
def test_clean_loc_drops_union_tags():
    data = {"cluster": {"pools": [{"price": {"usd_per_hour": -1}}]}}
    loc = ("cluster", "pools", 0, "price", "usd", "usd_per_hour")
    assert clean_loc(loc, data, "greater_than_equal") == ("cluster", "pools", 0, "price",
                                                          "usd_per_hour")
    assert clean_loc(("cluster", "pools", 0, "hardware"), data, "missing") == (
        "cluster", "pools", 0, "hardware")


def test_scheduler_and_memory_defaults_resolve_by_policy():
    s = SchedulerConfig(policy="sarathi").effective()
    assert (s.max_num_batched_tokens, s.enable_chunked_prefill) == (2048, True)
    for pol in ("static", "orca", "vllm"):
        s = SchedulerConfig(policy=pol).effective()
        assert (s.max_num_batched_tokens, s.enable_chunked_prefill) == (8192, False)
    # values the user wrote are kept
    s = SchedulerConfig(policy="sarathi", max_num_batched_tokens=512).effective()
    assert s.max_num_batched_tokens == 512
    assert MemoryConfig().effective("orca").manager == "contiguous"
    assert MemoryConfig().effective("static").manager == "contiguous"
    assert MemoryConfig().effective("vllm").manager == "paged"
    assert MemoryConfig(manager="paged").effective("orca").manager == "paged"


def test_quant_and_parallel_config_of_a_pool():
    p = PoolConfig(name="p", hardware="h100-sxm", replicas=2, parallel={"tp": 4, "pp": 2},
                   dtype="fp8")
    q = p.quant_config()
    assert (q.weight_dtype, q.activation_dtype, q.kv_cache_dtype) == ("fp8", "fp8", "fp8")
    p2 = PoolConfig(name="p", hardware="h100-sxm", replicas=1, weight_dtype="int4",
                    kv_cache_dtype="fp8")
    q2 = p2.quant_config()
    assert (q2.weight_dtype, q2.activation_dtype, q2.kv_cache_dtype) == ("int4", "bf16", "fp8")
    assert p.parallel_config().num_gpus == 8 and p.num_gpus == 16


def test_strict_types_no_text_to_number_coercion():
    with pytest.raises(Exception):
        SchedulerConfig(max_num_seqs="256")
    with pytest.raises(Exception):
        SchedulerConfig(max_num_seqs=2.0)
    assert MemoryConfig(swap_space_gb=4).swap_space_gb == 4.0  # int accepted for a number


def test_resolve_path_ref(tmp_path):
    assert resolve_path_ref("llama-3.1-8b", tmp_path) == "llama-3.1-8b"
    assert resolve_path_ref("cards/m.yaml", tmp_path) == tmp_path / "cards" / "m.yaml"
    assert resolve_path_ref("./x", tmp_path) == tmp_path / "x"
    # an HF-style alias stays a name unless such a path exists next to the scenario
    assert resolve_path_ref("meta-llama/Llama-3.1-8B", tmp_path) == "meta-llama/Llama-3.1-8B"
    (tmp_path / "meta-llama" / "Llama-3.1-8B").mkdir(parents=True)
    assert resolve_path_ref("meta-llama/Llama-3.1-8B", tmp_path) == (
        tmp_path / "meta-llama" / "Llama-3.1-8B")


# ----------------------------------------------------------------------------- load_scenario
def test_quickstart_validates():
    sc = load_scenario(QUICKSTART)
    assert isinstance(sc, Scenario)
    assert sc.name == "quickstart" and sc.seed == 42 and sc.model == "llama-3.1-8b"
    [pool] = sc.cluster.pools
    assert (pool.name, pool.hardware, pool.replicas) == ("h100", "h100-sxm", 2)
    assert sc.source_path == QUICKSTART and sc.base_dir == QUICKSTART.parent
    assert sc.resolved_model().num_attention_heads == 32
    assert pool.resolved_hardware().name == "h100-sxm"
    assert sc.slo.targets == {"ttft_s": 1.0, "tpot_s": 0.05}


def test_defaults_name_from_file_stem_and_pool_names(tmp_path):
    text = BASE.replace("name: base\n", "").replace("    - name: h100\n      hardware",
                                                    "    - hardware")
    sc = load_scenario(write(tmp_path, text, "my_run.yaml"))
    assert sc.name == "my_run"
    p = sc.cluster.pools[0]
    assert p.name == "pool0" and p.role == "mixed" and p.region == "default"
    assert p.price == "on_demand" and p.kv_cache_dtype == "auto"
    assert sc.cluster.faults.spot is None and sc.cluster.network.links == []
    assert sc.simulation.drain is True and sc.simulation.timeline_interval_s == 1.0


def test_overrides_change_values(tmp_path):
    path = write(tmp_path, BASE)
    sc = load_scenario(path, ["cluster.pools.0.replicas=8", "seed=11",
                              "cluster.pools.0.scheduler.policy=sarathi", "slo.e2e_s=30"])
    p = sc.cluster.pools[0]
    assert p.replicas == 8 and sc.seed == 11 and sc.slo.e2e_s == 30.0
    assert p.effective_scheduler().max_num_batched_tokens == 2048


def test_override_errors_blame_the_set_not_the_file(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(InputError) as e:
        load_scenario(path, ["cluster.pools.0.replicas=0", "cluster.pools.2.replicas=1",
                             "cluster.routr=random"])
    msgs = {p.where: p for p in problems_of(e)}
    assert msgs["--set cluster.pools.0.replicas=0"].line is None
    assert "at least one replica" in msgs["--set cluster.pools.0.replicas=0"].message
    assert "out of range" in msgs["--set cluster.pools.2.replicas=1"].message
    assert "Did you mean 'router'" in msgs["--set cluster.routr=random"].message


def test_many_problems_are_reported_together_in_line_order(tmp_path):
    text = (BASE.replace("replicas: 2", "replicas: 0")
                .replace("router: least_outstanding", "router: fastest")
                .replace("max_num_seqs: 256", "max_num_seqs: lots")
                .replace("rate_per_s: 5", "rate_per_s: -5")
                .replace("ttft_s: 1.0", "ttft_sec: 1.0"))
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, text))
    got = [(p.line, p.key) for p in problems_of(e)]
    assert got == [(5, "cluster.router"), (9, "cluster.pools.0.replicas"),
                   (13, "cluster.pools.0.scheduler.max_num_seqs"),
                   (18, "workload.arrival.rate_per_s"), (22, "slo.ttft_sec")]
    assert all(p.where == str(tmp_path / "s.yaml") for p in problems_of(e))


def test_schema_errors_and_semantic_errors_together(tmp_path):
    text = (BASE.replace("model: llama-3.1-8b", "model: llama-3.1-8bx")
                .replace("max_num_seqs: 256", "max_num_seqs: -1"))
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, text))
    keys = {p.key: p for p in problems_of(e)}
    assert "Did you mean 'llama-3.1-8b'" in keys["model"].message
    assert keys["model"].line == 3
    assert keys["cluster.pools.0.scheduler.max_num_seqs"].line == 13


def test_partial_checks_still_run_on_valid_pools(tmp_path):
    # tp=3 is caught even though another key of the file is broken
    text = (BASE.replace("parallel: {tp: 1, pp: 1}", "parallel: {tp: 3, pp: 1}")
                .replace("ttft_s: 1.0", "ttft_s: -1"))
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, text))
    keys = {p.key: p for p in problems_of(e)}
    assert "must divide the model's num_attention_heads (32" in keys[
        "cluster.pools.0.parallel.tp"].message
    assert keys["cluster.pools.0.parallel.tp"].line == 10
    assert keys["slo.ttft_s"].line == 22


def test_semantic_checks(tmp_path):
    text = BASE.replace("""      memory:
        block_size: 16
""", """      role: prefill
      memory:
        block_size: 16
        enable_prefix_caching: true
        manager: contiguous
    - name: h100
      hardware: h100-sxm
      replicas: 1
      parallel: {tp: 2, pp: 64, ep: 2}
      scheduler: {policy: orca, enable_chunked_prefill: true, preemption_mode: swap}
  network:
    links:
      - {src: h100, dst: europe, bandwidth_gbps: 100, latency_ms: 20}
  faults:
    spot: {rate_per_hour: 0.5, pools: [h10]}
""")
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, text))
    msgs = {(p.key, p.message.split(":")[0].split(";")[0]) for p in problems_of(e)}
    text_all = "\n".join(p.format() for p in problems_of(e))
    keys = [p.key for p in problems_of(e)]
    assert "cluster.pools.1.name" in keys                    # duplicate pool name
    assert "cluster.pools.0.role" in keys                    # prefill without decode
    assert "cluster.pools.0.memory.enable_prefix_caching" in keys
    assert "cluster.pools.1.parallel.pp" in keys             # 64 > 32 layers
    assert "cluster.pools.1.parallel.ep" in keys             # ep on a dense model
    assert "cluster.pools.1.scheduler.enable_chunked_prefill" in keys
    assert "cluster.network.links.0.dst" in keys             # unknown endpoint
    assert "cluster.faults.spot.pools.0" in keys and "Did you mean 'h100'" in text_all
    assert "num_layers (32" in text_all
    assert msgs  # every problem has a message


def test_to_dict_round_trips(tmp_path):
    sc = load_scenario(write(tmp_path, BASE), ["cluster.pools.0.price={usd_per_hour: 2.5}"])
    d = sc.to_dict()
    assert d["cluster"]["pools"][0]["price"] == {"usd_per_hour": 2.5}
    again = load_scenario(d)
    assert again == sc
    assert again.base_dir == sc.base_dir == tmp_path
    assert again.source_path == sc.source_path == tmp_path / "s.yaml"
    assert again.cluster.pools[0].price_usd_per_gpu_hour() == 2.5
    # a plain dict works too, and overrides apply to it
    third = load_scenario(dict(d), ["cluster.pools.0.replicas=5"])
    assert third.cluster.pools[0].replicas == 5


def test_dict_problems_have_a_dict_source():
    with pytest.raises(InputError) as e:
        load_scenario({"model": "llama-3.1-8b", "cluster": {"pools": []}})
    assert all(p.where == "<scenario dict>" for p in problems_of(e))


def test_relative_model_card_resolves_against_the_scenario_dir(tmp_path):
    src = (REPO / "llmsim" / "models" / "cards" / "llama-3.1-8b.yaml").read_text()
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "my-model.yaml").write_text(src)
    path = write(tmp_path, BASE.replace("model: llama-3.1-8b", "model: cards/my-model.yaml"))
    sc = load_scenario(path)
    assert sc.resolved_model().num_layers == 32
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, BASE.replace("model: llama-3.1-8b",
                                                   "model: cards/missing.yaml"), "t.yaml"))
    [p] = problems_of(e)
    assert p.key == "model" and p.line == 3 and "not found" in p.message


def test_price_helpers_use_the_card(tmp_path):
    sc = load_scenario(write(tmp_path, BASE), ["cluster.pools.0.price=spot"])
    p = sc.cluster.pools[0]
    hw = p.resolved_hardware()
    assert p.price_usd_per_gpu_hour() == hw.price_spot_usd_per_h


# ----------------------------------------------------------------------------- files
SHARED = REPO.parent / "shared"
AZURE_CONV = SHARED / "traces" / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"

TRACE_WORKLOAD = """\
workload:
  trace:
    format: azure2023
    path: {path}
"""


def _with_workload(text: str) -> str:
    return BASE[:BASE.index("workload:")] + text


@pytest.mark.skipif(not AZURE_CONV.is_file(), reason="shared traces not present")
def test_real_trace_workload_validates(tmp_path):
    sc = load_scenario(write(tmp_path, _with_workload(TRACE_WORKLOAD.format(path=AZURE_CONV))))
    assert sc.workload.trace.path == str(AZURE_CONV)


def test_empty_and_wrong_format_trace_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "other.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, _with_workload(TRACE_WORKLOAD.format(path="empty.csv"))))
    [p] = problems_of(e)
    assert (p.key, p.line) == ("workload.trace.path", 19) and "empty" in p.message
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, _with_workload(TRACE_WORKLOAD.format(path="other.csv")),
                            "t.yaml"))
    # a header problem is reported in the trace file itself
    assert any(p.where and p.where.endswith("other.csv") for p in problems_of(e))


def test_missing_trace_of_a_source_points_at_that_source(tmp_path):
    text = _with_workload("""\
workload:
  num_requests: 10
  sources:
    - name: chat
      rate_per_s: 1
      prompt_tokens: {dist: constant, value: 10}
      output_tokens: {dist: constant, value: 10}
    - name: logs
      trace: {format: azure2023, path: nowhere.csv}
""")
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, text))
    [p] = problems_of(e)
    assert p.key == "workload.sources.1.trace.path" and p.line == 24
    assert "not found" in p.message


def test_speculative_decoding_checks(tmp_path):
    spec = ("      scheduler:\n        policy: vllm\n        speculative: {method: draft, "
            "num_speculative_tokens: 4, acceptance_rate: 0.7%s}\n")
    base = BASE.replace("      scheduler:\n        policy: vllm\n", spec % "")
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, base))
    [p] = problems_of(e)
    assert p.key == "cluster.pools.0.scheduler.speculative" and "needs draft_model" in p.message
    text = BASE.replace("      scheduler:\n        policy: vllm\n",
                        spec % ", draft_model: llama-3.2-1bb")
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, text, "t.yaml"))
    [p] = problems_of(e)
    assert p.key == "cluster.pools.0.scheduler.speculative.draft_model"
    ok = BASE.replace("      scheduler:\n        policy: vllm\n",
                      spec % ", draft_model: llama-2-7b")
    sc = load_scenario(write(tmp_path, ok, "u.yaml"))
    assert sc.cluster.pools[0].scheduler.speculative.num_speculative_tokens == 4


def test_relative_hardware_card_resolves_against_the_scenario_dir(tmp_path):
    from llmsim.hardware.catalog import hardware_dir
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "h100-sxm.yaml").write_text(
        (hardware_dir() / "h100-sxm.yaml").read_text())
    sc = load_scenario(write(tmp_path, BASE.replace("hardware: h100-sxm",
                                                    "hardware: hw/h100-sxm.yaml")))
    assert sc.cluster.pools[0].resolved_hardware().name == "h100-sxm"


def test_tp_must_fit_kv_heads_and_ep_needs_moe(tmp_path):
    # llama-3.1-8b: 32 query heads, 8 KV heads. tp=16 splits queries but replicates KV: fine;
    # a model with 8 KV heads and tp=... every divisor of 32 is compatible with 8, so use ep.
    sc = load_scenario(write(tmp_path, BASE.replace("{tp: 1, pp: 1}", "{tp: 16, pp: 1}")))
    assert sc.cluster.pools[0].parallel_config().tp == 16
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, BASE.replace("{tp: 1, pp: 1}", "{tp: 2, ep: 2}"), "t.yaml"))
    [p] = problems_of(e)
    assert p.key == "cluster.pools.0.parallel.ep" and "dense" in p.message
    moe = (BASE.replace("model: llama-3.1-8b", "model: mixtral-8x7b")
               .replace("{tp: 1, pp: 1}", "{tp: 4, ep: 4}"))
    assert load_scenario(write(tmp_path, moe, "m.yaml")).cluster.pools[0].parallel.ep == 4
    with pytest.raises(InputError) as e:
        load_scenario(write(tmp_path, moe.replace("ep: 4", "ep: 3").replace("tp: 4", "tp: 6"),
                            "n.yaml"))
    keys = [p.key for p in problems_of(e)]
    assert "cluster.pools.0.parallel.tp" in keys   # 32 heads / 6


def test_simulation_duration_alone_ends_a_synthetic_workload(tmp_path):
    text = BASE.replace("  num_requests: 100\n", "") + "simulation:\n  duration_s: 60\n"
    sc = load_scenario(write(tmp_path, text))
    assert sc.simulation.duration_s == 60.0 and sc.workload.num_requests is None


def test_a_set_that_creates_a_misspelt_section_is_blamed(tmp_path):
    """The unknown top-level key exists only because of the override: the problem names the
    --set, not line 1 of the file."""
    path = write(tmp_path, BASE)
    with pytest.raises(InputError) as e:
        load_scenario(path, ["simulaton.duration_s=5"])
    [p] = problems_of(e)
    assert p.where == "--set simulaton.duration_s=5" and p.line is None
    assert "Did you mean 'simulation'" in p.message
