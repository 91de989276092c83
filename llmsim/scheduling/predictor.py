"""Output-length predictor for shortest-job-first scheduling (plain Python).

Contract: :class:`OutputLengthPredictor` ``(error_sigma, seed)`` maps a request to a predicted
number of output tokens ``max_tokens · exp(error_sigma · z)`` with ``z`` a standard normal
drawn from ``(seed, request_id)`` alone, so a request gets the same prediction whichever replica
sees it and in whatever order (deterministic, no shared random state). ``error_sigma = 0`` is
an oracle (the true length); 0.5 means the prediction is off by a factor ``e^{±0.5}`` ≈ 0.6–1.6
about two times in three (a log-normal multiplicative error, median-unbiased), the kind of
error learned length predictors report (e.g. Qiu et al., "Efficient Interactive LLM Serving
with Proxy Model-based Sequence Length Prediction", 2024; Zheng et al., "Response Length
Perception and Sequence Scheduling", NeurIPS 2023).
"""
from __future__ import annotations

import math
import zlib

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _id_bits(request_id) -> int:
    if isinstance(request_id, int):
        return request_id & _MASK
    return zlib.crc32(str(request_id).encode("utf-8"))


def standard_normal(seed: int, request_id) -> float:
    """A standard normal variate determined by (seed, request_id) (Box–Muller on two
    splitmix64 outputs)."""
    a = _splitmix64((_splitmix64(seed & _MASK) ^ _id_bits(request_id)) & _MASK)
    b = _splitmix64(a)
    u1 = ((a >> 11) + 1) / 9007199254740993.0     # (0, 1]
    u2 = (b >> 11) / 9007199254740992.0            # [0, 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


class OutputLengthPredictor:
    def __init__(self, error_sigma: float = 0.0, seed: int = 0):
        if not error_sigma >= 0:
            raise ValueError("error_sigma must be >= 0")
        self.error_sigma = float(error_sigma)
        self.seed = int(seed)

    def __call__(self, req) -> float:
        if self.error_sigma == 0.0:
            return float(req.max_tokens)
        return req.max_tokens * math.exp(self.error_sigma *
                                         standard_normal(self.seed, req.request_id))


def sjf_length_key(sjf_key: str = "prompt_tokens", predictor: OutputLengthPredictor | None = None):
    """The length a ``sjf`` queue orders by: ``prompt_tokens``, ``output_tokens`` (predicted)
    or ``total_tokens`` (prompt + predicted output)."""
    if sjf_key == "prompt_tokens":
        return lambda r: r.num_prompt_tokens
    pred = predictor or OutputLengthPredictor()
    if sjf_key == "output_tokens":
        return pred
    if sjf_key == "total_tokens":
        return lambda r: r.num_prompt_tokens + pred(r)
    raise ValueError(f"unknown sjf_key {sjf_key!r}")
