"""Arrival processes: rates, variability and shapes against closed forms."""
import math

import numpy as np
import pytest

from llmsim.workload import config as C
from llmsim.workload.arrivals import (RateCurve, arrival_chunks, weibull_cv,
                                      weibull_shape_for_cv)


def times(cfg, n=None, until=None, seed=1):
    out, total = [], 0
    for c in arrival_chunks(cfg, np.random.default_rng(seed)):
        out.append(c)
        total += c.size
        if (n is not None and total >= n) or (until is not None and c[-1] >= until):
            break
    t = np.concatenate(out)
    if n is not None:
        t = t[:n]
    if until is not None:
        t = t[t < until]
    return t


def cv(t):
    g = np.diff(np.concatenate(([0.0], t)))
    return g.std() / g.mean(), g.mean()


def test_poisson_rate_and_cv():
    t = times(C.PoissonArrival(process="poisson", rate_per_s=20.0), n=200_000)
    c, m = cv(t)
    assert m == pytest.approx(0.05, rel=0.01)
    assert c == pytest.approx(1.0, abs=0.015)
    assert np.all(np.diff(t) >= 0)


@pytest.mark.parametrize("target", [0.5, 3.0])
def test_gamma_cv(target):
    t = times(C.GammaArrival(process="gamma", rate_per_s=4.0, cv=target), n=200_000)
    c, m = cv(t)
    assert m == pytest.approx(0.25, rel=0.03)
    assert c == pytest.approx(target, rel=0.05)


def test_weibull_cv_formula_and_solver():
    # k = 0.5: CV² = Γ(5)/Γ(3)² − 1 = 24/4 − 1 = 5
    assert weibull_cv(0.5) == pytest.approx(math.sqrt(5), rel=1e-12)
    assert weibull_cv(1.0) == pytest.approx(1.0, rel=1e-12)      # exponential
    assert weibull_shape_for_cv(math.sqrt(5)) == pytest.approx(0.5, rel=1e-9)
    t = times(C.WeibullArrival(process="weibull", rate_per_s=10.0, cv=2.0), n=300_000)
    c, m = cv(t)
    assert m == pytest.approx(0.1, rel=0.03)
    assert c == pytest.approx(2.0, rel=0.06)


def test_constant_is_exact():
    t = times(C.ConstantArrival(process="constant", rate_per_s=4.0), n=10_000)
    assert np.array_equal(t, np.arange(10_000) / 4.0)


def test_on_off_fixed():
    cfg = C.OnOffArrival(process="on_off", on_rate_per_s=10.0, on_s=10.0, off_s=30.0)
    t = times(cfg, until=40_000)
    phase = np.mod(t, 40.0)
    assert np.all(phase < 10.0)                      # nothing in the off periods
    assert t.size == pytest.approx(1000 * 10 * 10, rel=0.03)   # 1000 on-periods x 100
    assert np.all(np.diff(t) >= 0)


def test_on_off_exponential_mean_rate():
    cfg = C.OnOffArrival(process="on_off", on_rate_per_s=8.0, off_rate_per_s=2.0, on_s=5.0,
                         off_s=15.0, durations="exponential")
    t = times(cfg, until=100_000)
    # long-run rate = (8*5 + 2*15) / 20 = 3.5
    assert t.size / 100_000 == pytest.approx(3.5, rel=0.04)


def test_piecewise_step_and_linear():
    step = C.PiecewiseArrival(process="piecewise", points=[[0, 1.0], [1000, 10.0]],
                              interpolation="step")
    t = times(step, until=2000)
    assert np.sum(t < 1000) == pytest.approx(1000, rel=0.08)
    assert np.sum(t >= 1000) == pytest.approx(10_000, rel=0.03)
    lin = C.PiecewiseArrival(process="piecewise", points=[[0, 0.0], [1000, 20.0]])
    t = times(lin, until=1000, seed=3)
    # rate rises linearly: expected count in [0, 500) = 2500, in [500, 1000) = 7500
    assert np.sum(t < 500) == pytest.approx(2500, rel=0.05)
    assert np.sum(t >= 500) == pytest.approx(7500, rel=0.03)


def test_piecewise_ending_at_zero_is_finite_and_periodic_repeats():
    cfg = C.PiecewiseArrival(process="piecewise", points=[[0, 5.0], [100, 0.0]], interpolation="step")
    t = np.concatenate(list(arrival_chunks(cfg, np.random.default_rng(0))))   # terminates
    assert t.max() < 100 and t.size == pytest.approx(500, rel=0.2)
    per = C.PiecewiseArrival(process="piecewise", points=[[0, 5.0], [100, 0.0]],
                             interpolation="step", period_s=200)
    t = times(per, until=20_000)
    assert np.all(np.mod(t, 200) < 100)
    assert t.size == pytest.approx(100 * 500, rel=0.03)


def test_diurnal_peak_and_trough():
    cfg = C.DiurnalArrival(process="diurnal", mean_rate_per_s=10.0, amplitude=0.8,
                           period_s=1000.0, peak_s=0.0)
    t = times(cfg, until=100_000)
    assert t.size / 100_000 == pytest.approx(10.0, rel=0.02)
    phase = np.mod(t, 1000.0)
    near_peak = np.sum((phase < 50) | (phase >= 950))       # 100 s around the peak
    near_trough = np.sum((phase >= 450) & (phase < 550))
    # integral of 10(1+0.8cos) over ±50 s around peak ≈ 100*10*(1+0.8*0.9836) = 1786.9 / period
    assert near_peak / 100 == pytest.approx(1786.9, rel=0.05)
    assert near_trough / 100 == pytest.approx(100 * 10 * (1 - 0.8 * 0.98363), rel=0.08)
    curve = RateCurve(cfg)
    assert curve.mean_rate(1000.0) == pytest.approx(10.0, rel=1e-6)


def test_same_seed_same_times():
    cfg = C.GammaArrival(process="gamma", rate_per_s=3.0, cv=2.0)
    assert np.array_equal(times(cfg, n=5000, seed=7), times(cfg, n=5000, seed=7))
    assert not np.array_equal(times(cfg, n=5000, seed=7), times(cfg, n=5000, seed=8))
