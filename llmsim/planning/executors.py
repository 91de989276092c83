"""Run simulations as independent tasks: serially, in a local process pool, or on Ray.

Contract: a :class:`RunTask` holds plain, picklable data (the point's scenario data, its base
directory and the seed); :func:`run_task` loads and simulates it and returns a
:class:`RunOutcome` that carries the summary, or the error text when the run failed. It never
raises for a failing run: bad input (an :class:`~llmsim.errors.InputError`) and internal errors
alike end up in ``RunOutcome.error``, so one bad point never sinks a sweep.

Executors share one method, ``run(tasks, on_done=None) -> list[RunOutcome]`` (outcomes in task
order, whatever order they finished in; ``on_done(outcome)`` is called as each one finishes), and
are context managers:

- :class:`SerialExecutor`: in this process, one after the other.
- :class:`LocalExecutor`: a ``concurrent.futures.ProcessPoolExecutor`` with ``jobs`` workers
  (kept alive across ``run`` calls until closed). A worker that dies takes its tasks with it;
  they are reported failed.
- :class:`RayExecutor`: plain Ray remote tasks (``num_cpus=1`` each). Joins the cluster at
  ``address`` (``"auto"`` or ``"ray://host:10001"``), uses an already initialised Ray, or starts
  a local one (and shuts that one down on close). The nodes must have llmsim installed and see
  the same paths for model/hardware cards and traces.

Runs are deterministic, so every executor returns identical summaries for the same tasks.
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Sequence

from llmsim.errors import InputError, input_problem

__all__ = ["RunTask", "RunOutcome", "run_task", "SerialExecutor", "LocalExecutor",
           "RayExecutor", "make_executor", "BACKENDS"]

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RunTask:
    """One simulation: scenario ``data`` (``Scenario.to_dict()`` of the point, as a plain
    dict), ``base_dir`` for its relative paths, and the ``seed`` that replaces the scenario's.
    ``keep_result``: also return the :class:`~llmsim.api.Result` (requests, timeline) for
    reports."""

    index: int
    data: dict
    base_dir: str | None
    seed: int
    keep_result: bool = False
    label: str = ""


@dataclass
class RunOutcome:
    """What came back from one :class:`RunTask`: ``summary`` (DESIGN §9) or ``error`` (text);
    ``result`` when the task asked to keep it (its ``scenario`` attribute is dropped to keep the
    transfer small)."""

    index: int
    seed: int
    summary: dict | None = None
    error: str | None = None
    result: object = field(default=None, repr=False)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_task(task: RunTask) -> RunOutcome:
    """Load and simulate ``task``; failures become ``RunOutcome.error`` (see module doc)."""
    t0 = time.perf_counter()
    try:
        from llmsim.api import simulate
        from llmsim.scenario import load_scenario
        scn = load_scenario(dict(task.data, seed=int(task.seed)), base_dir=task.base_dir)
        res = simulate(scn, progress=False)
        out = RunOutcome(task.index, task.seed, summary=res.summary)
        if task.keep_result:
            res.scenario = None
            if task.label:
                res.name = task.label
            out.result = res
    except InputError as exc:
        out = RunOutcome(task.index, task.seed,
                         error="; ".join(p.format() for p in exc.problems))
    except Exception as exc:  # noqa: BLE001 - a failing run is reported, not raised
        tb = traceback.format_exc(limit=-3)
        out = RunOutcome(task.index, task.seed,
                         error=f"internal error {type(exc).__name__}: {exc}\n{tb}")
    out.wall_s = time.perf_counter() - t0
    return out


def _crashed(task: RunTask, exc: BaseException) -> RunOutcome:
    return RunOutcome(task.index, task.seed,
                      error=f"worker failed: {type(exc).__name__}: {exc}")


class _Base:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        pass


class SerialExecutor(_Base):
    """Runs tasks in this process, in order."""

    jobs = 1

    def run(self, tasks: Sequence[RunTask], on_done: Callable | None = None
            ) -> list[RunOutcome]:
        out = []
        for t in tasks:
            o = run_task(t)
            if on_done:
                on_done(o)
            out.append(o)
        return out


class LocalExecutor(_Base):
    """A process pool of ``jobs`` workers (started lazily, kept until :meth:`close`). A single
    task, or ``jobs == 1``, runs in this process."""

    def __init__(self, jobs: int | None = None):
        self.jobs = int(jobs) if jobs else (os.cpu_count() or 1)
        self._pool = None

    def _get_pool(self):
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor
            self._pool = ProcessPoolExecutor(max_workers=self.jobs)
        return self._pool

    def run(self, tasks: Sequence[RunTask], on_done: Callable | None = None
            ) -> list[RunOutcome]:
        tasks = list(tasks)
        if self.jobs <= 1 or len(tasks) <= 1:
            return SerialExecutor().run(tasks, on_done)
        from concurrent.futures import as_completed
        pool = self._get_pool()
        futures = {pool.submit(run_task, t): t for t in tasks}
        got: dict[int, RunOutcome] = {}
        try:
            for fut in as_completed(futures):
                t = futures[fut]
                try:
                    o = fut.result()
                except Exception as exc:  # noqa: BLE001 - a dead worker fails its task
                    o = _crashed(t, exc)
                    self._discard_broken_pool()
                got[t.index] = o
                if on_done:
                    on_done(o)
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            raise
        return [got[t.index] for t in tasks]

    def _discard_broken_pool(self) -> None:
        pool = self._pool
        if pool is not None and getattr(pool, "_broken", False):
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(_Base):
    """Ray remote tasks (see module doc). ``jobs`` caps the CPUs of a Ray this executor starts
    locally; tasks in flight are not capped otherwise (Ray schedules them on free CPUs)."""

    def __init__(self, address: str | None = None, jobs: int | None = None):
        try:
            import ray
        except ImportError:
            raise InputError(input_problem(
                "the Ray backend needs the 'ray' package: pip install 'llmsim[ray]'",
                where="--backend", value="ray")) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            import logging
            kw: dict = {"logging_level": logging.WARNING}
            if address:
                kw["address"] = address
            else:
                kw.update(include_dashboard=False, num_cpus=int(jobs) if jobs else None)
            try:
                ray.init(**kw)
            except Exception as exc:  # noqa: BLE001 - cannot reach/start the cluster
                raise InputError(input_problem(f"cannot start or join Ray: {exc}",
                                               where="--address", value=address)) from None
            self._started = True
        self._remote = ray.remote(num_cpus=1)(run_task)
        self.jobs = int(ray.cluster_resources().get("CPU", 1))

    def run(self, tasks: Sequence[RunTask], on_done: Callable | None = None
            ) -> list[RunOutcome]:
        ray = self._ray
        tasks = list(tasks)
        refs = {self._remote.remote(t): t for t in tasks}
        pending = list(refs)
        got: dict[int, RunOutcome] = {}
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                t = refs[ref]
                try:
                    o = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost worker fails its task
                    o = _crashed(t, exc)
                got[t.index] = o
                if on_done:
                    on_done(o)
        return [got[t.index] for t in tasks]

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


def make_executor(backend: str = "local", *, jobs: int | None = None,
                  address: str | None = None):
    """An executor for ``backend`` (``local`` or ``ray``); ``jobs`` workers (local: default
    the number of CPUs; 1 runs in this process)."""
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise InputError(input_problem("must be an integer >= 1", where="--jobs", value=jobs))
    if backend == "local":
        if address:
            raise InputError(input_problem("--address only applies to --backend ray",
                                           where="--address", value=address))
        return SerialExecutor() if jobs == 1 else LocalExecutor(jobs)
    if backend == "ray":
        return RayExecutor(address, jobs)
    from llmsim.errors import suggest
    raise InputError(input_problem(f"unknown backend; allowed: {', '.join(BACKENDS)}."
                                   + suggest(str(backend), BACKENDS), where="--backend",
                                   value=backend))
