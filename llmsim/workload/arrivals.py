"""Arrival processes: ``arrival_chunks(cfg, rng)`` yields numpy arrays of absolute arrival times
(seconds, non-decreasing across chunks), generated ``CHUNK`` at a time; the stream is endless
except for a piecewise curve whose rate is 0 after its last point.

Conventions: renewal processes (poisson, gamma, weibull) place the first arrival one gap after
t = 0; ``constant`` places arrivals at k / rate for k = 0, 1, 2, …; on/off and rate curves are
Poisson within their rate, starting at t = 0. Rate curves are sampled by thinning
(Lewis & Shedler 1979): candidates from a Poisson process at the curve's maximum rate, each kept
with probability rate(t) / max rate.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln

from llmsim.workload import config as C

CHUNK = 4096


def weibull_cv(shape: float) -> float:
    """Coefficient of variation of a Weibull distribution of shape k."""
    g1 = gammaln(1 + 1 / shape)
    g2 = gammaln(1 + 2 / shape)
    return math.sqrt(max(math.exp(g2 - 2 * g1) - 1, 0.0))


def weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k whose CV is ``cv`` (CV decreases monotonically in k)."""
    return brentq(lambda k: weibull_cv(k) - cv, 0.05, 200.0, xtol=1e-12)


def _renewal(gap_fn, rng) -> Iterator[np.ndarray]:
    t0 = 0.0
    while True:
        t = t0 + np.cumsum(gap_fn(rng, CHUNK))
        t0 = float(t[-1])
        yield t


def _constant(rate: float) -> Iterator[np.ndarray]:
    k = 0
    while True:
        yield (k + np.arange(CHUNK, dtype=np.float64)) / rate
        k += CHUNK


def _poisson_between(rng, rate: float, start: float, end: float) -> Iterator[np.ndarray]:
    """Poisson arrivals at ``rate`` in [start, end), in chunks."""
    t0 = start
    while True:
        t = t0 + np.cumsum(rng.exponential(1.0 / rate, CHUNK))
        if t[-1] >= end:
            yield t[t < end]
            return
        t0 = float(t[-1])
        yield t


def _on_off(cfg: C.OnOffArrival, rng) -> Iterator[np.ndarray]:
    start = 0.0
    on = True
    buf: list[np.ndarray] = []
    size = 0
    while True:
        mean = cfg.on_s if on else cfg.off_s
        dur = mean if cfg.durations == "fixed" else float(rng.exponential(mean))
        rate = cfg.on_rate_per_s if on else cfg.off_rate_per_s
        if rate > 0 and dur > 0:
            for part in _poisson_between(rng, rate, start, start + dur):
                buf.append(part)
                size += part.size
                if size >= CHUNK:
                    yield np.concatenate(buf)
                    buf, size = [], 0
        start += dur
        on = not on


class RateCurve:
    """rate(t) for piecewise and diurnal processes (vectorized), its maximum, and the time after
    which it is 0 forever (``inf`` when it never stops)."""

    def __init__(self, cfg):
        self.cfg = cfg
        if isinstance(cfg, C.DiurnalArrival):
            self.max_rate = cfg.mean_rate_per_s * (1 + cfg.amplitude)
            self.end_s = math.inf
            return
        ts = np.array([p[0] for p in cfg.points], dtype=np.float64)
        rs = np.array([p[1] for p in cfg.points], dtype=np.float64)
        if cfg.period_s is not None and cfg.interpolation == "linear" and cfg.period_s > ts[-1]:
            # wrap: interpolate from the last point back to the first rate at t = period
            ts = np.append(ts, cfg.period_s)
            rs = np.append(rs, rs[0])
        self.ts, self.rs = ts, rs
        self.max_rate = float(rs.max())
        self.end_s = ts[-1] if (cfg.period_s is None and rs[-1] == 0) else math.inf

    def __call__(self, t: np.ndarray) -> np.ndarray:
        c = self.cfg
        if isinstance(c, C.DiurnalArrival):
            return c.mean_rate_per_s * (1 + c.amplitude * np.cos(2 * np.pi * (t - c.peak_s) / c.period_s))
        if c.period_s is not None:
            t = np.mod(t, c.period_s)
        if c.interpolation == "linear":
            return np.interp(t, self.ts, self.rs)
        idx = np.searchsorted(self.ts, t, side="right") - 1
        return self.rs[idx]

    def mean_rate(self, horizon_s: float, n: int = 200001) -> float:
        """Numerical mean of the rate over [0, horizon_s] (for tests and reports)."""
        t = np.linspace(0.0, horizon_s, n)
        return float(np.trapezoid(self(t), t) / horizon_s)


def _thinning(curve: RateCurve, rng) -> Iterator[np.ndarray]:
    t0 = 0.0
    lam = curve.max_rate
    while True:
        t = t0 + np.cumsum(rng.exponential(1.0 / lam, CHUNK))
        keep = rng.random(CHUNK) * lam < curve(t)
        t0 = float(t[-1])
        out = t[keep]
        if t0 >= curve.end_s:
            out = out[out < curve.end_s]
            if out.size:
                yield out
            return
        if out.size:
            yield out


def arrival_chunks(cfg, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless (or, for a curve ending at rate 0, finite) chunks of arrival times for ``cfg``."""
    if isinstance(cfg, C.PoissonArrival):
        scale = 1.0 / cfg.rate_per_s
        return _renewal(lambda r, n: r.exponential(scale, n), rng)
    if isinstance(cfg, C.GammaArrival):
        shape = 1.0 / cfg.cv ** 2
        scale = 1.0 / (cfg.rate_per_s * shape)
        return _renewal(lambda r, n: r.gamma(shape, scale, n), rng)
    if isinstance(cfg, C.WeibullArrival):
        k = cfg.shape if cfg.shape is not None else weibull_shape_for_cv(cfg.cv)
        lam = 1.0 / (cfg.rate_per_s * math.exp(gammaln(1 + 1 / k)))
        return _renewal(lambda r, n: lam * r.weibull(k, n), rng)
    if isinstance(cfg, C.ConstantArrival):
        return _constant(cfg.rate_per_s)
    if isinstance(cfg, C.OnOffArrival):
        return _on_off(cfg, rng)
    if isinstance(cfg, (C.PiecewiseArrival, C.DiurnalArrival)):
        return _thinning(RateCurve(cfg), rng)
    raise TypeError(f"unknown arrival process {cfg!r}")


def iter_times(chunks: Iterator[np.ndarray]) -> Iterator[float]:
    """Flatten chunks into Python floats."""
    for c in chunks:
        yield from c.tolist()
