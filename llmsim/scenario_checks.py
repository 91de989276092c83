"""Semantic checks of a scenario: what the schema alone cannot see.

Contract: :func:`check_scenario` takes a schema-valid :class:`~llmsim.scenario_schema.Scenario`
and adds every problem found to a :class:`Reporter` (it never raises for bad input): unknown
model / hardware (catalog suggestions), unique pool names, prefill pools without decode pools
and vice versa, tp that does not divide the attention heads (or KV heads), pp above the layer
count, ep on dense models, scheduler/memory combinations that contradict the policy, plans whose
weights do not fit (:func:`llmsim.cost.memory.memory_plan`), link and fault endpoints naming
unknown pools, missing files, the workload's own ``check()`` (missing/empty/malformed traces)
and endless workloads. :func:`check_raw` runs what it can when the schema failed (the model,
every pool valid on its own, the workload section when valid on its own) so that a file with
schema errors still reports those problems too.

Every problem points at the scenario file and the line of the key it is about (through
:class:`Reporter`), or at the ``--set`` that wrote that key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmsim.errors import InputError, Problem, input_problem, suggest
from llmsim.scenario_errors import blame
from llmsim.yaml_lines import dotted

POOLS = ("cluster", "pools")


@dataclass
class Reporter:
    """Collects problems, each located at a key path of the scenario."""

    where: str | None
    lines: dict[tuple, int]
    override_where: dict[tuple, str]
    base_dir: Path
    problems: list[Problem] = field(default_factory=list)

    def add(self, message: str, path: tuple, value=...) -> None:
        src, line = blame(tuple(path), where=self.where, lines=self.lines,
                          override_where=self.override_where)
        self.problems.append(input_problem(message, where=src, line=line,
                                           key=dotted(path) or None, value=value))

    def add_error(self, exc: InputError, path: tuple) -> None:
        """Re-locate the problems of an InputError raised by a loader at ``path``."""
        for p in exc.problems:
            msg = p.message
            if p.where and p.where not in ("hardware", "model", self.where):
                msg = f"{msg} [{p.where}{':' + str(p.line) if p.line else ''}]"
            self.add(msg, path, p.value if p.has_value else ...)


# ----------------------------------------------------------------------------- references
def load_model_ref(ref, rep: Reporter, path: tuple):
    """ModelSpec for a scenario reference, or None after reporting the problem."""
    from llmsim.models.catalog import load_model
    from llmsim.scenario_schema import resolve_path_ref
    try:
        return load_model(resolve_path_ref(ref, rep.base_dir))
    except InputError as exc:
        rep.add_error(exc, path)
        return None


def load_hardware_ref(ref, rep: Reporter, path: tuple):
    from llmsim.hardware.catalog import load_hardware
    from llmsim.scenario_schema import resolve_path_ref
    try:
        return load_hardware(resolve_path_ref(ref, rep.base_dir))
    except InputError as exc:
        rep.add_error(exc, path)
        return None


# ----------------------------------------------------------------------------- entry points
def check_raw(data: dict, rep: Reporter) -> None:
    """Checks that run on raw data when the schema failed: the model, every pool that is
    valid on its own (hardware, parallel plan, policy, memory fit) or at least its hardware
    name, and the workload section when it is valid on its own."""
    from pydantic import ValidationError

    from llmsim.scenario_schema import PoolConfig
    model = None
    if isinstance(data.get("model"), str) and data["model"].strip():
        model = load_model_ref(data["model"], rep, ("model",))
    cluster = data.get("cluster")
    pools = cluster.get("pools") if isinstance(cluster, dict) else None
    if isinstance(pools, list):
        for i, p in enumerate(pools):
            if not isinstance(p, dict):
                continue
            try:
                pool = PoolConfig.model_validate({"name": f"pool{i}", **p},
                                                 context={"base_dir": rep.base_dir})
            except ValidationError:
                if isinstance(p.get("hardware"), str) and p["hardware"]:
                    load_hardware_ref(p["hardware"], rep, POOLS + (i, "hardware"))
                continue
            _check_pool(pool, i, model, rep)
    if "workload" in data:
        from llmsim.workload.config import WorkloadConfig
        try:
            sim = data.get("simulation") if isinstance(data.get("simulation"), dict) else {}
            wl = WorkloadConfig.model_validate(data["workload"], context={
                "base_dir": rep.base_dir, "simulation_duration_s": sim.get("duration_s")})
        except ValidationError:
            return  # already reported by the full validation
        seed = data.get("seed") if isinstance(data.get("seed"), int) and data["seed"] >= 0 else 0
        _check_workload(wl, sim.get("duration_s"), seed, rep)


def check_scenario(sc, rep: Reporter) -> None:
    """All semantic checks of a schema-valid scenario (see module docstring)."""
    model = load_model_ref(sc.model, rep, ("model",))
    if model is not None:
        sc._model_spec = model
    pools = sc.cluster.pools
    _check_pool_names(pools, rep)
    _check_roles(pools, rep)
    for i, pool in enumerate(pools):
        _check_pool(pool, i, model, rep)
    _check_network(sc, rep)
    _check_topology(sc, rep)
    _check_faults(sc, rep)
    _check_workload(sc.workload, sc.simulation.duration_s, sc.seed, rep)
    if model is not None:
        _check_lengths_fit_context(sc.workload, model, rep)


def _min_length(dist) -> int:
    """Smallest length a synthetic length distribution can draw."""
    if dist is None:
        return 1
    if getattr(dist, "dist", None) == "constant":
        return int(dist.value)
    return int(getattr(dist, "min", 1) or 1)


def _check_lengths_fit_context(workload, model, rep: Reporter) -> None:
    """Synthetic lengths that can never fit the model's context would only produce a run in
    which every request is rejected: say so before simulating. (Trace rows are checked one by
    one at run time and rejected with a reason.)"""
    parts = [((), workload)] + [(("sources", i), s)
                                for i, s in enumerate(getattr(workload, "sources", None) or ())]
    for path, part in parts:
        prompt = getattr(part, "prompt_tokens", None)
        output = getattr(part, "output_tokens", None)
        if prompt is None and output is None:
            continue
        shortest = _min_length(prompt) + _min_length(output)
        if shortest > model.max_model_len:
            rep.add(f"every request needs at least {shortest} tokens (prompt + output) but "
                    f"{model.name}'s context length is {model.max_model_len}; lower the lengths",
                    ("workload",) + path + ("prompt_tokens",),
                    getattr(prompt, "value", getattr(prompt, "min", None)))


# ----------------------------------------------------------------------------- cluster
def _check_pool_names(pools, rep: Reporter) -> None:
    first: dict[str, int] = {}
    for i, p in enumerate(pools):
        if p.name in first:
            rep.add(f"pool names must be unique: '{p.name}' is also pool {first[p.name]}",
                    POOLS + (i, "name"), p.name)
        else:
            first[p.name] = i


def _check_roles(pools, rep: Reporter) -> None:
    roles = {p.role for p in pools}
    if "prefill" in roles and "decode" not in roles:
        rep.add("a pool with role 'prefill' needs a pool with role 'decode' to hand its "
                "requests to (disaggregated serving); add one or make the pool 'mixed'",
                POOLS + (_first(pools, "prefill"), "role"), "prefill")
    if "decode" in roles and "prefill" not in roles:
        rep.add("a pool with role 'decode' needs a pool with role 'prefill' to receive "
                "prefilled requests from; add one or make the pool 'mixed'",
                POOLS + (_first(pools, "decode"), "role"), "decode")


    for i, p in enumerate(pools):
        if p.role != "mixed" and p.scheduler.policy == "static":
            rep.add(f"a '{p.role}' pool hands requests over between steps, which request-level "
                    "batching cannot do (nothing joins or leaves a static batch); use policy "
                    "'orca', 'vllm' or 'sarathi'", POOLS + (i, "scheduler", "policy"), "static")


def _first(pools, role: str) -> int:
    return next(i for i, p in enumerate(pools) if p.role == role)


def _check_pool(pool, i: int, model, rep: Reporter) -> None:
    base = POOLS + (i,)
    hw = load_hardware_ref(pool.hardware, rep, base + ("hardware",))
    if hw is not None:
        pool._hardware_spec = hw
    ok = _check_parallel(pool, base, model, rep)
    _check_policy(pool, base, rep)
    spec = pool.scheduler.speculative
    if spec is not None and spec.draft_model:
        load_model_ref(spec.draft_model, rep, base + ("scheduler", "speculative", "draft_model"))
    if pool.stages:
        if ok and model is not None:
            _check_stages(pool, base, model, rep)
    elif ok and model is not None and hw is not None:
        from llmsim.cost.memory import memory_plan
        mem = pool.effective_memory()
        try:
            memory_plan(model, hw, pool.parallel_config(), pool.quant_config(),
                        mem.gpu_memory_utilization, mem.block_size,
                        pool.effective_scheduler().max_num_batched_tokens,
                max_num_seqs=pool.scheduler.max_num_seqs)
        except InputError as exc:
            for p in exc.problems:
                rep.add(f"pool '{pool.name}' does not fit: {p.message}", base)


def _check_parallel(pool, base: tuple, model, rep: Reporter) -> bool:
    """tp/pp/ep against the model's shape; False when the memory plan cannot be computed."""
    if model is None:
        return False
    tp, pp, ep = pool.parallel.tp, pool.parallel.pp, pool.parallel.ep
    ok = True
    heads, kv_heads = model.num_attention_heads, model.num_kv_heads
    if heads % tp:
        divisors = [d for d in range(1, heads + 1) if heads % d == 0]
        rep.add(f"tp must divide the model's num_attention_heads ({heads} for {model.name}); "
                f"allowed: {', '.join(map(str, divisors))}", base + ("parallel", "tp"), tp)
        ok = False
    elif not model.is_mla and kv_heads % tp and tp % kv_heads:
        rep.add(f"tp must divide the model's num_kv_heads ({kv_heads}) or be a multiple of it "
                "(KV heads are split or replicated across the tp group)",
                base + ("parallel", "tp"), tp)
        ok = False
    if pp > model.num_layers:
        rep.add(f"pp cannot exceed the model's num_layers ({model.num_layers} for "
                f"{model.name}): every pipeline stage needs at least one layer",
                base + ("parallel", "pp"), pp)
        ok = False
    if ep > 1:
        if not model.is_moe:
            rep.add(f"ep (expert parallelism) applies to mixture-of-experts models only; "
                    f"{model.name} is dense: use ep: 1", base + ("parallel", "ep"), ep)
            ok = False
        elif tp % ep or model.num_experts % ep:
            rep.add(f"ep must divide tp ({tp}) and the model's num_experts "
                    f"({model.num_experts}): experts are split over ep GPUs of the tp group",
                    base + ("parallel", "ep"), ep)
            ok = False
    return ok


def _check_policy(pool, base: tuple, rep: Reporter) -> None:
    s, m = pool.scheduler, pool.memory
    sched = base + ("scheduler",)
    if s.policy in ("static", "orca") and s.enable_chunked_prefill:
        rep.add(f"policy '{s.policy}' schedules whole prompts; enable_chunked_prefill must be "
                "false or null (use policy 'sarathi' or 'vllm' for chunked prefill)",
                sched + ("enable_chunked_prefill",), True)
    if s.policy == "sarathi" and s.enable_chunked_prefill is False:
        rep.add("policy 'sarathi' is chunked prefill by definition; enable_chunked_prefill "
                "must be true or null", sched + ("enable_chunked_prefill",), False)
    manager = pool.effective_memory().manager
    if m.enable_prefix_caching and manager != "paged":
        rep.add("prefix caching shares full KV blocks and needs memory.manager 'paged'",
                base + ("memory", "enable_prefix_caching"), True)
    if s.preemption_mode == "swap" and m.swap_space_gb == 0 and manager == "paged":
        rep.add("preemption_mode 'swap' copies KV to host memory: set memory.swap_space_gb "
                "> 0 (vLLM uses 4), or use preemption_mode 'recompute'",
                sched + ("preemption_mode",), "swap")
    budget = pool.effective_scheduler().max_num_batched_tokens
    if budget < s.max_num_seqs and s.policy != "static":
        rep.add(f"max_num_batched_tokens ({budget}) is below max_num_seqs ({s.max_num_seqs}): "
                "a step could not give every running request its decode token",
                sched + ("max_num_batched_tokens",), budget)


def _check_network(sc, rep: Reporter) -> None:
    names = [p.name for p in sc.cluster.pools]
    regions = sorted({p.region for p in sc.cluster.pools}
                     | {st.region for p in sc.cluster.pools for st in (p.stages or [])
                        if st.region})
    endpoints = names + [r for r in regions if r not in names]
    seen: dict[frozenset, int] = {}
    for j, link in enumerate(sc.cluster.network.links):
        path = ("cluster", "network", "links", j)
        for end in ("src", "dst"):
            v = getattr(link, end)
            if v not in endpoints:
                rep.add(f"unknown link endpoint: name a pool ({', '.join(names)}) or a region "
                        f"({', '.join(regions)})" + _hint(v, endpoints), path + (end,), v)
        pair = frozenset((link.src, link.dst))
        if pair in seen:
            rep.add(f"link {link.src}–{link.dst} is defined twice (also links.{seen[pair]}); "
                    "links are bidirectional: define each pair once", path)
        else:
            seen[pair] = j


def _hint(word: str, choices) -> str:
    """'. Did you mean X?' or ''."""
    h = suggest(word, choices)
    return "." + h if h else ""


def _check_faults(sc, rep: Reporter) -> None:
    """Spot and churn sections: pool names, trace files (exist, parse: rows and pools)."""
    names = [p.name for p in sc.cluster.pools]
    faults = sc.cluster.faults
    for what, cfg in (("spot", faults.spot), ("churn", faults.churn)):
        if cfg is None:
            continue
        base = ("cluster", "faults", what)
        for j, name in enumerate(cfg.pools or []):
            if name not in names:
                rep.add(f"unknown pool; pools are: {', '.join(names)}" + _hint(name, names),
                        base + ("pools", j), name)
        if cfg.trace is not None:
            from llmsim.engine.faults import read_fault_trace, resolve_trace_path
            p = resolve_trace_path(cfg.trace, rep.base_dir)
            if not p.is_file():
                rep.add(f"{what} trace file not found: {p}", base + ("trace",), cfg.trace)
            elif p.stat().st_size == 0:
                rep.add(f"{what} trace file is empty: {p}", base + ("trace",), cfg.trace)
            else:
                try:
                    read_fault_trace(p, names)
                except InputError as exc:
                    rep.problems.extend(exc.problems)


def _check_stages(pool, base: tuple, model, rep: Reporter) -> None:
    """A decentralized pool: stage count, stage hardware, tp per stage, memory of each stage."""
    stages = pool.stages
    n = len(stages)
    if pool.parallel.pp not in (1, n):
        rep.add(f"with stages, parallel.pp is the number of stages ({n}); leave it out or set "
                f"it to {n}", base + ("parallel", "pp"), pool.parallel.pp)
    if n > model.num_layers:
        rep.add(f"{n} stages but {model.name} has {model.num_layers} layers: every stage needs "
                "at least one layer", base + ("stages",))
        return
    ok = True
    hws = []
    for j, st in enumerate(stages):
        path = base + ("stages", j)
        if st.hardware is not None:
            hw = load_hardware_ref(st.hardware, rep, path + ("hardware",))
            ok = ok and hw is not None
            hws.append(hw)
        else:
            hws.append(pool._hardware_spec)
            ok = ok and pool._hardware_spec is not None
        tp = st.tp or pool.parallel.tp
        heads, kvh = model.num_attention_heads, model.num_kv_heads
        if heads % tp or (not model.is_mla and kvh % tp and tp % kvh):
            rep.add(f"tp must divide the model's num_attention_heads ({heads}) and divide or "
                    f"be a multiple of its num_kv_heads ({kvh})", path + ("tp",), tp)
            ok = False
    if not ok:
        return
    pool._stage_hardware = hws
    from llmsim.engine.pipeline import stage_layout, stage_memory_plan
    mem = pool.effective_memory()
    try:
        stage_memory_plan(model, stage_layout(pool, model), pool.quant_config(),
                          gpu_memory_utilization=mem.gpu_memory_utilization,
                          block_size=mem.block_size,
                          max_num_batched_tokens=pool.effective_scheduler().max_num_batched_tokens,
                          max_num_seqs=pool.scheduler.max_num_seqs, pool_name=pool.name)
    except InputError as exc:
        for p in exc.problems:
            rep.add(p.message, base + ("stages",))


def _check_topology(sc, rep: Reporter) -> None:
    """Every pair of regions that must exchange data has a link: prefill → decode pools,
    consecutive stages of a decentralized pipeline, and spot migrations between pools."""
    net = sc.cluster.network
    if net.cross_region is not None:
        return
    pools = sc.cluster.pools
    linked = {frozenset((lk.src, lk.dst)) for lk in net.links}

    def joined(a, b) -> bool:
        return (a.region == b.region or frozenset((a.name, b.name)) in linked
                or frozenset((a.region, b.region)) in linked)

    hint = ("add a link between them to cluster.network.links, or set "
            "cluster.network.cross_region {bandwidth_gbps, latency_ms} as the default link "
            "between regions")
    for i, a in enumerate(pools):
        if a.role != "prefill":
            continue
        for b in pools:
            if b.role == "decode" and not joined(a, b):
                rep.add(f"prefill pool '{a.name}' (region '{a.region}') sends KV to decode pool "
                        f"'{b.name}' (region '{b.region}') but no link joins them: {hint}",
                        POOLS + (i, "region"), a.region)
    for i, p in enumerate(pools):
        if not p.stages or len(p.stages) < 2:
            continue
        regions = [st.region or p.region for st in p.stages]
        for j, ra in enumerate(regions):
            rb = regions[(j + 1) % len(regions)]
            if ra != rb and frozenset((ra, rb)) not in linked:
                rep.add(f"pool '{p.name}': stage {j} (region '{ra}') and stage "
                        f"{(j + 1) % len(regions)} (region '{rb}') exchange activations but no "
                        f"link joins the two regions: {hint}", POOLS + (i, "stages", j),
                        ra)
    spot = sc.cluster.faults.spot
    if spot is not None and spot.on_preempt == "migrate":
        hit = set(spot.pools or [p.name for p in pools])
        for i, a in enumerate(pools):
            if a.name not in hit:
                continue
            for b in pools:
                if b is not a and b.role != "prefill" and not joined(a, b):
                    rep.add(f"spot migrations may move KV from pool '{a.name}' (region "
                            f"'{a.region}') to pool '{b.name}' (region '{b.region}') but no "
                            f"link joins them: {hint}", ("cluster", "faults", "spot",
                                                         "on_preempt"), "migrate")


# ----------------------------------------------------------------------------- workload
def _check_workload(wl, sim_duration_s, seed: int, rep: Reporter) -> None:
    from llmsim.workload import build_workload
    try:
        workload = build_workload(wl, np.random.SeedSequence(seed), rep.base_dir)
        problems = workload.check()
    except InputError as exc:
        problems = exc.problems
    if problems:
        files = _file_refs(wl.model_dump(mode="json"), ("workload",), rep.base_dir)
        for p in problems:
            _relocate_workload_problem(p, rep, files)
    if sim_duration_s is None and is_endless(wl):
        rep.add("this workload would run forever: synthetic arrivals with neither "
                "workload.num_requests nor workload.duration_s nor simulation.duration_s; "
                "set one of them", ("workload",))


def _file_refs(data, path: tuple, base_dir: Path) -> dict[Path, tuple]:
    """Resolved file path → key path, for every string in ``data`` that names a file."""
    from llmsim.scenario_schema import resolve_path_ref
    out: dict[Path, tuple] = {}
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        if isinstance(data, str) and data.strip():
            ref = Path(resolve_path_ref(data, base_dir))
            ref = ref if ref.is_absolute() else base_dir / ref
            out[_norm(ref)] = path
        return out
    for k, v in items:
        for f, p in _file_refs(v, path + (k,), base_dir).items():
            out.setdefault(f, p)
    return out


def _norm(p) -> Path:
    try:
        return Path(p).expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(p)


def _relocate_workload_problem(p: Problem, rep: Reporter, files: dict[Path, tuple]) -> None:
    """Problems at a row of a trace file stay there; the others (missing or empty file, bad
    configuration) point at the scenario key that names the file or the problem's key."""
    if p.line is not None and p.where and p.where != rep.where:
        rep.problems.append(p)
        return
    path = files.get(_norm(p.where)) if p.where else None
    if path is None:
        key = p.key or ""
        path = tuple(int(s) if s.isdigit() else s for s in key.split(".") if s)
        if not path or path[0] != "workload":
            path = ("workload",) + path
    msg = p.message
    if p.where and p.where != rep.where and p.where != "workload":
        msg = f"{msg} ({p.where})"
    rep.add(msg, path, p.value if p.has_value else ...)


def is_endless(wl) -> bool:
    """True when workload config ``wl`` has synthetic arrivals and no end of its own (neither
    ``num_requests`` nor ``duration_s``); traces end with their last row."""
    if getattr(wl, "num_requests", None) is not None or getattr(wl, "duration_s", None) is not None:
        return False
    sources = getattr(wl, "sources", None)
    if sources:
        return any(getattr(src, "trace", None) is None for src in sources)
    return getattr(wl, "trace", None) is None
