"""Routers: pick the replica that serves a new request (plain Python, no SimPy).

A router sees replicas through a small read-only view: ``num_outstanding`` (requests routed and
not yet ended), ``kv_usage`` (fraction of KV blocks in use), ``capacity_weight`` (relative
roofline decode capacity of its pool). ``choose(request, replicas)`` returns one of them.
Randomised routers draw from the ``numpy.random.Generator`` they are given (deterministic).
"""
from __future__ import annotations

from typing import ClassVar

import zlib

from llmsim.engine.replica import Replica


class RoundRobinRouter:
    name: ClassVar[str] = "round_robin"

    def __init__(self, rng=None) -> None:
        self._i = -1

    def choose(self, request, replicas):
        self._i = (self._i + 1) % len(replicas)
        return replicas[self._i]


class RandomRouter:
    name: ClassVar[str] = "random"

    def __init__(self, rng) -> None:
        self.rng = rng

    def choose(self, request, replicas):
        return replicas[int(self.rng.integers(len(replicas)))]


class LeastOutstandingRouter:
    """Fewest outstanding requests; ties go to the lowest index (deterministic)."""

    name: ClassVar[str] = "least_outstanding"

    def __init__(self, rng=None) -> None:
        pass

    def choose(self, request, replicas):
        best = replicas[0]
        bo = best.num_outstanding
        for r in replicas:
            # (a Replica's count is read natively in the compiled build; any other object
            # with the router view, generically)
            o = r.num_outstanding if isinstance(r, Replica) else r.num_outstanding
            if o < bo:
                best, bo = r, o
        return best


class LeastKvRouter:
    """Lowest KV-cache usage, then fewest outstanding."""

    name: ClassVar[str] = "least_kv"

    def __init__(self, rng=None) -> None:
        pass

    def choose(self, request, replicas):
        return min(replicas, key=lambda r: (r.kv_usage, r.num_outstanding))


class PowerOfTwoRouter:
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


class CapacityWeightedRouter:
    """Least outstanding work relative to capacity: minimises (outstanding+1)/capacity_weight,
    so a replica with twice the roofline capacity receives about twice the requests."""

    name: ClassVar[str] = "capacity_weighted"

    def __init__(self, rng=None) -> None:
        pass

    def choose(self, request, replicas):
        return min(replicas, key=lambda r: (r.num_outstanding + 1) / r.capacity_weight)


class PrefixAffinityRouter:
    """Requests that share their first prefix block (``hash_ids[0]``, or the session id) go to
    the same replica (consistent by hash), unless it has more than ``slack`` times the mean
    outstanding load, in which case the least-outstanding replica serves it."""

    name: ClassVar[str] = "prefix_affinity"

    def __init__(self, rng=None, slack: float = 2.0) -> None:
        self.slack = slack
        self._lo = LeastOutstandingRouter()

    def choose(self, request, replicas):
        key = None
        if request.hash_ids:
            key = request.hash_ids[0]
        elif request.session_id is not None:
            key = request.session_id
        if key is None:
            return self._lo.choose(request, replicas)
        if isinstance(key, str):   # str hash() is salted per process: use a stable hash
            h = zlib.crc32(key.encode())
        else:
            h = int(key) * 2654435761 % (2 ** 32)
        r = replicas[h % len(replicas)]
        mean = sum(x.num_outstanding for x in replicas) / len(replicas)
        if r.num_outstanding > self.slack * (mean + 1):
            return self._lo.choose(request, replicas)
        return r


ROUTERS = {c.name: c for c in (RoundRobinRouter, RandomRouter, LeastOutstandingRouter,
                               LeastKvRouter, PowerOfTwoRouter, CapacityWeightedRouter,
                               PrefixAffinityRouter)}


def make_router(name: str, rng):
    return ROUTERS[name](rng)
