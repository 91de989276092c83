"""llmsim.metrics.stats: plain and weighted latency statistics against numpy by hand."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llmsim.metrics.stats import latency_stats, weighted_quantiles, weighted_stats


def test_latency_stats_by_hand():
    s = latency_stats([0.4, np.nan, 0.5, 2.0])
    assert s["mean"] == pytest.approx((0.4 + 0.5 + 2.0) / 3)
    assert s["p50"] == pytest.approx(0.5)
    # linear interpolation: position 0.9 * 2 = 1.8 -> 0.5 + 0.8 * 1.5
    assert s["p90"] == pytest.approx(1.7)
    assert s["p99"] == pytest.approx(0.5 + 0.98 * 1.5)
    assert all(type(v) is float for v in s.values())


@pytest.mark.parametrize("values", [[], [np.nan, np.nan]])
def test_latency_stats_empty_is_none(values):
    assert latency_stats(values) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_weighted_quantiles_small_case():
    v = [0.05, 0.01, 0.02]
    w = [1, 3, 1]
    # repeated sample: 0.01 0.01 0.01 0.02 0.05
    got = weighted_quantiles(v, w, [0.0, 0.5, 0.75, 0.9, 1.0])
    np.testing.assert_allclose(got, [0.01, 0.01, 0.02, 0.02 + 0.6 * 0.03, 0.05])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3, allow_nan=False), st.integers(0, 6)),
                min_size=1, max_size=30),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6))
def test_weighted_quantiles_equal_numpy_repeat(pairs, qs):
    v = np.array([p[0] for p in pairs])
    w = np.array([p[1] for p in pairs], dtype=np.int64)
    if w.sum() == 0:
        assert np.isnan(weighted_quantiles(v, w, qs)).all()
        return
    expect = np.quantile(np.repeat(v, w), qs)
    np.testing.assert_allclose(weighted_quantiles(v, w, qs), expect, rtol=1e-12, atol=1e-9)


def test_weighted_stats_matches_repeat_and_ignores_nan():
    rng = np.random.default_rng(3)
    v = rng.uniform(0.01, 0.08, 500)
    w = rng.integers(0, 300, 500)
    rep = np.repeat(v, w)
    s = weighted_stats(np.r_[v, np.nan], np.r_[w, 7])
    assert s["mean"] == pytest.approx(rep.mean(), rel=1e-12)
    for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert s[key] == pytest.approx(np.quantile(rep, q), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0, allow_nan=False), st.integers(1, 9)),
                min_size=1, max_size=40))
def test_weighted_stats_of_a_sample_with_nothing_to_drop_matches_repeat(pairs):
    # unsorted, every weight positive: the path that skips the NaN/zero-weight mask
    v = np.array([p[0] for p in pairs])
    w = np.array([p[1] for p in pairs], dtype=np.int64)
    rep = np.repeat(v, w)
    s = weighted_stats(v, w)
    assert s["mean"] == pytest.approx(rep.mean(), rel=1e-12, abs=1e-15)
    for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert s[key] == pytest.approx(np.quantile(rep, q), rel=1e-12, abs=1e-15)


def test_weighted_stats_empty_and_bad_weights():
    assert weighted_stats([], []) == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert weighted_stats([0.1], [0])["p50"] is None
    with pytest.raises(ValueError):
        weighted_stats([0.1, 0.2], [1])
    with pytest.raises(ValueError):
        weighted_stats([0.1], [-1])
    with pytest.raises(ValueError):
        weighted_quantiles([0.1], [1], [1.5])


def test_weighted_sort_order_is_the_stable_float_order():
    """The weighted sort (int64 bit patterns when no value has its sign bit set) keeps the
    stable order of the float sort: ties keep their given order, so the weights follow them
    exactly; with -0.0 present the float order is used (-0.0 ties with 0.0)."""
    from llmsim.metrics.stats import _sort_weighted, _valid_weighted
    rng = np.random.default_rng(5)
    base = rng.choice([0.0, 0.5, 1e-300, 3.0, np.inf, 2.5e-3], 400)
    w = rng.integers(1, 50, 400)
    for v in (base, np.r_[base, -0.0, 0.0, -0.0], np.r_[base, -1.5]):
        ww = np.r_[w, np.arange(1, v.size - w.size + 1)]
        order = np.argsort(v, kind="stable")
        sv, sw = _sort_weighted(*_valid_weighted(v, ww))
        assert np.array_equal(sv.view(np.int64), v[order].view(np.int64))
        assert np.array_equal(sw, ww[order].astype(np.float64))


def test_selected_quantiles_are_the_sorted_ones_bit_for_bit():
    """On samples long enough to select (SELECT_MIN values or more), the quantiles found by
    bucketing are the floats the full sort gives: ties, zeros, inf, one value, huge weights,
    values that share their top bits, and a few hundred random cases; samples it cannot take
    (a negative value or -0.0, fractional weights, total weight 2^53) fall back to the sort."""
    from llmsim.metrics.stats import SELECT_MIN, _selected_quantiles, _sort_weighted, \
        _sorted_quantiles
    rng = np.random.default_rng(17)
    n = SELECT_MIN * 2 + 3
    qs = np.array([0.0, 1e-9, 0.25, 0.5, 0.9, 0.99, 0.999999, 1.0])
    gaps = np.round(rng.lognormal(-4.5, 0.6, n), 4)
    samples = [
        (gaps, rng.integers(1, 9, n)),
        (rng.choice([0.0, 0.5, 1e-300, 3.0, np.inf, 2.5e-3], n), rng.integers(1, 50, n)),
        (np.full(n, 0.125), rng.integers(1, 3, n)),
        (1.0 + rng.integers(0, 3, n) * 2.0 ** -52, rng.integers(1, 4, n)),   # low bits only
        (gaps, np.r_[np.full(n - 1, 1), 2 ** 40]),
        (rng.random(n), np.ones(n, dtype=np.int64)),
    ]
    for _ in range(300):
        m = int(rng.integers(SELECT_MIN, 3 * SELECT_MIN))
        v = np.round(rng.exponential(rng.choice([1e-3, 1.0, 1e6]), m), int(rng.integers(1, 8)))
        samples.append((v, rng.integers(1, int(rng.integers(2, 1000)), m)))
    for v, w in samples:
        w = w.astype(np.float64)
        with np.errstate(invalid="ignore"):                 # inf - inf, on both paths
            got = _selected_quantiles(v, w, qs)
            want = _sorted_quantiles(*_sort_weighted(v, w), qs)
            scalar = _selected_quantiles(v, w, np.float64(0.9))
        assert got is not None and scalar is not None and scalar.shape == ()
        assert np.array_equal(got.view(np.int64), want.view(np.int64)), (got, want)
    ones = np.ones(n)
    assert _selected_quantiles(np.r_[gaps[:-1], -0.0], ones, qs) is None
    assert _selected_quantiles(np.r_[gaps[:-1], -1.0], ones, qs) is None
    assert _selected_quantiles(gaps, np.r_[ones[:-1], 0.5], qs) is None
    assert _selected_quantiles(gaps, np.r_[ones[:-1], 2.0 ** 53], qs) is None
    assert _selected_quantiles(gaps[:SELECT_MIN - 1], ones[:SELECT_MIN - 1], qs) is None
    # the public functions give the sort's quantiles on either path
    for v, w in ((gaps, rng.integers(0, 5, n)), (gaps, rng.random(n))):
        s = weighted_stats(v, w)
        keep = w > 0
        sv, sw = _sort_weighted(v[keep], np.asarray(w[keep], dtype=np.float64))
        want = _sorted_quantiles(sv, sw, np.array([0.5, 0.9, 0.99]))
        assert [s["p50"], s["p90"], s["p99"]] == want.tolist()
        assert np.array_equal(weighted_quantiles(v, w, [0.5, 0.9, 0.99]), want)
