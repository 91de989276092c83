"""The collector thresholds a run sets: raised inside, the caller's restored after (also on an
error, nested, and when the caller disabled collection), and used by ``simulate``."""
import gc

import pytest

from llmsim.api import simulate
from llmsim.engine import gcpolicy
from llmsim.engine.gcpolicy import RUN_GEN0_THRESHOLD, run_collection_thresholds
from tests.test_simulation import small


@pytest.fixture
def thresholds():
    old = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*old)


def test_raised_inside_and_restored_after(thresholds):
    with run_collection_thresholds():
        assert gc.get_threshold() == (RUN_GEN0_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_restored_after_an_error(thresholds):
    with pytest.raises(ZeroDivisionError):
        with run_collection_thresholds():
            1 / 0
    assert gc.get_threshold() == (700, 10, 10)


def test_nested_blocks_restore_the_outer_callers_setting(thresholds):
    with run_collection_thresholds():
        with run_collection_thresholds():
            pass
        assert gc.get_threshold()[0] == RUN_GEN0_THRESHOLD     # the outer block still runs
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("caller", [(0, 10, 10), (RUN_GEN0_THRESHOLD * 2, 5, 5)])
def test_a_disabled_or_higher_setting_is_left_alone(thresholds, caller):
    gc.set_threshold(*caller)
    with run_collection_thresholds():
        assert gc.get_threshold() == caller
    assert gc.get_threshold() == caller


def test_simulate_runs_its_event_loop_inside_the_block(thresholds, monkeypatch):
    seen = []
    real = gcpolicy.run_collection_thresholds

    def spy():
        seen.append("entered")
        return real()
    monkeypatch.setattr("llmsim.engine.simulation.run_collection_thresholds", spy)
    res = simulate(small(n=50))
    assert seen == ["entered"] and res.summary["requests"]["finished"] == 50
    assert gc.get_threshold() == (700, 10, 10)


def test_the_run_lets_its_raw_rows_go_inside_the_block(thresholds, monkeypatch):
    """The tables are built and the recorder's raw rows dropped while the raised threshold
    holds, so the collection the restored thresholds set off does not walk them."""
    from llmsim.engine.simulation import Simulation
    from llmsim.metrics.recorder import Recorder
    from llmsim.scenario import load_scenario
    at_release = []
    real = Recorder.release

    def spy(self):
        at_release.append((gc.get_threshold()[0], len(self.rows), len(self.timeline)))
        real(self)
    monkeypatch.setattr(Recorder, "release", spy)
    sim = Simulation(load_scenario(small(n=50)))
    out = sim.run()
    assert len(at_release) == 1
    threshold, rows, samples = at_release[0]
    assert threshold == RUN_GEN0_THRESHOLD and rows == 50 and samples == len(out.timeline) > 0
    assert len(out.requests) == 50 and out.requests["finish_s"].notna().all()
    assert len(sim.recorder.rows) == 0 and sim.recorder.timeline == []
    assert gc.get_threshold() == (700, 10, 10)
