"""llmsim's compiled environment (llmsim/engine/events.py) against simpy.Environment: the same
SimPy programs give the same traces (times, order, values, exceptions)."""
from __future__ import annotations

import heapq
import random

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.engine.events import (Environment, FastEvent, FastTimeout, _pop, _push, event,
                                  start_process, timeout)


def _program(env, trace, fast: bool):
    """Processes that wait on timeouts (``fast``: llmsim's ``timeout`` in one of them), on
    each other, on plain events, on conditions; interrupt each other; fail and catch."""
    def wait(d):
        return timeout(env, d) if fast and isinstance(env, Environment) else env.timeout(d)

    def sleeper(name, delays):
        for d in delays:
            try:
                yield wait(d)
                trace.append((env.now, name, "woke"))
            except simpy.Interrupt as intr:
                trace.append((env.now, name, "interrupted", intr.cause))
        return name + " done"

    def failer():
        yield env.timeout(1.5)
        raise KeyError("boom")

    def watcher(procs, fail_proc):
        try:
            yield fail_proc
        except KeyError as exc:
            trace.append((env.now, "watcher caught", exc.args))
        values = yield env.all_of(procs)
        trace.append((env.now, "watcher", sorted(values.values())))
        first = yield env.any_of([env.timeout(0.25, value="a"), env.timeout(0.5, value="b")])
        trace.append((env.now, "any", list(first.values())))
        ev = env.event()
        env.process(trigger(ev))
        got = yield ev
        trace.append((env.now, "event", got))

    def trigger(ev):
        yield env.timeout(0.125)
        ev.succeed("payload")

    def interrupter(victim):
        yield env.timeout(0.75)
        victim.interrupt("cut")
        yield env.timeout(0)
        trace.append((env.now, "interrupter", victim.is_alive))

    rng = random.Random(7)
    a = env.process(sleeper("a", [rng.choice([0.5, 1.0, 0.25]) for _ in range(6)]))
    b = env.process(sleeper("b", [0.5] * 4))
    c = env.process(failer())
    env.process(interrupter(a))
    return env.process(watcher([a, b], c))


@pytest.mark.parametrize("fast", [False, True])
def test_same_trace_as_simpy(fast):
    traces = []
    for make in (simpy.Environment, Environment):
        env = make()
        trace = []
        last = _program(env, trace, fast)
        env.run(until=2.0)
        trace.append(("paused", env.now, env.peek()))
        env.run(until=last)
        trace.append(("stopped", env.now, last.value))
        env.run()
        trace.append(("drained", env.now))
        traces.append(trace)
    assert traces[0] == traces[1]
    assert len(traces[0]) > 15


def test_unhandled_failure_raises_a_copy_from_run():
    for make in (simpy.Environment, Environment):
        env = make()

        def bad():
            yield env.timeout(1)
            raise ValueError("bad step")
        env.process(bad())
        with pytest.raises(ValueError, match="bad step") as info:
            env.run()
        assert isinstance(info.value.__cause__, ValueError)
        assert env.now == 1


def test_until_checks_and_empty_schedule():
    env = Environment()
    env.run(until=1.0)
    assert env.now == 1.0
    with pytest.raises(ValueError, match="must be greater"):
        env.run(until=0.5)
    never = env.event()
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        env.run(until=never)
    with pytest.raises(simpy.core.EmptySchedule):
        env.step()
    assert env.peek() == float("inf")


def test_fast_timeout_is_an_event_simpy_code_can_wait_on():
    env = Environment()
    seen = []

    def proc():
        t = timeout(env, 2.5)
        assert isinstance(t, FastTimeout) and t.triggered and not t.processed
        value = yield t
        seen.append((env.now, value, t.processed, t.ok))
    p = start_process(env, proc())
    env.run()
    assert seen == [(2.5, None, True, True)]
    assert not p.is_alive and p.ok
    with pytest.raises(ValueError, match="Negative delay"):
        timeout(env, -1.0)


def test_event_ids_count_scheduled_events():
    env = Environment()

    def proc():
        for _ in range(3):
            yield timeout(env, 1.0)
    env.process(proc())
    env.run()
    # Initialize, three timeouts, the process's own end
    assert env._eid == 5


@pytest.mark.parametrize("fast", [False, True])
def test_same_order_at_equal_times(fast):
    """Events at the same time run by priority then scheduling order: a fast timeout is
    NORMAL, and the callbacks a stop cut short run first when the loop is run again."""
    traces = []
    for make in (simpy.Environment, Environment):
        env = make()
        trace = []
        gate = env.event()

        def wait(d):
            return timeout(env, d) if fast and isinstance(env, Environment) else env.timeout(d)

        def early():                 # its timeout is scheduled first
            yield env.timeout(3.0)
            trace.append((env.now, "early"))

        def late():
            yield env.timeout(0.5)
            yield wait(2.5)          # same time as early's, scheduled after it
            trace.append((env.now, "late"))

        def opener():
            yield env.timeout(1.0)
            yield env.timeout(2.0)   # scheduled after early's and late's
            gate.succeed("open")
            yield env.timeout(0)     # due with the gate's remaining callbacks
            trace.append((env.now, "opener"))

        def gated():
            yield env.timeout(2.5)   # registers on gate after run()'s stop callback
            value = yield gate
            trace.append((env.now, "gated", value))

        for p in (early, late, opener, gated):
            env.process(p())
        env.run(until=2.0)
        trace.append(("until", env.run(until=gate)))
        env.run()
        traces.append(trace)
    assert traces[0] == traces[1]
    assert [t[1] for t in traces[1] if len(t) > 1 and t[0] == 3.0] == \
        ["early", "late", "gated", "opener"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.5]), st.sampled_from([-1, 0, 1]),
                          st.booleans()), max_size=60))
def test_queue_pops_in_heapq_order(ops):
    """The native heap gives entries back in heapq's order, pushes and pops interleaved."""
    ours, ref = [], []
    for eid, (t, prio, pop) in enumerate(ops):
        if pop and ref:
            assert _pop(ours) == heapq.heappop(ref)
        else:
            _push(ours, (t, prio, eid, None))
            heapq.heappush(ref, (t, prio, eid, None))
    while ref:
        assert _pop(ours) == heapq.heappop(ref)
    assert not ours


def test_fast_event_wakes_like_a_simpy_event():
    """A FastEvent (an engine's wake-up) is processed where SimPy's Event would be: after
    what is already due at that time, with the value given to succeed()."""
    traces = []
    for fast in (False, True):
        env = Environment()
        trace = []
        gate = event(env) if fast else env.event()

        def sleeper():
            value = yield gate
            trace.append((env.now, "woke", value))

        def other():
            yield env.timeout(1.0)
            trace.append((env.now, "other"))

        def waker():
            yield env.timeout(1.0)   # the gate it triggers comes after other's timeout
            gate.succeed("go")
            trace.append((env.now, "succeeded", gate.triggered))
        for p in (sleeper, waker, other):
            env.process(p())
        env.run()
        traces.append(trace)
    assert traces[0] == traces[1] == [(1.0, "succeeded", True), (1.0, "other"),
                                      (1.0, "woke", "go")]
    with pytest.raises(RuntimeError, match="already been triggered"):
        gate.succeed()
    assert isinstance(gate, FastEvent) and gate.processed and gate.value == "go"
