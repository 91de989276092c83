"""Sweeps and capacity planning helpers (the machinery behind ``llmsim.sweep`` and
``llmsim.plan``).

Modules, each with one job:

- :mod:`~llmsim.planning.grid`: grid parsing (``KEY=V1,V2``), grid points, key-path checks,
  the seeds of a point's runs.
- :mod:`~llmsim.planning.executors`: one simulation as a picklable task, run serially, in a
  local process pool, or as Ray remote tasks.
- :mod:`~llmsim.planning.metrics`: the key metrics flattened from a summary (one tidy row per
  run) and per-point means with confidence intervals.
- :mod:`~llmsim.planning.bounds`: roofline bounds (request capacity, latency floors, the
  throughput/interactivity curve) of a scenario's cluster.
- :mod:`~llmsim.planning.evaluate`: loads candidate scenarios and runs their seeds in batches.
- :mod:`~llmsim.planning.max_rate`, :mod:`~llmsim.planning.min_cost`,
  :mod:`~llmsim.planning.pareto`: the three planning questions.
- :mod:`~llmsim.planning.result`: :class:`PlanResult` (text, JSON, files).

Imports flow one way: ``plan``/``sweep`` → ``planning`` → ``api`` → engine.
"""
