"""Length samplers: draw integer token counts (>= 1) in vectorized chunks.

Every marginal is a map from a standard normal draw z to a real value (``from_normal``): normal
and lognormal directly, the others through u = Φ(z) and their inverse CDF. Independent lengths
use independent z; correlated lengths use correlated z (a Gaussian copula). Values are rounded
with ``numpy.rint`` (halves to even) and bounded to [min, max] by clipping or by redrawing
(``truncate: resample``); the per-draw mask of affected values is returned so that the workload
counts exactly the requests it yields.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from llmsim.errors import InputError, input_problem
from llmsim.workload import config as C
from llmsim.workload.readers.base import MAX_TOKENS

_MAX_RESAMPLE_ROUNDS = 200


class Marginal:
    """One length distribution. ``draw(rng, n)`` -> (int64 lengths, bool mask of truncated)."""

    def __init__(self, lo: int, hi: float, truncate: str):
        self.lo = lo
        self.hi = hi
        self.truncate = truncate

    def from_normal(self, z: np.ndarray) -> np.ndarray:   # real values, before rounding
        raise NotImplementedError

    def bound(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Round and return (values, outside-bounds mask) without fixing the outside ones."""
        x = np.rint(x)
        out = (x < self.lo) | (x > self.hi)
        return x, out

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, out = self.bound(self.from_normal(rng.standard_normal(n)))
        if out.any():
            if self.truncate == "clip":
                np.clip(x, self.lo, self.hi, out=x)
            else:
                self._resample(rng, x, out)
        return x.astype(np.int64), out

    def _resample(self, rng, x, out):
        todo = np.flatnonzero(out)
        for _ in range(_MAX_RESAMPLE_ROUNDS):
            y, bad = self.bound(self.from_normal(rng.standard_normal(todo.size)))
            x[todo[~bad]] = y[~bad]
            todo = todo[bad]
            if todo.size == 0:
                return
        raise InputError(input_problem(
            f"length bounds [{self.lo}, {self.hi}] exclude almost all of the distribution "
            f"(still outside after {_MAX_RESAMPLE_ROUNDS} redraws); widen min/max or use "
            "truncate: clip"))


class Constant(Marginal):
    def __init__(self, value: int):
        super().__init__(1, math.inf, "clip")
        self.value = float(value)

    def from_normal(self, z):
        return np.full(z.shape, self.value)


class Uniform(Marginal):
    def __init__(self, lo: int, hi: int):
        super().__init__(lo, hi, "clip")
        self.a, self.b = lo, hi

    def from_normal(self, z):
        u = ndtr(z)
        return np.minimum(self.a + np.floor(u * (self.b - self.a + 1)), self.b)


class Normal(Marginal):
    def __init__(self, mean, std, lo, hi, truncate):
        super().__init__(lo, hi, truncate)
        self.mean, self.std = mean, std

    def from_normal(self, z):
        return self.mean + self.std * z


class LogNormal(Marginal):
    def __init__(self, mu, sigma, lo, hi, truncate):
        super().__init__(lo, hi, truncate)
        self.mu, self.sigma = mu, sigma

    def from_normal(self, z):
        return np.exp(self.mu + self.sigma * z)


class Empirical(Marginal):
    """Inverse CDF of a sample (optionally weighted): value at the first cumulative weight > u."""

    def __init__(self, values, weights, lo, hi, truncate):
        super().__init__(lo, hi, truncate)
        values = np.asarray(values, dtype=np.float64)
        if weights is None:
            self.values = np.sort(values)
            self.cum = None
        else:
            order = np.argsort(values, kind="stable")
            self.values = values[order]
            w = np.asarray(weights, dtype=np.float64)[order]
            w = w / w.max()                  # 1e308-sized weights must not overflow the sum
            self.cum = np.cumsum(w) / w.sum()

    def from_normal(self, z):
        u = ndtr(z)
        if self.cum is None:
            idx = np.minimum((u * self.values.size).astype(np.int64), self.values.size - 1)
        else:
            idx = np.minimum(np.searchsorted(self.cum, u, side="right"), self.values.size - 1)
        return self.values[idx]


def make_marginal(cfg, base_dir: Path, key: str) -> Marginal:
    """Marginal for a ``LengthDist`` config; ``key`` names it in error messages."""
    # no max: draws above MAX_TOKENS (a trace row's limit) are bounded there, and counted
    hi = lambda c: MAX_TOKENS if c.max is None else c.max  # noqa: E731
    if isinstance(cfg, C.ConstantLength):
        return Constant(cfg.value)
    if isinstance(cfg, C.UniformLength):
        return Uniform(cfg.min, cfg.max)
    if isinstance(cfg, C.NormalLength):
        return Normal(cfg.mean, cfg.std, cfg.min, hi(cfg), cfg.truncate)
    if isinstance(cfg, C.LogNormalLength):
        mu = math.log(cfg.median) if cfg.median is not None else math.log(cfg.mean) - cfg.sigma ** 2 / 2
        return LogNormal(mu, cfg.sigma, cfg.min, hi(cfg), cfg.truncate)
    if isinstance(cfg, C.EmpiricalLength):
        if cfg.values is not None:
            values = cfg.values
        else:
            from llmsim.workload.readers.columns import read_columns
            (values,) = read_columns(resolve(cfg.path, base_dir), [cfg.column], key=f"{key}.column")
        return Empirical(values, cfg.weights, cfg.min, hi(cfg), cfg.truncate)
    raise TypeError(f"unknown length distribution {cfg!r}")


def resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


class PairSampler:
    """Draws (prompt, output) chunks. ``draw(n)`` -> (prompt, output, flags) where flags has bit
    4 set when the prompt was truncated and bit 8 when the output was (see workload.items)."""

    def __init__(self, prompt: Marginal, output: Marginal, rng: np.random.Generator,
                 correlation: float = 0.0):
        self.prompt, self.output, self.rng, self.rho = prompt, output, rng, correlation

    def draw(self, n: int):
        from llmsim.workload.items import TRUNC_OUTPUT, TRUNC_PROMPT
        if self.rho == 0.0:
            p, pm = self.prompt.draw(self.rng, n)
            o, om = self.output.draw(self.rng, n)
        else:
            p, o, pm, om = self._draw_correlated(n)
        flags = pm.astype(np.int64) * TRUNC_PROMPT + om.astype(np.int64) * TRUNC_OUTPUT
        return p, o, flags

    def _z_pair(self, n):
        z1 = self.rng.standard_normal(n)
        z2 = self.rho * z1 + math.sqrt(max(0.0, 1 - self.rho ** 2)) * self.rng.standard_normal(n)
        return z1, z2

    def _draw_correlated(self, n):
        P, O = self.prompt, self.output
        z1, z2 = self._z_pair(n)
        p, pm = P.bound(P.from_normal(z1))
        o, om = O.bound(O.from_normal(z2))
        if (pm | om).any():
            if P.truncate == "resample" or O.truncate == "resample":
                # redraw the pair, preserving the copula, for rows where a resample-bounded
                # marginal is outside; clip-bounded marginals are clipped afterwards
                need = (pm & (P.truncate == "resample")) | (om & (O.truncate == "resample"))
                todo = np.flatnonzero(need)
                for _ in range(_MAX_RESAMPLE_ROUNDS):
                    if todo.size == 0:
                        break
                    a, b = self._z_pair(todo.size)
                    pa, pb = P.bound(P.from_normal(a))
                    oa, ob = O.bound(O.from_normal(b))
                    ok = ~((pb & (P.truncate == "resample")) | (ob & (O.truncate == "resample")))
                    p[todo[ok]] = pa[ok]
                    o[todo[ok]] = oa[ok]
                    todo = todo[~ok]
                else:
                    if todo.size:
                        raise InputError(input_problem(
                            "correlated length bounds exclude almost all draws; widen min/max"))
            np.clip(p, P.lo, P.hi, out=p)
            np.clip(o, O.lo, O.hi, out=o)
        return p.astype(np.int64), o.astype(np.int64), pm, om


class EmpiricalPairSampler:
    """Resamples (prompt, output) rows of a file uniformly with replacement; optional caps clip
    (and flag) longer values."""

    def __init__(self, prompt: np.ndarray, output: np.ndarray, rng, max_prompt=None, max_output=None):
        self.p = np.asarray(prompt, dtype=np.int64)
        self.o = np.asarray(output, dtype=np.int64)
        self.rng = rng
        self.max_p = max_prompt
        self.max_o = max_output

    def draw(self, n: int):
        from llmsim.workload.items import TRUNC_OUTPUT, TRUNC_PROMPT
        idx = self.rng.integers(0, self.p.size, n)
        p, o = self.p[idx], self.o[idx]
        flags = np.zeros(n, dtype=np.int64)
        if self.max_p is not None:
            m = p > self.max_p
            flags += m * TRUNC_PROMPT
            np.minimum(p, self.max_p, out=p)
        if self.max_o is not None:
            m = o > self.max_o
            flags += m * TRUNC_OUTPUT
            np.minimum(o, self.max_o, out=o)
        return p, o, flags


def make_pair_sampler(part, rng: np.random.Generator, base_dir: Path, key: str):
    """Sampler for a synthetic source (``prompt_tokens``/``output_tokens`` or ``lengths``)."""
    if part.lengths is None:
        return PairSampler(make_marginal(part.prompt_tokens, base_dir, f"{key}.prompt_tokens"),
                           make_marginal(part.output_tokens, base_dir, f"{key}.output_tokens"), rng)
    L = part.lengths
    if isinstance(L, C.CorrelatedLengths):
        return PairSampler(make_marginal(L.prompt_tokens, base_dir, f"{key}.lengths.prompt_tokens"),
                           make_marginal(L.output_tokens, base_dir, f"{key}.lengths.output_tokens"),
                           rng, L.correlation)
    from llmsim.workload.readers.columns import read_columns
    p, o = read_columns(resolve(L.path, base_dir), [L.prompt_column, L.output_column],
                        key=f"{key}.lengths")
    return EmpiricalPairSampler(p, o, rng, L.max_prompt_tokens, L.max_output_tokens)
