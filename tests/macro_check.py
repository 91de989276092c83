"""Shared check of the exact-macro-step tests: a scenario run with macro-steps equals the same
run stepped one step at a time (request tables exactly, times and ITL to 1e-9 relative)."""
import copy

import numpy as np
import pandas as pd
import pytest

from llmsim.api import simulate

BASE_COLS = ["request_id", "status", "num_output_tokens", "num_preemptions", "replica"]


def assert_macro_equals_single(scn: dict, extra_cols=()):
    """Run ``scn`` with and without macro-steps and compare; returns ``(macro, single)``."""
    a = simulate(scn)
    scn = copy.deepcopy(scn)
    scn.setdefault("simulation", {})["macro_steps"] = False
    b = simulate(scn)
    cols = BASE_COLS + list(extra_cols)
    pd.testing.assert_frame_equal(a.requests[cols], b.requests[cols])
    for c in ["first_scheduled_s", "first_token_s", "finish_s"]:
        np.testing.assert_allclose(a.requests[c], b.requests[c], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.sort(np.repeat(a.itl_gaps_s, a.itl_weights)),
                               np.sort(np.repeat(b.itl_gaps_s, b.itl_weights)),
                               rtol=1e-9, atol=1e-12)
    assert a.summary["events"] <= b.summary["events"]
    for name, pa in a.summary["pools"].items():
        pb = b.summary["pools"][name]
        for k in ("utilization", "kv_usage_mean"):
            np.testing.assert_allclose(pa[k], pb[k], rtol=1e-9)
    assert a.summary["simulated_s"] == pytest.approx(b.summary["simulated_s"], rel=1e-9)
    return a, b
