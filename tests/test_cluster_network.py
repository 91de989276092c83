"""Network transfers: idle time = bytes / bandwidth + latency; fair sharing under contention."""
import pytest
from llmsim.engine.events import Environment

from llmsim.engine.network import Network, Path, Resource, Topology, port_capacity_bytes_per_s


def run_transfers(specs, resources):
    """specs: [(start_s, num_bytes, [resource names], latency_s)] → delivery times."""
    env = Environment()
    net = Network(env)
    res = {n: Resource(n, c) for n, c in resources.items()}
    done = {}

    def starter(i, t0, nbytes, names, lat):
        yield env.timeout(t0)
        net.start(nbytes, Path(tuple(res[n] for n in names), lat),
                  lambda tr, i=i: done.__setitem__(i, env.now))

    for i, (t0, nbytes, names, lat) in enumerate(specs):
        env.process(starter(i, t0, nbytes, names, lat))
    env.run()
    return done, net


def test_idle_transfer_is_bytes_over_bandwidth_plus_latency():
    done, net = run_transfers([(1.0, 3e9, ["link"], 0.04)], {"link": 1.25e9})   # 10 Gbit/s
    assert done[0] == pytest.approx(1.0 + 3e9 / 1.25e9 + 0.04, rel=1e-12)
    assert net.num_done == 1 and net.bytes_done == 3e9


def test_bottleneck_is_the_slowest_resource():
    done, _ = run_transfers([(0.0, 1e9, ["nic", "wan"], 0.0)], {"nic": 5e9, "wan": 1e9})
    assert done[0] == pytest.approx(1.0, rel=1e-12)


def test_simultaneous_transfers_share_the_link_equally():
    done, _ = run_transfers([(0.0, 1e9, ["link"], 0.01), (0.0, 1e9, ["link"], 0.01)],
                            {"link": 1e9})
    # each gets half: both drain at 2 s
    assert done[0] == pytest.approx(2.01, rel=1e-12)
    assert done[1] == pytest.approx(2.01, rel=1e-12)


def test_processor_sharing_with_staggered_start():
    # A: 2 GB from t=0; B: 1 GB from t=1, link 1 GB/s.
    # t in [0,1): A alone, 1 GB done. [1, 3): both at 0.5 GB/s -> B done at 3, A has 0 left at 3.
    done, _ = run_transfers([(0.0, 2e9, ["link"], 0.0), (1.0, 1e9, ["link"], 0.0)],
                            {"link": 1e9})
    assert done[1] == pytest.approx(3.0, rel=1e-12)
    assert done[0] == pytest.approx(3.0, rel=1e-12)
    # contention makes the transfer slower than on an idle link
    assert done[1] - 1.0 > 1e9 / 1e9


def test_max_min_fairness_across_two_links():
    # X crosses a (cap 1) only; Y crosses a and b (cap b = 0.25): Y is limited to 0.25 by b,
    # so X gets the remaining 0.75 of a (max-min), not an equal 0.5.
    done, _ = run_transfers([(0.0, 0.75e9, ["a"], 0.0), (0.0, 0.25e9, ["a", "b"], 0.0)],
                            {"a": 1e9, "b": 0.25e9})
    assert done[0] == pytest.approx(1.0, rel=1e-12)
    assert done[1] == pytest.approx(1.0, rel=1e-12)


def test_transfer_alone_drains_before_a_start_during_its_latency():
    # A (1 GB, latency 0.5 s) alone drains at 1 s; B starts at 1.2 s, while A is still on
    # the wire: B gets the whole link (A's bytes are gone), A is delivered at 1.5 s
    done, net = run_transfers([(0.0, 1e9, ["link"], 0.5), (1.2, 1e9, ["link"], 0.0)],
                              {"link": 1e9})
    assert done[0] == pytest.approx(1.5, rel=1e-12)
    assert done[1] == pytest.approx(2.2, rel=1e-12)
    assert net.num_done == 2 and not net.active


def test_transfer_alone_shares_when_another_starts_before_it_drains():
    # A alone for 0.5 s (0.5 GB), then both at 0.5 GB/s: A drains at 1.5 s, B then alone
    done, _ = run_transfers([(0.0, 1e9, ["link"], 0.25), (0.5, 1e9, ["link"], 0.25)],
                            {"link": 1e9})
    assert done[0] == pytest.approx(1.5 + 0.25, rel=1e-12)
    assert done[1] == pytest.approx(2.0 + 0.25, rel=1e-12)


def test_abort_after_drain_skips_delivery_and_rate_reads_zero():
    env = Environment()
    net = Network(env)
    link = Resource("link", 1e9)
    got = []
    tr = net.start(1e9, Path((link,), 1.0), lambda t: got.append(env.now))
    seen = {}

    def watcher():
        yield env.timeout(0.5)
        seen["mid"] = net.rate_of(tr)
        yield env.timeout(1.0)       # drained at 1 s, on the wire until 2 s
        seen["after"] = net.rate_of(tr)
        assert tr.drained_s == pytest.approx(1.0, rel=1e-12)
        net.abort(tr)
    env.process(watcher())
    env.run()
    assert seen == {"mid": 1e9, "after": 0.0}
    assert got == [] and net.num_aborted == 1 and net.num_done == 0
    assert link.bytes_moved == pytest.approx(1e9, rel=1e-12)


def test_abort_frees_the_bandwidth():
    env = Environment()
    net = Network(env)
    link = Resource("link", 1e9)
    got = {}
    t1 = net.start(1e9, Path((link,), 0.0), lambda tr: got.__setitem__("a", env.now))
    net.start(1e9, Path((link,), 0.0), lambda tr: got.__setitem__("b", env.now))

    def killer():
        yield env.timeout(0.5)     # both have moved 0.25 GB
        net.abort(t1)
    env.process(killer())
    env.run()
    assert "a" not in got
    assert got["b"] == pytest.approx(0.5 + 0.75, rel=1e-12)
    assert net.num_aborted == 1


def test_zero_bytes_take_only_the_latency():
    done, _ = run_transfers([(2.0, 0.0, ["link"], 0.3)], {"link": 1e9})
    assert done[0] == pytest.approx(2.3)


def test_port_capacity_is_set_by_the_slowest_stage():
    # two stages of 1 GPU each holding half the layers: each sends half the bytes in parallel
    assert port_capacity_bytes_per_s([(1e-9, 1, 0.5), (1e-9, 1, 0.5)]) == pytest.approx(2e9)
    # a slower second stage (0.5 GB/s) holding half the KV limits the replica to 1 GB/s
    assert port_capacity_bytes_per_s([(1e-9, 1, 0.5), (2e-9, 1, 0.5)]) == pytest.approx(1e9)


class _Rep:
    def __init__(self, pool, region):
        self.pool, self.region = pool, region
        self.port_out = Resource(f"{pool} out", 1e12)
        self.port_in = Resource(f"{pool} in", 1e12)
        self.fabric_latency_s = 1e-5


class _Link:
    def __init__(self, src, dst, gbps, ms):
        self.src, self.dst = src, dst
        self.bandwidth_bytes_per_s = gbps * 1e9 / 8
        self.latency_s = ms / 1e3


def test_topology_resolution_order():
    topo = Topology([_Link("a", "b", 100, 1), _Link("eu", "us", 10, 40)],
                    cross_region=_Link(None, None, 1, 100))
    a, b = _Rep("a", "eu"), _Rep("b", "us")
    c = _Rep("c", "eu")
    d = _Rep("d", "asia")
    p = topo.path(a, b)                       # pool link first
    assert p.latency_s == pytest.approx(0.001) and p.bottleneck_bytes_per_s == 12.5e9
    p = topo.path(c, b)                       # then the region link
    assert p.latency_s == pytest.approx(0.04) and p.bottleneck_bytes_per_s == 1.25e9
    p = topo.path(a, c)                       # same region: the fabric (ports only)
    assert len(p.resources) == 2 and p.latency_s == 1e-5
    p = topo.path(c, d)                       # cross-region default
    assert p.latency_s == pytest.approx(0.1) and p.bottleneck_bytes_per_s == 0.125e9
    # the region link is one shared resource per direction
    assert topo.path(c, b).resources[2] is topo.path(_Rep("x", "eu"), _Rep("y", "us")).resources[2]
    assert topo.path(b, c).resources[2] is not topo.path(c, b).resources[2]   # per direction
    no_default = Topology([])
    with pytest.raises(LookupError, match="no link between regions"):
        no_default.path(a, b)
