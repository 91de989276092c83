"""`llmsim validate` and the bad-input table of docs/bad_input.md.

Each row of the table is a case here: the test edits a valid scenario, runs
``llmsim.cli.main(["validate", ...])``, and checks exit code 2, the ``file:line`` (or the
``--set``), the key, and that stderr contains the row's text. A second test keeps the table and
the cases in step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmsim.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad_input.md"

POOL = """\
  pools:
    - name: h100
      hardware: h100-sxm
      replicas: 2
      parallel: {tp: 1, pp: 1}
      scheduler:
        policy: vllm
        max_num_seqs: 256
"""
BASE = """\
name: base
seed: 3
model: llama-3.1-8b
cluster:
  router: least_outstanding
""" + POOL + """\
workload:
  num_requests: 100
  arrival: {process: poisson, rate_per_s: 5}
  prompt_tokens: {dist: constant, value: 100}
  output_tokens: {dist: constant, value: 20}
"""
WORKLOAD = BASE[BASE.index("workload:"):]


@dataclass
class Case:
    edits: list = field(default_factory=list)   # (old, new) text replacements of BASE
    text: str | None = None                     # whole file instead of BASE
    sets: list = field(default_factory=list)    # --set arguments
    marker: str | None = None                   # text on the expected line (last occurrence)
    key: str | None = None                      # expected dotted key
    set_blame: bool = False                     # problem is blamed on the (only) --set
    line_slack: int = 0                         # parser lines may point one line later
    file_name: str = "s.yaml"
    create: bool = True


def _after(anchor: str, extra: str) -> tuple[str, str]:
    return anchor, anchor + extra


NET = "  network:\n    links:\n      - {src: h100, dst: %s, bandwidth_gbps: %s, latency_ms: 1}\n"

CASES: dict[str, Case] = {
    "unknown-key": Case([("replicas: 2", "replicaz: 2")], marker="replicaz",
                        key="cluster.pools.0.replicaz"),
    "wrong-type": Case([("max_num_seqs: 256", "max_num_seqs: lots")], marker="max_num_seqs",
                       key="cluster.pools.0.scheduler.max_num_seqs"),
    "number-as-text": Case([("max_num_seqs: 256", 'max_num_seqs: "256"')],
                           marker="max_num_seqs", key="cluster.pools.0.scheduler.max_num_seqs"),
    "negative-rate": Case([("rate_per_s: 5", "rate_per_s: -5")], marker="rate_per_s",
                          key="workload.arrival.rate_per_s"),
    "unknown-literal": Case([("router: least_outstanding", "router: fastest")],
                            marker="router", key="cluster.router"),
    "unknown-model": Case([("model: llama-3.1-8b", "model: llama-3.1-8bx")], marker="model:",
                          key="model"),
    "unknown-hardware": Case([("hardware: h100-sxm", "hardware: h100-sxmm")],
                             marker="hardware:", key="cluster.pools.0.hardware"),
    "missing-model-card": Case([("model: llama-3.1-8b", "model: cards/missing.yaml")],
                               marker="model:", key="model"),
    "plan-does-not-fit": Case([("model: llama-3.1-8b", "model: llama-3.1-405b")],
                              marker="- name: h100", key="cluster.pools.0"),
    "tp-not-divisor": Case([("{tp: 1, pp: 1}", "{tp: 3, pp: 1}")], marker="parallel",
                           key="cluster.pools.0.parallel.tp"),
    "pp-above-layers": Case([("{tp: 1, pp: 1}", "{tp: 1, pp: 64}")], marker="parallel",
                            key="cluster.pools.0.parallel.pp"),
    "zero-replicas": Case([("replicas: 2", "replicas: 0")], marker="replicas",
                          key="cluster.pools.0.replicas"),
    "no-pools": Case([(POOL, "  pools: []\n")], marker="pools:", key="cluster.pools"),
    "duplicate-pool-name": Case(
        [_after("max_num_seqs: 256\n", "    - name: h100\n      hardware: h100-sxm\n"
                                       "      replicas: 1\n")],
        marker="- name: h100", key="cluster.pools.1.name"),
    "prefill-without-decode": Case([_after("replicas: 2\n", "      role: prefill\n")],
                                   marker="role:", key="cluster.pools.0.role"),
    "zero-bandwidth-link": Case([_after("max_num_seqs: 256\n", NET % ("default", 0))],
                                marker="bandwidth_gbps",
                                key="cluster.network.links.0.bandwidth_gbps"),
    "unknown-link-endpoint": Case([_after("max_num_seqs: 256\n", NET % ("europe", 100))],
                                  marker="dst: europe", key="cluster.network.links.0.dst"),
    "spot-unknown-pool": Case(
        [_after("max_num_seqs: 256\n", "  faults:\n    spot:\n      rate_per_hour: 0.5\n"
                                       "      pools: [h10]\n")],
        marker="pools: [h10]", key="cluster.faults.spot.pools.0"),
    "negative-fault-rate": Case(
        [_after("max_num_seqs: 256\n", "  faults:\n    spot:\n      rate_per_hour: -1\n")],
        marker="rate_per_hour", key="cluster.faults.spot.rate_per_hour"),
    "missing-trace-file": Case(
        [(WORKLOAD, "workload:\n  trace:\n    format: azure2023\n    path: missing.csv\n")],
        marker="path: missing.csv", key="workload.trace.path"),
    "endless": Case([("  num_requests: 100\n", "")], marker="workload:", key="workload"),
    "missing-key": Case([("      hardware: h100-sxm\n", "")], marker="- name: h100",
                        key="cluster.pools.0.hardware"),
    "duplicate-key": Case([_after("seed: 3\n", "seed: 4\n")], marker="seed: 4", key="seed"),
    "infinite-number": Case([_after(WORKLOAD, "simulation:\n  duration_s: .inf\n")],
                            marker="duration_s", key="simulation.duration_s"),
    "bad-set-index": Case(sets=["cluster.pools.3.replicas=2"], set_blame=True,
                          key="cluster.pools.3.replicas"),
    "bad-set-scalar": Case(sets=["model.name=x"], set_blame=True, key="model.name"),
    "bad-set-unknown-key": Case(sets=["cluster.routr=random"], set_blame=True,
                                key="cluster.routr"),
    "bad-set-syntax": Case(sets=["replicas"], set_blame=True),
    "bad-set-value": Case(sets=["cluster.pools.0.replicas=0"], set_blame=True,
                          key="cluster.pools.0.replicas"),
    "non-mapping": Case(text="- a\n- b\n", marker="- a"),
    "empty-file": Case(text=""),
    "invalid-yaml": Case([("{tp: 1, pp: 1}", "{tp: 1, pp: 1")], marker="parallel",
                         line_slack=1),
    "missing-file": Case(file_name="nope.yaml", create=False),
}


def _doc_rows() -> dict[str, str]:
    """case id → 'stderr contains' text, from the markdown table of docs/bad_input.md."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \|[^|]*\| `(.+?)` \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


DOC_ROWS = _doc_rows()


def _run(tmp_path: Path, case: Case, capsys) -> tuple[int, str, Path, str]:
    text = BASE if case.text is None else case.text
    for old, new in case.edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / case.file_name
    if case.create:
        path.write_text(text, encoding="utf-8")
    argv = ["validate", str(path)]
    for s in case.sets:
        argv += ["--set", s]
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.err, path, text


def _line_of(text: str, marker: str) -> int:
    lines = text.splitlines()
    hits = [i + 1 for i, ln in enumerate(lines) if marker in ln]
    assert hits, marker
    return hits[-1]


def test_every_documented_row_is_a_case_and_back():
    assert DOC_ROWS, "no table rows found in docs/bad_input.md"
    assert sorted(DOC_ROWS) == sorted(CASES)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_input_row(case_id, tmp_path, capsys):
    case = CASES[case_id]
    rc, err, path, text = _run(tmp_path, case, capsys)
    assert rc == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    assert DOC_ROWS[case_id] in err, err
    if case.set_blame:
        loc = f"--set {case.sets[0]}"
        assert (loc + f": key '{case.key}'" if case.key else loc + ":") in err, err
        return
    if case.marker is None:
        assert f"{path}: " in err, err
        return
    line = _line_of(text, case.marker)
    locs = [f"{path}:{line + k}" for k in range(case.line_slack + 1)]
    head = [loc + (f": key '{case.key}'" if case.key else ":") for loc in locs]
    assert any(h in err for h in head), (head, err)


def test_validate_ok_prints_summary_with_memory_figures(capsys):
    rc = main(["validate", str(REPO / "scenarios" / "quickstart.yaml")])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "OK: quickstart: 1 pool, 2 replicas, model llama-3.1-8b"
    # Llama-3.1-8B has 8.03e9 parameters: 16.06 GB of bf16 weights on one GPU.
    assert "weights 16.06 GB/GPU" in lines[1]
    # KV per token: 2 (K,V) x 32 layers x 8 KV heads x 128 dims x 2 bytes = 131,072 B.
    # 80 GB x 0.9 - 16.06 GB weights - ~2 GB activation reserve leaves ~54 GB: ~413k tokens.
    m = re.search(r"KV cache ([\d,]+) tokens", lines[1])
    tokens = int(m.group(1).replace(",", ""))
    assert 395_000 < tokens < 425_000 and tokens % 16 == 0


def test_validate_set_changes_the_plan(capsys):
    rc = main(["validate", str(REPO / "scenarios" / "quickstart.yaml"),
               "--set", "cluster.pools.0.replicas=8", "--set", "cluster.pools.0.parallel.tp=2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 pool, 8 replicas" in out
    assert "weights 8.03 GB/GPU" in out and "tp=2" in out


def test_validate_reports_all_problems_at_once(tmp_path, capsys):
    text = (BASE.replace("replicas: 2", "replicaz: 2")
                .replace("rate_per_s: 5", "rate_per_s: -5")
                .replace("model: llama-3.1-8b", "model: llama-3.1-8bx"))
    path = tmp_path / "multi.yaml"
    path.write_text(text)
    rc = main(["validate", str(path), "--set", "cluster.routr=random"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: 4 problems:"), err
    for needle in (f"{path}:3: key 'model'", f"{path}:9: key 'cluster.pools.0.replicaz'",
                   f"{path}:16: key 'workload.arrival.rate_per_s'",
                   "--set cluster.routr=random: key 'cluster.routr'"):
        assert needle in err, (needle, err)
    # the misspelt key is not also reported as a missing 'replicas'
    assert "required key is missing" not in err
