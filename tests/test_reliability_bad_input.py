"""The second bad-input table of docs/bad_input.md ("More cases"): every row is a case here, run
in-process through ``llmsim.cli.main``; plus every registered subcommand against an unknown
flag and a missing input file, and YAML tags that would construct Python objects (no code runs).

A case checks the exit code, that the row's text is on the row's stream (stderr for errors,
stdout for run-time rejections) and that no traceback is printed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmsim.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad_input.md"

BASE = """\
name: s
seed: 3
model: llama-3.1-8b
cluster:
  pools:
    - name: h
      hardware: h100-sxm
      replicas: 1
workload:
  num_requests: 40
  arrival: {process: poisson, rate_per_s: 5}
  prompt_tokens: {dist: constant, value: 100}
  output_tokens: {dist: constant, value: 20}
"""
TRACE = """\
model: llama-3.1-8b
cluster:
  pools:
    - {name: h, hardware: h100-sxm, replicas: 1}
workload:
  trace: {%s path: bad.csv}
"""
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
BAD_ROW = (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n"
           "2023-11-16 18:15:50.9951690,abc,12\n")
SOURCES = BASE.replace(
    "  num_requests: 40\n  arrival: {process: poisson, rate_per_s: 5}\n"
    "  prompt_tokens: {dist: constant, value: 100}\n  output_tokens: {dist: constant, value: 20}\n",
    "  sources:\n    - name: chat\n      rate_per_s: 5\n"
    "      prompt_tokens: {dist: constant, value: 100}\n"
    "      output_tokens: {dist: constant, value: 20}\n")


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@dataclass
class Case:
    argv: list                                   # {d} = the temporary directory
    files: dict = field(default_factory=dict)    # name -> str | bytes

    def __or__(self, more: dict) -> "Case":
        """The same command with more files."""
        return Case(self.argv, {**self.files, **more})


def scen(text, *args) -> Case:
    return Case(["validate", "{d}/s.yaml", *args], {"s.yaml": text})


CASES: dict[str, Case] = {
    "rel-python-object-tag": scen(edit("seed: 3", 'seed: !!python/object/apply:os.system '
                                                  '["touch pwned"]')),
    "rel-python-name-tag": scen(edit("model: llama-3.1-8b", "model: !!python/name:os.system")),
    "rel-float-for-int": scen(edit("replicas: 1", "replicas: 2.5")),
    "rel-utilization-range": scen(edit("replicas: 1", "replicas: 1\n      memory: "
                                                      "{gpu_memory_utilization: 1.5}")),
    "rel-misspelt-section": scen(BASE + "simulaton:\n  duration_s: 5\n"),
    "rel-set-misspelt": scen(BASE, "--set", "simulation.duraton_s=5"),
    "rel-set-through-scalar": scen(BASE, "--set", "workload.num_requests.x=1"),
    "rel-sources-endless": scen(SOURCES),
    "rel-not-utf8": Case(["validate", "{d}/s.yaml"], {"s.yaml": b"name: \xff\xfe\n"}),
    "rel-directory": Case(["validate", "{d}"]),
    "rel-trace-empty": scen(TRACE % "format: azure2023,") | {"bad.csv": ""},
    "rel-trace-header-only": scen(TRACE % "format: azure2023,") | {"bad.csv": AZURE_HEADER},
    "rel-trace-wrong-format": scen(TRACE % "format: azure2023,") | {"bad.csv": "a,b,c\n1,2,3\n"},
    "rel-trace-undetectable": scen(TRACE % "") | {"bad.csv": "a,b,c\n1,2,3\n"},
    "rel-trace-bad-row": Case(["run", "{d}/s.yaml", "--no-progress"],
                              {"s.yaml": TRACE % "format: azure2023,", "bad.csv": BAD_ROW}),
    "rel-prompt-over-context": Case(["run", "{d}/s.yaml", "--no-progress"],
                                    {"s.yaml": edit("value: 100", "value: 200000")}),
    "rel-prompt-over-kv": Case(["run", "{d}/s.yaml", "--no-progress"], {"s.yaml": edit(
        "value: 100", "value: 100000", edit("hardware: h100-sxm", "hardware: l4"))}),
    "rel-cli-run-missing": Case(["run", "{d}/missing.yaml"]),
    "rel-cli-run-bad-choice": Case(["run", "{d}/s.yaml", "--format", "xml"], {"s.yaml": BASE}),
    "rel-cli-run-bad-set": Case(["run", "{d}/s.yaml", "--set", "nonsense"], {"s.yaml": BASE}),
    "rel-cli-roofline-unknown-model": Case(["roofline", "--model", "nope", "--hardware",
                                            "h100-sxm"]),
    "rel-cli-roofline-close-model": Case(["roofline", "--model", "llama-3.1-8bx", "--hardware",
                                          "h100-sxm"]),
    "rel-cli-roofline-close-hardware": Case(["roofline", "--model", "llama-3.1-8b",
                                             "--hardware", "h100-sx"]),
    "rel-cli-roofline-bad-tp": Case(["roofline", "--model", "llama-3.1-8b", "--hardware",
                                     "h100-sxm", "--tp", "0"]),
    "rel-cli-roofline-over-context": Case(["roofline", "--model", "llama-3.1-8b", "--hardware",
                                           "h100-sxm", "--prompt-len", "200000"]),
    "rel-cli-roofline-missing-flags": Case(["roofline"]),
    "rel-cli-trace-missing": Case(["trace", "stats", "{d}/missing.csv"]),
    "rel-cli-trace-columns": Case(["trace", "stats", "{d}/x.csv", "--format", "csv"],
                                  {"x.csv": "a,b\n1,2\n"}),
    "rel-cli-unknown-command": Case(["nope"]),
    "rel-cli-catalog-kind": Case(["catalog", "nope"]),
    "rel-cli-validate-no-arg": Case(["validate"]),
}


def _doc_rows() -> dict[str, tuple[str, str, int]]:
    """case id → (stream, text, exit code) from the second table of docs/bad_input.md."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| (rel-[a-z0-9-]+) \|.*\| (stdout|stderr) \| `(.+)` \| (\d) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), int(m.group(4)))
    return rows


DOC_ROWS = _doc_rows()


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``llmsim ARGV`` run in-process (argparse exits too)."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_every_documented_row_is_a_case_and_back():
    assert len(DOC_ROWS) >= 30
    assert sorted(DOC_ROWS) == sorted(CASES)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_input_row(case_id, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = CASES[case_id]
    for name, content in case.files.items():
        p = tmp_path / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    argv = [a.replace("{d}", str(tmp_path)) for a in case.argv]
    rc, out, err = cli(argv, capsys)
    stream, text, code = DOC_ROWS[case_id]
    assert rc == code, (rc, out, err)
    assert text in (out if stream == "stdout" else err), (out, err)
    assert "Traceback" not in out + err
    if code == 2:
        assert err.strip(), "an error must be explained on stderr"
    assert not (tmp_path / "pwned").exists()   # no YAML tag ever runs code


def test_run_time_rejections_are_in_the_request_table(tmp_path):
    """Prompts that can be longer than the context (uniform up to 200,000 tokens on a
    131,072-token model) pass validation; the over-long ones are rejected on arrival, each with
    its reason, and the others are served (sarathi: chunked prefill, so no budget limit)."""
    from llmsim.api import simulate
    p = tmp_path / "s.yaml"
    p.write_text(edit("{dist: constant, value: 100}", "{dist: uniform, min: 100, max: 200000}",
                      edit("replicas: 1", "replicas: 1\n      scheduler: {policy: sarathi}")))
    res = simulate(p)
    df = res.requests
    too_long = df.num_prompt_tokens + 20 > 131072
    assert too_long.any() and (~too_long).any()
    rej = df[too_long]
    assert (rej.status == "rejected").all()
    assert rej.reason.str.contains("exceeds the model's context length 131072").all()
    assert (rej.finish_s == rej.arrival_s).all()      # rejected on arrival
    assert (df[~too_long].status == "finished").all()
    assert any("rejected" in n for n in res.summary["notes"])


# ----------------------------------------------------------------------------- every command
SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)

#: argv per subcommand naming an input file that does not exist ("{m}" = the missing path)
MISSING = {
    "run": ["run", "{m}.yaml"],
    "validate": ["validate", "{m}.yaml"],
    "plan": ["plan", "{m}.yaml"],
    "sweep": ["sweep", "{m}.yaml", "--grid", "seed=1,2"],
    "roofline": ["roofline", "--model", "{m}.yaml", "--hardware", "h100-sxm"],
    "calibrate": ["calibrate", "{m}.csv", "--hardware", "h100-sxm"],
    "validate-cost": ["validate-cost", "{m}.csv"],
    "trace": ["trace", "stats", "{m}.csv"],
    "catalog": ["catalog", "{m}"],
}


def test_every_subcommand_has_a_missing_file_case():
    assert set(SUBCOMMANDS) <= set(MISSING), set(SUBCOMMANDS) - set(MISSING)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_rejects_an_unknown_flag(command, capsys):
    rc, out, err = cli([command, "--no-such-flag"], capsys)
    assert rc == 2
    assert "error:" in err and "Traceback" not in out + err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_rejects_a_missing_input_file(command, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    rc, out, err = cli([a.replace("{m}", missing) for a in MISSING[command]], capsys)
    assert rc == 2, (out, err)
    assert "Traceback" not in out + err
    # names the file (commands that take no file say what they accept instead)
    assert missing in err or "invalid choice" in err, err


# ----------------------------------------------------------------------------- YAML safety
@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system [\"touch {d}/pwned\"]",
    "!!python/object/new:subprocess.Popen [[\"touch\", \"{d}/pwned\"]]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:collections.OrderedDict {}",
])
@pytest.mark.parametrize("where", ["file", "set"])
def test_python_yaml_tags_never_construct_objects(tag, where, tmp_path, capsys):
    """Scenario files and --set values are parsed with a SafeLoader: Python tags are a clean
    bad-input error (exit 2) and nothing runs."""
    tag = tag.replace("{d}", str(tmp_path))
    p = tmp_path / "s.yaml"
    if where == "file":
        p.write_text(edit("seed: 3", f"seed: {tag}"))
        argv = ["validate", str(p)]
    else:
        p.write_text(BASE)
        argv = ["validate", str(p), "--set", f"seed={tag}"]
    rc, out, err = cli(argv, capsys)
    assert rc == 2, (out, err)
    assert "could not determine a constructor for the tag" in err
    assert "Traceback" not in err
    assert not (tmp_path / "pwned").exists()


def test_python_api_rejects_non_data_scenarios():
    """The Python API takes a path or a mapping of plain data; anything else is bad input."""
    from llmsim.errors import InputError
    from llmsim.scenario import load_scenario
    with pytest.raises(InputError, match="a scenario is a YAML file path or a mapping"):
        load_scenario(42)


# ----------------------------------------------------------------------------- odd inputs
def _fault_trace(tmp_path, content):
    from llmsim.engine.faults import read_fault_trace
    p = tmp_path / "f.csv"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return lambda: read_fault_trace(p, ["h"])


@pytest.mark.parametrize("content, line, key, text", [
    ("time_s,pool,cnt\n0.5,h,5\n", 1, "cnt", "unknown column"),        # count 5 was dropped
    ("time_s,pool,count,count\n0.5,h,1,5\n", 1, "count", "column named twice"),
    ("time_s,pool,count\n0.5,h,1,7\n", 2, None, "row has 4 fields, the header 3"),
    ("# c\ntime_s,pool\n\n\n0.5,x\n", 5, "pool", "unknown pool"),     # was blamed on line 2
    (b"time_s,pool\n0.5,h\xff\n", 2, "trace", "not UTF-8"),            # was a traceback
])
def test_fault_trace_odd_files(tmp_path, content, line, key, text):
    from llmsim.errors import InputError
    with pytest.raises(InputError) as ei:
        _fault_trace(tmp_path, content)()
    [p] = ei.value.problems
    assert (p.line, p.key) == (line, key) and text in p.message


def test_fault_trace_with_a_byte_order_mark_reads(tmp_path):
    assert _fault_trace(tmp_path, "\ufefftime_s,pool\n0.5,h\n")() == [(0.5, "h", 1)]


def test_run_with_a_trace_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(TRACE % "format: azure2023,")
    (tmp_path / "bad.csv").write_bytes(AZURE_HEADER.encode() + b"2023-11-16 18:15:46.0,3\xff,2\n")
    rc, out, err = cli(["run", str(tmp_path / "s.yaml"), "--no-progress"], capsys)
    assert rc == 2 and "Traceback" not in out + err
    assert f"{tmp_path / 'bad.csv'}:2" in err and "not UTF-8" in err


def test_sweep_over_the_seed_is_bad_input(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(BASE)
    rc, out, err = cli(["sweep", str(tmp_path / "s.yaml"), "--grid", "seed=1,2",
                        "--no-progress"], capsys)
    assert rc == 2 and "Traceback" not in out + err     # was a pandas ValueError traceback
    assert "--seeds" in err


@pytest.mark.parametrize("how", ["tiny interval", "trace gap"])
def test_a_timeline_that_would_fill_memory_is_bad_input(how, tmp_path, capsys, monkeypatch):
    # the timeline keeps one row per replica per interval, idle gaps included: a 1e-9 s
    # interval, or a trace whose second request comes 3e4 years after the first, used to hang
    # the run or exhaust memory. Here at a 1,000-row limit (1M in use), so that without the
    # check the run ends (and the test fails) instead of hanging
    import llmsim.engine.replica as replica
    monkeypatch.setattr(replica, "MAX_TIMELINE_CATCH_UP", 1000)
    if how == "tiny interval":
        (tmp_path / "s.yaml").write_text(BASE)
        args = ["--set", "simulation.timeline_interval_s=1e-5", "--set", "workload.num_requests=5"]
    else:
        (tmp_path / "s.yaml").write_text(TRACE.replace("bad.csv", "t.jsonl") % "format: mooncake,")
        (tmp_path / "t.jsonl").write_text(
            '{"timestamp": 0, "input_length": 100, "output_length": 5}\n'
            '{"timestamp": 5000000, "input_length": 100, "output_length": 5}\n')
        args = []
    rc, out, err = cli(["run", str(tmp_path / "s.yaml"), "--no-progress", *args], capsys)
    assert rc == 2 and "Traceback" not in out + err
    assert "key 'simulation.timeline_interval_s'" in err and "raise timeline_interval_s" in err
    assert "more than 1,000" in err


def test_sweep_api_over_the_seed_is_bad_input(tmp_path):
    from llmsim import sweep
    from llmsim.errors import InputError
    (tmp_path / "s.yaml").write_text(BASE)
    with pytest.raises(InputError, match="the seed cannot be a grid key"):
        sweep(str(tmp_path / "s.yaml"), {"seed": [1, 2]})


def test_a_seed_grid_is_refused_before_its_points_load(tmp_path, monkeypatch):
    """The base scenario's errors come first; then the seed key is refused without loading
    the grid's points (a large grid would load for nothing)."""
    import llmsim.scenario as scenario_module
    from llmsim import sweep
    from llmsim.errors import InputError
    (tmp_path / "s.yaml").write_text(BASE)
    loads = []
    real = scenario_module.load_scenario
    monkeypatch.setattr(scenario_module, "load_scenario",
                        lambda *a, **k: loads.append(a) or real(*a, **k))
    with pytest.raises(InputError, match="the seed cannot be a grid key"):
        sweep(str(tmp_path / "s.yaml"), {"seed": list(range(50)), "workload.num_requests": [5]})
    assert len(loads) == 1          # the base alone
    with pytest.raises(InputError, match="model"):      # a bad base is reported first
        sweep(str(tmp_path / "s.yaml"), {"seed": [1]}, overrides=["model=no-such-model"])


def test_a_sweep_point_with_a_nan_value_says_so(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(BASE)
    rc, out, err = cli(["sweep", str(tmp_path / "s.yaml"), "--grid",
                        "workload.arrival.rate_per_s=.nan,5", "--no-progress"], capsys)
    assert rc == 0 and "Traceback" not in out + err     # a sweep survives a failing point
    assert "rate_per_s=NaN" in err and "not a finite number" in err
