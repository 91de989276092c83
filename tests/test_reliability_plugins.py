"""Custom routers and schedulers from Python (docs/reliability.md, "Custom policies").

There is no supported plug-in API yet (the scenario schema accepts only the built-in names, so a
scenario file can never name code). These tests keep the documented stop-gaps honest: if the
engine changes so that they stop working, the documentation must change with it.
"""
from __future__ import annotations

from llmsim.engine.simulation import Simulation
from llmsim.invariants import check_run
from llmsim.scenario import load_scenario
from llmsim.scheduling import policies


def scenario():
    return {"name": "plug", "seed": 2, "model": "llama-3.1-8b",
            "cluster": {"router": "round_robin",
                        "pools": [{"name": "p", "hardware": "h100-sxm", "replicas": 3}]},
            "workload": {"num_requests": 30,
                         "arrival": {"process": "poisson", "rate_per_s": 10},
                         "prompt_tokens": {"dist": "constant", "value": 200},
                         "output_tokens": {"dist": "constant", "value": 10}}}


class LastReplicaRouter:
    """Sends everything to the replica listed last (a router sees replicas through
    ``num_outstanding``, ``kv_usage``, ``capacity_weight``; ``choose`` returns one)."""

    name = "last"

    def choose(self, request, replicas):
        return replicas[-1]


def test_custom_router_through_the_simulation_object():
    sim = Simulation(load_scenario(scenario()))
    sim.cluster.router = LastReplicaRouter()      # before run(): the stop-gap of the docs
    run = sim.run()
    check_run(sim, run)
    assert (run.requests.replica == 2).all()
    assert (run.requests.status == "finished").all()


def test_custom_scheduler_by_replacing_a_registry_entry(monkeypatch):
    calls = []

    class CountingScheduler(policies.VllmScheduler):
        def schedule(self, now):
            calls.append(now)
            return super().schedule(now)

    monkeypatch.setitem(policies.SCHEDULERS, "vllm", CountingScheduler)   # restored after
    sim = Simulation(load_scenario(scenario()))
    run = sim.run()
    check_run(sim, run)
    assert len(calls) >= 30 and calls == sorted(calls)      # simulated time never goes back
    assert all(type(ve.scheduler) is CountingScheduler for r in sim.replicas for ve in r.engines)
    assert (run.requests.status == "finished").all()


def test_a_scenario_file_cannot_name_code(tmp_path):
    """Policy and router names are closed lists in the schema: a dotted path is bad input."""
    import pytest

    from llmsim.errors import InputError
    d = scenario()
    d["cluster"]["router"] = "os.system"
    with pytest.raises(InputError, match="must be one of 'round_robin'"):
        load_scenario(d)
    d = scenario()
    d["cluster"]["pools"][0]["scheduler"] = {"policy": "mypkg.MyScheduler"}
    with pytest.raises(InputError, match="must be one of 'static'"):
        load_scenario(d)
