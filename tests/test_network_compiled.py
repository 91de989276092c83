"""The network layer as the compiled build has it (llmsim/_compiled.py compiles
llmsim.engine.network): Path is a plain class with read-only, value-compared fields. (That a
compiled run of contended transfers gives exactly the pure-Python results is checked with the
other scenarios in tests/test_compiled_build.py.)"""
from __future__ import annotations

import importlib.machinery

import pytest

import llmsim
from llmsim import _compiled
from llmsim.engine import network
from llmsim.engine.events import Environment
from llmsim.engine.network import Network, Path, Resource

SO = importlib.machinery.EXTENSION_SUFFIXES[0]


def test_the_network_is_part_of_the_compiled_build():
    assert "llmsim.engine.network" in _compiled.MODULES
    if llmsim.BUILD == "compiled":
        assert network.__file__.endswith(SO)


def test_a_path_is_immutable_and_compared_by_value():
    a, b = Resource("a", 10.0), Resource("b", 4)
    p = Path([a, b], 1)                         # any iterable; latency kept as a float
    assert p.resources == (a, b) and isinstance(p.resources, tuple)
    assert p.latency_s == 1.0 and type(p.latency_s) is float and p.description == ""
    assert p.bottleneck_bytes_per_s == 4.0 and p.idle_time_s(8.0) == 3.0
    q = Path((a, b), 1.0)
    assert p == q and hash(p) == hash(q) and p != Path((a, b), 1.0, "other")
    assert p != Path((b, a), 1.0) and p != "path"
    for field in ("resources", "latency_s", "description", "bottleneck_bytes_per_s"):
        with pytest.raises(AttributeError):
            setattr(p, field, None)
    assert repr(p).startswith("Path(resources=(Resource('a'")


def test_a_path_without_resources_has_no_bottleneck_and_carries_nothing():
    empty = Path((), 0.0)
    with pytest.raises(ValueError, match="no bottleneck"):
        empty.bottleneck_bytes_per_s
    net = Network(Environment())
    with pytest.raises(ValueError, match="at least one resource"):
        net.start(1.0, empty, lambda tr: None)


def test_contention_and_abort_in_either_build():
    """Three transfers share a link (max-min), one is aborted, one sent when alone: the
    delivery times of the filling computed by hand."""
    env = Environment()
    net = Network(env)
    link = Resource("link", 1e9)
    port = Resource("port", 0.25e9)
    got = {}

    def start(name, nbytes, resources, lat=0.0):
        return net.start(nbytes, Path(resources, lat), lambda tr: got.__setitem__(name, env.now))

    start("a", 1e9, (link,))
    start("b", 0.25e9, (link, port))             # capped by its port at 0.25 GB/s
    c = start("c", 1e9, (link,))

    def later():
        yield env.timeout(0.5)
        net.abort(c)
        yield env.timeout(1.5)
        start("d", 1e9, (link,), 0.5)            # alone: 1 s + 0.5 s latency
    env.process(later())
    env.run()
    # 0-0.5 s: b 0.25, a and c 0.375 GB/s each; then a 0.75 GB/s until b ends at 1 s
    # (a: 0.1875 + 0.375 = 0.5625 GB moved), then 1 GB/s: a ends at 1.4375 s
    assert got["b"] == pytest.approx(1.0)
    assert got["a"] == pytest.approx(1.4375)
    assert "c" not in got and got["d"] == pytest.approx(3.5)
    assert net.num_started == 4 and net.num_done == 3 and net.num_aborted == 1
    assert not net.active and link.bytes_moved == pytest.approx(1e9 + 0.25e9 + 0.1875e9 + 1e9)


def test_path_from_a_generator_of_resources():
    """A path made from a one-pass iterable keeps its resources and its bottleneck."""
    slow, fast = Resource("slow", 1e9), Resource("fast", 4e9)
    p = Path((r for r in (fast, slow)), 0.001)
    assert p.resources == (fast, slow)
    assert p.bottleneck_bytes_per_s == 1e9
