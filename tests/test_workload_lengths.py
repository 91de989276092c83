"""Length distributions: parametrisation, rounding, truncation counts, copula correlation."""
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm, spearmanr

from llmsim.errors import InputError
from llmsim.workload import config as C
from llmsim.workload.items import TRUNC_OUTPUT, TRUNC_PROMPT
from llmsim.workload.lengths import PairSampler, make_marginal, make_pair_sampler

N = 200_000


def draw(d: dict, n=N, seed=0, base=Path(".")):
    m = make_marginal(_dist(d), base, "x")
    return m.draw(np.random.default_rng(seed), n)


def _dist(d):
    from pydantic import TypeAdapter
    return TypeAdapter(C.LengthDist).validate_python(d)


def test_lognormal_mean_and_median_parametrisation():
    x, out = draw({"dist": "lognormal", "mean": 1000, "sigma": 0.8})
    assert x.dtype == np.int64 and x.min() >= 1
    # mean of the lengths; sd of the sample mean ≈ 1000·sqrt(e^0.64 − 1)/sqrt(N) ≈ 2
    assert x.mean() == pytest.approx(1000, abs=8)
    assert not out.any()
    y, _ = draw({"dist": "lognormal", "median": 500, "sigma": 1.2})
    assert np.median(y) == pytest.approx(500, rel=0.02)


def test_clip_counts_match_the_tail_probability():
    mu = math.log(1000) - 0.8 ** 2 / 2
    x, out = draw({"dist": "lognormal", "mean": 1000, "sigma": 0.8, "max": 2000})
    # after rint, values above 2000 are those with raw value >= 2000.5
    p_tail = 1 - norm.cdf((math.log(2000.5) - mu) / 0.8)
    assert out.mean() == pytest.approx(p_tail, abs=0.004)
    assert x.max() == 2000
    assert np.sum(x == 2000) >= out.sum()        # the clipped mass sits at the bound


def test_resample_keeps_shape_inside_bounds():
    x, out = draw({"dist": "lognormal", "mean": 1000, "sigma": 0.8, "max": 2000,
                   "truncate": "resample"})
    clipped, _ = draw({"dist": "lognormal", "mean": 1000, "sigma": 0.8, "max": 2000})
    assert x.max() <= 2000
    # no point mass at the bound: P(X = 2000) is tiny when redrawn, large when clipped
    assert np.sum(x == 2000) < 50 < np.sum(clipped == 2000)
    assert out.mean() == pytest.approx(0.1, abs=0.02)


def test_resample_impossible_bounds_is_an_input_error():
    with pytest.raises(InputError, match="exclude almost all"):
        draw({"dist": "normal", "mean": 10, "std": 0.1, "min": 500, "truncate": "resample"}, n=10)


def test_rounding_half_to_even_and_lower_bound_one():
    x, out = draw({"dist": "normal", "mean": 2.5, "std": 0}, n=10)
    assert np.all(x == 2) and not out.any()          # rint(2.5) = 2
    x, _ = draw({"dist": "normal", "mean": 3.5, "std": 0}, n=10)
    assert np.all(x == 4)
    x, out = draw({"dist": "normal", "mean": 1, "std": 3})
    assert x.min() == 1
    # P(rint(X) < 1) = P(X < 0.5) = Φ(-0.5/3)
    assert out.mean() == pytest.approx(norm.cdf(-0.5 / 3), abs=0.004)


def test_uniform_inclusive_and_constant():
    x, _ = draw({"dist": "uniform", "min": 3, "max": 5})
    assert set(np.unique(x)) == {3, 4, 5}
    assert np.bincount(x)[3:] / N == pytest.approx([1 / 3] * 3, abs=0.005)
    x, _ = draw({"dist": "constant", "value": 77}, n=5)
    assert x.tolist() == [77] * 5


def test_empirical_values_weights_and_file(tmp_path):
    x, _ = draw({"dist": "empirical", "values": [10, 20, 30], "weights": [1, 0, 3]})
    f = np.bincount(x, minlength=31)
    assert f[20] == 0
    assert f[30] / N == pytest.approx(0.75, abs=0.005)
    p = tmp_path / "lens.csv"
    p.write_text("a,b\n5,1\n7,1\n7,1\n9,1\n")
    x, _ = draw({"dist": "empirical", "path": "lens.csv", "column": "a"}, base=tmp_path)
    assert np.bincount(x, minlength=10)[[5, 7, 9]] / N == pytest.approx([0.25, 0.5, 0.25], abs=0.005)
    p.write_text("a,b\n5,1\n-7,1\n")
    with pytest.raises(InputError) as ei:
        draw({"dist": "empirical", "path": "lens.csv", "column": "a"}, base=tmp_path)
    assert ei.value.problems[0].line == 3 and ei.value.problems[0].key == "a"


def test_correlated_copula():
    cfg = C.CorrelatedLengths(dist="correlated", correlation=0.7,
                              prompt_tokens={"dist": "lognormal", "mean": 2000, "sigma": 1.0},
                              output_tokens={"dist": "lognormal", "mean": 200, "sigma": 0.5})
    part = C.WorkloadConfig(num_requests=1, arrival={"process": "poisson", "rate_per_s": 1},
                            lengths=cfg)
    s = make_pair_sampler(part, np.random.default_rng(0), Path("."), "w")
    p, o, flags = s.draw(N)
    assert np.corrcoef(np.log(p), np.log(o))[0, 1] == pytest.approx(0.7, abs=0.01)
    assert p.mean() == pytest.approx(2000, rel=0.02) and o.mean() == pytest.approx(200, rel=0.02)
    # uniform marginal through the copula keeps its marginal and gets the rank correlation
    # ρ_s = 6/π · asin(ρ/2) of a Gaussian copula
    s2 = PairSampler(make_marginal(_dist({"dist": "uniform", "min": 1, "max": 1000}), Path("."), "p"),
                     make_marginal(_dist({"dist": "normal", "mean": 500, "std": 100}), Path("."), "o"),
                     np.random.default_rng(1), correlation=-0.5)
    p, o, _ = s2.draw(N)
    assert p.min() == 1 and p.max() == 1000 and p.mean() == pytest.approx(500.5, rel=0.01)
    assert spearmanr(p, o)[0] == pytest.approx(6 / math.pi * math.asin(-0.25), abs=0.01)


def test_pair_flags():
    s = PairSampler(make_marginal(_dist({"dist": "constant", "value": 5}), Path("."), "p"),
                    make_marginal(_dist({"dist": "uniform", "min": 1, "max": 3}), Path("."), "o"),
                    np.random.default_rng(0))
    p, o, fl = s.draw(1000)
    assert not fl.any()
    s = PairSampler(make_marginal(_dist({"dist": "normal", "mean": 100, "std": 50, "max": 100}), Path("."), "p"),
                    make_marginal(_dist({"dist": "normal", "mean": 10, "std": 0, "min": 20}), Path("."), "o"),
                    np.random.default_rng(0))
    p, o, fl = s.draw(10_000)
    assert np.all(fl & TRUNC_OUTPUT) and np.all(o == 20)
    assert np.mean((fl & TRUNC_PROMPT) > 0) == pytest.approx(0.5, abs=0.02)
