"""Routers: pick the replica that serves a new request (plain Python, no SimPy).

A router sees replicas through a small read-only view: ``num_outstanding`` (requests routed and
not yet ended), ``kv_usage`` (fraction of KV blocks in use), ``capacity_weight`` (relative
roofline decode capacity of its pool). ``choose(request, replicas)`` returns one of them.
Randomised routers draw from the ``numpy.random.Generator`` they are given (deterministic).

The built-in routers share the base class :class:`Router`, so that the cluster (compiled with
them) calls their ``choose`` natively; a custom router is any object with ``choose``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import zlib

from llmsim.engine.replica import Replica
from llmsim.workload.request import Request


class Router:
    """Base of the built-in routers: ``choose(request, replicas)`` returns one of
    ``replicas`` (a non-empty sequence of objects with the router view)."""

    name: ClassVar[str] = ""

    def choose(self, request: Any, replicas: Any) -> Any:
        raise NotImplementedError


def _all_replicas(replicas: Any) -> bool:
    """``replicas`` is a list of :class:`Replica` (the cluster's case: their counts are read
    natively in the compiled build; any other object with the router view, generically)."""
    if type(replicas) is not list:
        return False
    for r in replicas:
        if not isinstance(r, Replica):
            return False
    return True


class RoundRobinRouter(Router):
    name: ClassVar[str] = "round_robin"

    def __init__(self, rng=None) -> None:
        self._i = -1

    def choose(self, request, replicas):
        self._i = (self._i + 1) % len(replicas)
        return replicas[self._i]


class RandomRouter(Router):
    name: ClassVar[str] = "random"

    def __init__(self, rng) -> None:
        self.rng = rng

    def choose(self, request, replicas):
        return replicas[int(self.rng.integers(len(replicas)))]


class LeastOutstandingRouter(Router):
    """Fewest outstanding requests; ties go to the lowest index (deterministic)."""

    name: ClassVar[str] = "least_outstanding"

    def __init__(self, rng=None) -> None:
        pass

    def choose(self, request, replicas):
        if _all_replicas(replicas):
            return least_outstanding(replicas)
        return min(replicas, key=_outstanding)       # (the first of the fewest, as above)


def _outstanding(r: Any) -> Any:
    return r.num_outstanding


def least_outstanding(replicas: list[Replica]) -> Replica:
    """The first replica with the fewest outstanding requests (``replicas`` non-empty)."""
    best = replicas[0]
    bo = best.num_outstanding
    for r in replicas:
        o = r.num_outstanding
        if o < bo:
            best = r
            bo = o
    return best


class LeastKvRouter(Router):
    """Lowest KV-cache usage, then fewest outstanding."""

    name: ClassVar[str] = "least_kv"

    def __init__(self, rng=None) -> None:
        pass

    def choose(self, request, replicas):
        return min(replicas, key=lambda r: (r.kv_usage, r.num_outstanding))


class PowerOfTwoRouter(Router):
    """Two replicas drawn at random; the one with fewer outstanding requests wins."""

    name: ClassVar[str] = "power_of_two"

    def __init__(self, rng) -> None:
        self.rng = rng

    def choose(self, request, replicas):
        n = len(replicas)
        if n == 1:
            return replicas[0]
        i, j = self.rng.choice(n, size=2, replace=False)
        a, b = replicas[int(i)], replicas[int(j)]
        return a if a.num_outstanding <= b.num_outstanding else b


class CapacityWeightedRouter(Router):
    """Least outstanding work relative to capacity: minimises (outstanding+1)/capacity_weight,
    so a replica with twice the roofline capacity receives about twice the requests."""

    name: ClassVar[str] = "capacity_weighted"

    def __init__(self, rng=None) -> None:
        pass

    def choose(self, request, replicas):
        return min(replicas, key=lambda r: (r.num_outstanding + 1) / r.capacity_weight)


class PrefixAffinityRouter(Router):
    """Requests that share their first prefix block (``hash_ids[0]``, or the session id) go to
    the same replica (consistent by hash), unless it has more than ``slack`` times the mean
    outstanding load, in which case the least-outstanding replica serves it."""

    name: ClassVar[str] = "prefix_affinity"

    def __init__(self, rng=None, slack: float = 2.0) -> None:
        self.slack = slack
        self._lo = LeastOutstandingRouter()

    def choose(self, request, replicas):
        if isinstance(request, Request):
            req: Request = request       # (its fields read natively in the compiled build)
            hash_ids = req.hash_ids
            session = req.session_id
        else:
            hash_ids = request.hash_ids
            session = request.session_id
        key = None
        if hash_ids:
            key = hash_ids[0]
        elif session is not None:
            key = session
        if key is None:
            return self._lo.choose(request, replicas)
        h: int = 0
        if isinstance(key, str):   # str hash() is salted per process: use a stable hash
            h = zlib.crc32(key.encode())
        else:
            h = int(key) * 2654435761 % (2 ** 32)
        if _all_replicas(replicas):
            return _affinity_pick(replicas, h, self.slack)
        r = replicas[h % len(replicas)]
        mean = sum(x.num_outstanding for x in replicas) / len(replicas)
        if r.num_outstanding > self.slack * (mean + 1):
            return self._lo.choose(request, replicas)
        return r


def _affinity_pick(replicas: list[Replica], h: int, slack: float) -> Replica:
    """:meth:`PrefixAffinityRouter.choose` on a list of Replica (the counts read natively):
    replica ``h`` mod n unless it has more than ``slack`` times the mean load + 1."""
    n = len(replicas)
    r = replicas[h % n]
    total = 0
    for rep in replicas:
        total += rep.num_outstanding
    if r.num_outstanding > slack * (total / n + 1):
        return least_outstanding(replicas)
    return r


ROUTERS = {c.name: c for c in (RoundRobinRouter, RandomRouter, LeastOutstandingRouter,
                               LeastKvRouter, PowerOfTwoRouter, CapacityWeightedRouter,
                               PrefixAffinityRouter)}


def make_router(name: str, rng):
    return ROUTERS[name](rng)
