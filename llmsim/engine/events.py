"""The simulation's event loop: SimPy's event model, driven by a compiled environment.

Why. About a third of a simulation's time went to SimPy's own Python: creating each timeout
(``Timeout.__init__``, ``Environment.schedule``), popping the queue (``Environment.step``) and
resuming the process that waited (``Process._resume``), ≈ 4 events per simulated request.
Calling the same SimPy objects from compiled code does not help: every attribute of a Python
object read or written from C costs ≈ 200 instructions, more than the interpreter's specialised
bytecode. So the loop, the clock, the queue and the hot path's timeouts are native here.

Contract.

- :class:`Environment` has the interface of ``simpy.Environment`` (SimPy 4.1): ``now``,
  ``active_process``, ``schedule``, ``peek``, ``step``, ``run``, ``timeout``, ``event``,
  ``process``, ``all_of``, ``any_of``. SimPy's events, processes, interrupts and conditions run
  on it unchanged (they call back ``schedule`` and read ``now``/``active_process``; the
  fault injectors, the network and the cluster's timers are such SimPy code). Events are
  processed in the order SimPy would process them — by time, then priority (URGENT before
  NORMAL), then scheduling order — with the same semantics for failures (an unhandled failed
  event raises a copy of its exception from ``run``/``step``) and for ``run(until=...)`` (a
  number: run up to that time, its URGENT stop event first; an event: until it is processed,
  returning its value).
- :func:`timeout` (``env.timeout(delay)`` on the hot path) returns a native
  :class:`FastTimeout`: an event with SimPy's attributes (``env``, ``callbacks``, ``value``,
  ``ok``, ``triggered``, ``processed``) that fires ``delay`` from now with NORMAL priority.
  ``Environment.timeout`` returns SimPy's own ``Timeout``, for Python callers.
- :func:`event` (``env.event()`` on the hot path: an engine's wake-up) returns a native
  :class:`FastEvent`, untriggered until its ``succeed(value)`` schedules it now (NORMAL).
- :func:`start_process` (``env.process(generator)``) starts a SimPy ``Process`` resumed by a
  compiled :class:`Resume`, which is also the process's ``_resume`` (what SimPy's interrupts
  and :meth:`~llmsim.engine.replica.Replica._retarget` look up). Values are sent into the
  generator as SimPy sends them; a failed event's exception is thrown in as a copy.

It relies on these SimPy 4 internals: an event's ``callbacks``, ``_ok``, ``_value`` and
``_defused``; a process's ``_generator``, ``_target`` and ``_resume``; ``PENDING`` and
``StopSimulation.callback``. ``tests/test_events_loop.py`` runs SimPy programs on both
environments and requires the same traces.
"""
from __future__ import annotations

from typing import Any, Final

from simpy.core import EmptySchedule, StopSimulation
from simpy.events import PENDING, AllOf, AnyOf, Event, Process
from simpy.events import Timeout as SimpyTimeout

#: SimPy's priorities (simpy.events.URGENT, NORMAL) as plain ints: they order the same
URGENT: Final = 0
NORMAL: Final = 1
#: priority SimPy gives an event whose callbacks a StopSimulation cut short
_RESUMED: Final = -1
_PENDING: Final = PENDING

#: a queued event: (time, priority, event id, event); ids are unique, so entries never tie.
#: (A plain tuple, not ``tuple[float, int, int, Any]``: mypyc would unbox such a tuple on every
#: read from the heap and box a new one on every store.)
Entry = tuple


class Environment:
    """A simulation's clock and event queue, with ``simpy.Environment``'s interface."""

    def __init__(self, initial_time: float = 0.0) -> None:
        self._now: float = float(initial_time)
        self._queue: list[Entry] = []     # a binary heap (_push, _pop)
        self._eid: int = 0
        self._active_proc: Any = None

    @property
    def now(self) -> float:
        """The current simulation time."""
        return self._now

    @property
    def active_process(self) -> Any:
        """The process being resumed, or None."""
        return self._active_proc

    def schedule(self, event: Any, priority: int = NORMAL, delay: float = 0) -> None:
        """Queue ``event`` to be processed ``delay`` from now."""
        eid = self._eid
        self._eid = eid + 1
        _push(self._queue, (self._now + delay, priority, eid, event))

    def peek(self) -> float:
        """Time of the next event (infinity if none)."""
        return self._queue[0][0] if self._queue else float("inf")

    def timeout(self, delay: float, value: Any = None) -> Any:
        """SimPy's ``Timeout(env, delay, value)``."""
        env: Any = self
        return SimpyTimeout(env, delay, value)

    def event(self) -> Any:
        """A new, untriggered SimPy ``Event``."""
        env: Any = self
        return Event(env)

    def process(self, generator: Any) -> Any:
        """Start ``generator`` as a process (:func:`start_process`)."""
        return start_process(self, generator)

    def all_of(self, events: Any) -> Any:
        """SimPy's ``AllOf(env, events)``: triggered when all of ``events`` are."""
        env: Any = self
        return AllOf(env, events)

    def any_of(self, events: Any) -> Any:
        """SimPy's ``AnyOf(env, events)``: triggered when one of ``events`` is."""
        env: Any = self
        return AnyOf(env, events)

    def step(self) -> None:
        """Process the next event (raises ``simpy.core.EmptySchedule`` if there is none)."""
        _process_events(self, True)

    def run(self, until: Any = None) -> Any:
        """Process events until ``until``: None — none are left; a number — that time (which
        must be later than now); an event — it has been processed (returns its value;
        RuntimeError if the events run out first)."""
        if until is not None:
            if not isinstance(until, (Event, FastEvent)):
                at = float(until)
                if at <= self._now:
                    raise ValueError(f"until ({at}) must be greater than the current "
                                     "simulation time")
                me: Any = self
                stop: Any = Event(me)
                stop._ok = True
                stop._value = None
                self.schedule(stop, URGENT, at - self._now)
                until = stop
            elif until.callbacks is None:
                return until.value
            until.callbacks.append(StopSimulation.callback)
        try:
            _process_events(self, False)
        except StopSimulation as exc:
            return exc.args[0]
        except EmptySchedule:
            if until is not None:
                raise RuntimeError(f'No scheduled events left but "until" event was not '
                                   f"triggered: {until}") from None
        return None


class FastEvent:
    """An event made by compiled code (``env.event()`` on the hot path: an engine's wake-up):
    SimPy's ``Event`` as a native object, untriggered until :meth:`succeed`."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.callbacks: Any = []       # list, None once processed
        self._ok = True
        self._value: Any = _PENDING

    def succeed(self, value: Any = None) -> FastEvent:
        """Trigger the event with ``value``: it is processed now, after what is already due
        (NORMAL priority), like SimPy's ``Event.succeed``."""
        if self._value is not _PENDING:
            raise RuntimeError(f"{self!r} has already been triggered")
        self._value = value
        env = self.env
        eid = env._eid
        env._eid = eid + 1
        _push(env._queue, (env._now, NORMAL, eid, self))
        return self

    @property
    def ok(self) -> bool:
        return True

    @property
    def value(self) -> Any:
        if self._value is _PENDING:
            raise AttributeError(f"Value of {self!r} is not yet available")
        return self._value

    @property
    def triggered(self) -> bool:
        return self._value is not _PENDING

    @property
    def processed(self) -> bool:
        return self.callbacks is None

    @property
    def defused(self) -> bool:
        return False


class FastTimeout(FastEvent):
    """A timeout made by compiled code (:func:`timeout`): SimPy's ``Timeout`` as a native
    object. Always succeeds, with value None."""

    def __init__(self, env: Environment, delay: float) -> None:
        self.env = env
        self.callbacks = []
        self._ok = True
        self._value = None
        self._delay = delay

    def __repr__(self) -> str:
        return f"<FastTimeout({self._delay}) object at {id(self):#x}>"


def event(env: Environment) -> FastEvent:
    """``env.event()`` for compiled callers: a :class:`FastEvent`."""
    return FastEvent(env)


def timeout(env: Environment, delay: float) -> FastTimeout:
    """``env.timeout(delay)`` for compiled callers: a :class:`FastTimeout`."""
    if delay < 0:
        raise ValueError(f"Negative delay {delay}")
    ev = FastTimeout(env, delay)
    eid = env._eid
    env._eid = eid + 1
    _push(env._queue, (env._now + delay, NORMAL, eid, ev))
    return ev


class Resume:
    """Resumes one process's generator with the value of the event it waited for (SimPy's
    ``Process._resume``): sends the value (or throws a copy of the failure) into the generator
    and hooks itself on the next event the generator yields; when the generator ends, the
    process is triggered with its return value or its exception."""

    def __init__(self, proc: Any) -> None:
        self.proc: Any = proc
        self.env: Environment = proc.env
        self.gen: Any = proc._generator

    def __call__(self, event: Any) -> None:
        env = self.env
        proc = self.proc
        env._active_proc = proc
        nxt: Any = None
        while True:
            try:
                if isinstance(event, FastEvent):      # (these always succeed)
                    fast: FastEvent = event
                    value = fast._value
                    nxt = next(self.gen) if value is None else self.gen.send(value)
                elif event._ok:
                    value = event._value
                    # send(None) is next(): a builtin call, not a method looked up by name
                    nxt = next(self.gen) if value is None else self.gen.send(value)
                else:
                    event._defused = True
                    failure = event._value
                    exc = type(failure)(*failure.args)
                    exc.__cause__ = failure
                    nxt = self.gen.throw(exc)
            except StopIteration as stop:
                nxt = None
                proc._ok = True
                proc._value = stop.args[0] if len(stop.args) else None
                env.schedule(proc)
                break
            except BaseException as err:
                nxt = None
                proc._ok = False
                proc._value = err
                env.schedule(proc)
                break
            if isinstance(nxt, FastEvent):
                cbs: Any = nxt.callbacks
            else:
                try:
                    cbs = nxt.callbacks
                except AttributeError:
                    raise RuntimeError(f'Invalid yield value "{nxt}" in process '
                                       f"{getattr(self.gen, '__name__', self.gen)}") from None
            if cbs is not None:      # not processed yet: wait for it
                cbs.append(self)
                break
            event = nxt
        proc._target = nxt
        env._active_proc = None


def start_process(env: Any, generator: Any) -> Any:
    """``env.process(generator)``: a SimPy ``Process`` resumed by a compiled :class:`Resume`."""
    proc: Any = Process(env, generator)
    fast = Resume(proc)
    setattr(proc, "_resume", fast)       # what interrupts and _retarget look up
    proc._target.callbacks[0] = fast     # the Initialize event Process() scheduled
    return proc


def _process_events(env: Environment, once: bool) -> None:
    """Process the queue's events in order: one (``once``), or until it is empty (raises
    EmptySchedule) or a callback raises StopSimulation."""
    queue = env._queue
    while True:
        if not queue:
            raise EmptySchedule()
        item = _pop(queue)
        env._now = item[0]
        event: Any = item[3]
        if isinstance(event, FastEvent):
            fast: FastEvent = event
            callbacks: Any = fast.callbacks
            fast.callbacks = None
        else:
            callbacks = event.callbacks
            event.callbacks = None
        i = 0
        try:
            for cb in callbacks:
                if isinstance(cb, Resume):
                    cb(event)
                else:
                    cb(event)
                i += 1
        except StopSimulation:
            # the rest of the callbacks run when the loop is run again
            event.callbacks = callbacks[i + 1:]
            env.schedule(event, _RESUMED)
            raise
        if not isinstance(event, FastEvent) and not event._ok \
                and not hasattr(event, "_defused"):
            failure = event._value
            exc = type(failure)(*failure.args)
            exc.__cause__ = failure
            raise exc
        if once:
            return


# The queue is a binary heap of entries ordered as tuples (time, then priority, then id): the
# order of ``heapq``, with the comparisons done on machine values (heapq's compare tuples
# generically: ≈ 4x the instructions per push or pop in the compiled build). Ids are unique, so
# the order in which entries leave is fully determined.

def _before(a: Entry, b: Entry) -> bool:
    """Entry ``a`` comes out before ``b``."""
    ta: float = a[0]
    tb: float = b[0]
    if ta != tb:
        return ta < tb
    pa: int = a[1]
    pb: int = b[1]
    if pa != pb:
        return pa < pb
    ia: int = a[2]
    ib: int = b[2]
    return ia < ib


def _push(heap: list[Entry], item: Entry) -> None:
    """Add ``item`` to ``heap``."""
    heap.append(item)
    i = len(heap) - 1
    while i > 0:
        parent = (i - 1) >> 1
        up = heap[parent]
        if not _before(item, up):
            break
        heap[i] = up
        i = parent
    heap[i] = item


def _pop(heap: list[Entry]) -> Entry:
    """Remove and return the first entry of ``heap`` (IndexError if it is empty)."""
    last = heap.pop()
    if not heap:
        return last
    first = heap[0]
    n = len(heap)
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        right = child + 1
        if right < n and _before(heap[right], heap[child]):
            child = right
        low = heap[child]
        if not _before(low, last):
            break
        heap[i] = low
        i = child
    heap[i] = last
    return first
