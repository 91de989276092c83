"""Validation of the workload: section (pydantic models in llmsim.workload.config)."""
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from llmsim.workload import WorkloadConfig

REPO = Path(__file__).resolve().parents[1]

P = {"dist": "constant", "value": 100}
O = {"dist": "constant", "value": 10}


def synth(**kw):
    d = {"num_requests": 10, "arrival": {"process": "poisson", "rate_per_s": 1.0},
         "prompt_tokens": P, "output_tokens": O}
    d.update(kw)
    return d


def err(data) -> str:
    with pytest.raises(ValidationError) as ei:
        WorkloadConfig.model_validate(data)
    return str(ei.value)


def test_quickstart_workload_validates():
    d = yaml.safe_load(open(REPO / "scenarios" / "quickstart.yaml"))["workload"]
    cfg = WorkloadConfig.model_validate(d)
    assert cfg.num_requests == 3000
    assert cfg.arrival.rate_per_s == 20
    assert cfg.prompt_tokens.mean == 1000 and cfg.prompt_tokens.max == 8000
    assert cfg.output_tokens.sigma == 0.8


@pytest.mark.parametrize("rate", [0, -5])
def test_rate_must_be_positive(rate):
    msg = err(synth(arrival={"process": "poisson", "rate_per_s": rate}))
    assert "arrival.poisson.rate_per_s" in msg


def test_negative_sigma_and_min_over_max():
    assert "prompt_tokens.lognormal.sigma" in err(
        synth(prompt_tokens={"dist": "lognormal", "mean": 10, "sigma": -0.1}))
    assert "min (50) must be <= max (20)" in err(
        synth(prompt_tokens={"dist": "normal", "mean": 10, "std": 1, "min": 50, "max": 20}))
    assert "min (9) must be <= max (3)" in err(
        synth(output_tokens={"dist": "uniform", "min": 9, "max": 3}))
    assert "prompt_tokens.normal.min" in err(
        synth(prompt_tokens={"dist": "normal", "mean": 10, "std": 1, "min": 0}))
    assert "prompt_tokens.constant.value" in err(synth(prompt_tokens={"dist": "constant", "value": 0}))


def test_synthetic_needs_a_limit_but_trace_does_not():
    d = synth()
    del d["num_requests"]
    assert "never end" in err(d)
    WorkloadConfig.model_validate({**d, "duration_s": 60})
    WorkloadConfig.model_validate({"trace": {"path": "x.csv"}})


def test_extra_keys_and_unknown_variants_are_rejected():
    assert "Extra inputs are not permitted" in err(synth(foo=1))
    assert "arrival.poisson.cv" in err(synth(arrival={"process": "poisson", "rate_per_s": 1, "cv": 2}))
    msg = err(synth(arrival={"process": "poison", "rate_per_s": 1}))
    assert "poison" in msg and "arrival" in msg
    msg = err({"trace": {"path": "x", "format": "azure"}})
    assert "azure" in msg and "trace" in msg
    assert "trace.azure2023.models" in err({"trace": {"path": "x", "format": "azure2023",
                                                      "models": ["GPT-4"]}})


def test_trace_transform_rules():
    assert "has no timestamps" in err({"trace": {"path": "x", "format": "lengths"}})
    assert "has no timestamps" in err({"trace": {"path": "x", "format": "csv",
                                                 "columns": {"prompt_tokens": "a", "output_tokens": "b"}}})
    assert "at most one of 'speedup' and 'rate_per_s'" in err(
        {"trace": {"path": "x", "speedup": 2, "rate_per_s": 3}})
    assert "cannot be combined" in err(
        {"trace": {"path": "x", "speedup": 2, "arrival": {"process": "poisson", "rate_per_s": 1}}})
    assert "sample_fraction" in err({"trace": {"path": "x", "sample_fraction": 1.5}})
    assert "window end_s must be > start_s" in err({"trace": {"path": "x", "window": {"start_s": 5, "end_s": 5}}})
    assert "think_time_s" in err({"trace": {"path": "x", "format": "sharegpt", "turns": "all",
                                            "arrival": {"process": "poisson", "rate_per_s": 1}}})


def test_sources_rules():
    src = lambda name, **kw: {"name": name, "prompt_tokens": P, "output_tokens": O, **kw}  # noqa: E731
    arr = {"process": "poisson", "rate_per_s": 10}
    ok = WorkloadConfig.model_validate({"num_requests": 5, "arrival": arr, "sources": [
        src("a", share=0.25, priority=1, slo={"ttft_s": 0.5}), src("b", share=0.75)]})
    assert ok.sources[0].slo.ttft_s == 0.5
    assert "sum to 1" in err({"num_requests": 5, "arrival": arr,
                              "sources": [src("a", share=0.5), src("b", share=0.2)]})
    assert "unique" in err({"num_requests": 5, "sources": [src("a", rate_per_s=1), src("a", rate_per_s=1)]})
    assert "exactly one of" in err({"num_requests": 5, "sources": [src("a")]})
    assert "give workload.arrival" in err({"num_requests": 5, "sources": [src("a", share=1.0)]})
    assert "slo.ttft_s" in err({"num_requests": 5, "sources": [src("a", rate_per_s=1, slo={"ttft_s": -1})]})
    assert "sources.0.slo.p99" in err({"num_requests": 5, "sources": [src("a", rate_per_s=1, slo={"p99": 1})]})
    # a trace-only mix runs to the end of the traces: no limit needed
    WorkloadConfig.model_validate({"sources": [{"name": "t", "trace": {"path": "x.csv"}}]})
    assert "never end" in err({"sources": [{"name": "t", "trace": {"path": "x.csv"}},
                                           src("s", rate_per_s=1)]})


def test_weibull_and_curves():
    assert "exactly one of 'shape' or 'cv'" in err(synth(arrival={"process": "weibull", "rate_per_s": 1}))
    assert "strictly increasing" in err(synth(arrival={"process": "piecewise",
                                                       "points": [[0, 1], [5, 2], [5, 3]]}))
    assert "at t = 0" in err(synth(arrival={"process": "piecewise", "points": [[1, 1]]}))
    assert "amplitude" in err(synth(arrival={"process": "diurnal", "mean_rate_per_s": 1, "amplitude": 2}))


def test_lengths_shapes():
    assert "not both" in err(synth(lengths={"dist": "correlated", "correlation": 0.5,
                                            "prompt_tokens": P, "output_tokens": O}))
    d = synth(lengths={"dist": "correlated", "correlation": 0.5, "prompt_tokens": P, "output_tokens": O})
    del d["prompt_tokens"], d["output_tokens"]
    WorkloadConfig.model_validate(d)
    assert "exactly one of 'mean' or 'median'" in err(
        synth(prompt_tokens={"dist": "lognormal", "sigma": 1}))


def test_simulation_duration_in_context_ends_synthetic_arrivals():
    d = synth()
    del d["num_requests"]
    cfg = WorkloadConfig.model_validate(d, context={"simulation_duration_s": 60.0})
    assert cfg.num_requests is None and cfg.duration_s is None
    with pytest.raises(ValidationError, match="never end"):
        WorkloadConfig.model_validate(d, context={"simulation_duration_s": None})


@pytest.mark.parametrize("data, fragment", [
    (synth(num_requests="10"), "num_requests"),                  # text is not a number
    (synth(num_requests=True), "num_requests"),
    (synth(num_requests=10.0), "num_requests"),
    (synth(arrival={"process": "poisson", "rate_per_s": "5"}), "rate_per_s"),
    (synth(arrival={"process": "poisson", "rate_per_s": float("inf")}), "finite"),
    (synth(duration_s=float("inf")), "finite"),
    (synth(prompt_tokens={"dist": "lognormal", "mean": float("inf"), "sigma": 1}), "finite"),
    (synth(prompt_tokens={"dist": "empirical", "values": [1, 2], "weights": [float("inf"), 1]}),
     "finite"),
    (synth(arrival={"process": "piecewise", "points": [[0, 1], [float("inf"), 2]]}), "finite"),
    (synth(sessions={"turns": 2, "think_time_s": float("inf")}), "finite"),
])
def test_workload_values_are_strict_and_finite(data, fragment):
    """As in the rest of the scenario: no text-to-number or bool coercion, no .inf/.nan (they
    were accepted here and crashed or hung the run)."""
    assert fragment in err(data)


@pytest.mark.parametrize("data", [
    synth(prompt_tokens={"dist": "uniform", "min": 1, "max": 10 ** 23}),
    synth(prompt_tokens={"dist": "empirical", "values": [1, 10 ** 23]}),
    synth(prompt_tokens={"dist": "constant", "value": 2 ** 63}),
    synth(sessions={"turns": 10 ** 23, "think_time_s": 1}),
    synth(sessions={"turns": 2, "think_time_s": 1, "shared_prefix_tokens": 10 ** 23}),
])
def test_token_settings_are_capped(data):
    assert "less than or equal to 100000000" in err(data)


@pytest.mark.parametrize("cv", [1e-300, 1e300])
def test_gamma_cv_is_bounded(cv):
    """cv = 1e-300 divided by zero and 1e300 overflowed while drawing arrivals."""
    assert "cv" in err(synth(arrival={"process": "gamma", "rate_per_s": 1.0, "cv": cv}))


def test_piecewise_points_from_yaml_lists_still_validate():
    cfg = WorkloadConfig.model_validate(synth(arrival={"process": "piecewise",
                                                       "points": [[0, 1], [10, 2.5]]}))
    assert cfg.arrival.points == [(0.0, 1.0), (10.0, 2.5)]


def test_unbounded_lengths_stop_at_the_token_cap_and_are_counted():
    """A lognormal without max and a huge mean drew values past int64 (garbage lengths, then an
    IndexError); now they are bounded at 100,000,000 and flagged as truncated."""
    import numpy as np

    from llmsim.workload.items import TRUNC_PROMPT
    from llmsim.workload.lengths import PairSampler, make_marginal
    cfg = WorkloadConfig.model_validate(synth(
        prompt_tokens={"dist": "lognormal", "mean": 1e300, "sigma": 1}))
    m = make_marginal(cfg.prompt_tokens, Path("."), "prompt_tokens")
    p, o, flags = PairSampler(m, make_marginal(cfg.output_tokens, Path("."), "o"),
                              np.random.default_rng(0)).draw(50)
    assert (p == 100_000_000).all() and (flags & TRUNC_PROMPT).all()
    e = make_marginal(WorkloadConfig.model_validate(synth(prompt_tokens={
        "dist": "empirical", "values": [1, 2], "weights": [1e308, 1e308]})).prompt_tokens,
        Path("."), "p")
    assert set(e.draw(np.random.default_rng(0), 100)[0].tolist()) == {1, 2}
