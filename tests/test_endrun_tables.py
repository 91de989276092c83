"""End-of-run tables and the built-in routers' fast paths give exactly what the plain ways give.

- ``timeline_table`` (the timeline frame) equals ``pd.DataFrame(rows, columns=...)`` sorted by
  (time_s, pool, replica) stably, values and dtypes, for the engine's row types and for rows it
  hands to pandas (None, bools, numpy scalars, ints beyond int64, NaN, -0.0).
- ``RequestRows.frame`` (the request table) equals the per-column ``np.array`` / pandas
  inference it replaces, unsorted and sorted by request_id.
- The routers read replicas natively when they get a list of ``Replica`` and generically
  otherwise: the same pick either way.
"""
from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from llmsim.metrics import recorder as R

TL = R.TIMELINE_COLUMNS


def _pandas_timeline(rows):
    df = pd.DataFrame(rows, columns=TL)
    if len(df):
        df = df.sort_values(["time_s", "pool", "replica"], kind="stable").reset_index(drop=True)
    return df


def _pandas_requests(names, cols, sort):
    d = {}
    for name, v in zip(names, cols):
        col = v
        if name in R._FLOAT_COLUMNS:
            col = np.array(v, dtype=float)
        elif name in R._INT_COLUMNS:
            col = np.array(v, dtype=np.int64)
        d[name] = col
    df = pd.DataFrame(d)
    if sort and len(df):
        df = df.sort_values("request_id", kind="stable").reset_index(drop=True)
    return df


def _same(got, exp):
    if isinstance(exp, Exception):
        assert type(got) is type(exp), (got, exp)
        return
    assert not isinstance(got, Exception), got
    pd.testing.assert_frame_equal(got, exp, check_exact=True)
    assert list(got.dtypes) == list(exp.dtypes)
    assert type(got.index) is type(exp.index)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:   # the slow way's error is the fast way's error
        return e


ODD = [None, True, 3, 2.5, np.float64(1.5), np.int64(4), float("nan"), 2 ** 70, "x", -0.0]


@pytest.mark.parametrize("seed", range(40))
def test_timeline_table_is_the_pandas_frame(seed):
    rng = random.Random(seed)
    n = rng.choice([0, 1, 2, 7, 40, 300])
    rows = []
    for _ in range(n):
        rows.append((float(rng.choice([0.0, 0.5, 1.0, 2.0, -0.0])),
                     rng.choice(["a", "b", "B", "é", "a\u0301", "zz"][:rng.randint(1, 6)]),
                     rng.randint(0, 3), rng.randint(0, 5), rng.randint(0, 5), rng.random(),
                     rng.randint(0, 9), rng.randint(0, 10 ** 6)))
    if n and seed % 3 == 1:       # a value of another type: the pandas way, same result
        i = rng.randrange(n)
        r = list(rows[i])
        r[rng.randrange(8)] = rng.choice(ODD)
        rows[i] = tuple(r)
    _same(_outcome(R.timeline_table, rows), _outcome(_pandas_timeline, rows))


def test_timeline_frame_of_a_recorder_is_sorted_by_time_pool_replica():
    rec = R.Recorder()
    for row in [(1.0, "p", 1, 0, 0, 0.5, 0, 0), (0.0, "q", 0, 0, 0, 0.0, 0, 0),
                (1.0, "p", 0, 2, 1, 0.25, 3, 40), (0.0, "p", 1, 0, 0, 0.0, 0, 0)]:
        rec.sample(row)
    df = rec.timeline_frame()
    assert list(zip(df.time_s, df.pool, df.replica)) == [(0.0, "p", 1), (0.0, "q", 0),
                                                          (1.0, "p", 0), (1.0, "p", 1)]
    _same(df, _pandas_timeline(rec.timeline))
    _same(R.Recorder().timeline_frame(), _pandas_timeline([]))


def _request_columns(rng, n, kind):
    names = R.REQUEST_COLUMNS
    cols = [[] for _ in names]
    for j in range(n):
        vals = {
            "request_id": rng.randint(0, 10),
            "arrival_s": rng.random(), "first_scheduled_s": rng.random(),
            "first_token_s": rng.random(), "finish_s": rng.random(),
            "num_prompt_tokens": rng.randint(1, 100), "num_output_tokens": rng.randint(0, 10),
            "num_cached_tokens": 0, "num_preemptions": rng.randint(0, 2),
            "pool": rng.choice(["p", "q"]), "replica": rng.randint(0, 3),
            "status": rng.choice(["finished", "rejected"]), "reason": None,
        }
        if kind == 1:
            vals["request_id"] = rng.choice([1, "x", 2])
        elif kind == 2:
            vals["request_id"] = rng.choice([1, 2 ** 65])
        elif kind == 3:
            vals["first_scheduled_s"] = rng.choice([rng.random(), None])
        elif kind == 4:
            vals["finish_s"] = rng.choice([None, 1.0, 2])
        elif kind == 5:
            vals["num_output_tokens"] = rng.choice([1, True, np.int64(3), 2.5])
        elif kind == 6:
            vals["pool"] = rng.choice(["p", None, 3])
        elif kind == 7:
            vals["replica"] = rng.choice([0, None, 1])
        elif kind == 8:
            vals["replica"] = rng.choice([0, True])
        elif kind == 9:
            vals["reason"] = rng.choice([None, "why", float("nan")])
        elif kind == 10:
            vals["request_id"] = np.int64(rng.randint(0, 5))
        elif kind == 11:
            vals["status"] = "finished"        # one object everywhere
            vals["pool"] = None
        for c, name in zip(cols, names):
            c.append(vals[name])
    return names, cols


@pytest.mark.parametrize("kind", range(12))
@pytest.mark.parametrize("n", [0, 1, 5, 60])
def test_request_rows_frame_is_the_plain_frame(kind, n):
    rng = random.Random(kind * 100 + n)
    names, cols = _request_columns(rng, n, kind)
    rows = R.RequestRows()
    for c, v in zip(rows.cols, cols):
        c.extend(v)
    for sort in (False, True):
        _same(_outcome(rows.frame, sort), _outcome(_pandas_requests, names, cols, sort))


def test_prefix_affinity_and_least_outstanding_pick_the_same_with_replicas_or_views():
    """The native path (a list of Replica) and the generic one (other objects with the router
    view) choose the same replica for the same loads and requests."""
    from llmsim.engine.router import make_router
    from llmsim.engine.simulation import Simulation
    from llmsim.scenario import load_scenario
    from llmsim.workload.request import Request

    from tests.test_simulation import small
    sim = Simulation(load_scenario(small(n=5, replicas=5)))      # (its five replicas only)
    reps = list(sim.cluster.live)
    rng = random.Random(3)
    pa = make_router("prefix_affinity", None)
    lo = make_router("least_outstanding", None)
    for trial in range(300):
        loads = [rng.choice([0, 1, 2, 5, 30]) for _ in reps]
        for r, o in zip(reps, loads):
            r.num_outstanding = o
        views = [SimpleNamespace(num_outstanding=o) for o in loads]
        key = rng.choice([None, "sess-a", "sess-b", 7, 123456789])
        req = Request(trial, 0.0, 10, 2, hash_ids=[rng.randint(0, 10 ** 9)]
                      if rng.random() < 0.5 else None, session_id=key)
        fake = SimpleNamespace(hash_ids=req.hash_ids, session_id=req.session_id)
        for router in (pa, lo):
            a = _position(reps, router.choose(req, reps))
            b = _position(views, router.choose(fake, views))
            assert a == b, (router.name, loads, req.hash_ids, key)


def _position(items, x):
    return next(i for i, y in enumerate(items) if y is x)
