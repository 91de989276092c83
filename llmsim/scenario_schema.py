"""Pydantic models of the scenario YAML (the schema; loading lives in :mod:`llmsim.scenario`).

Contract: every model subclasses :class:`~llmsim.config_base.StrictModel` (unknown keys are
errors, frozen) and validates strictly: no text-to-number coercion (``"8"`` is not 8), integers
must be integers, floats must be finite. ``null`` in an optional setting means "use the
documented default", which the ``effective_*`` helpers resolve. Cross-field rules that need a
line in the file (unique pool names, roles, tp vs heads, memory fit, link endpoints, ...) are
checked by :mod:`llmsim.scenario_checks` when the scenario is loaded with
:func:`llmsim.scenario.load_scenario`; models built directly skip them.

Units: ``*_s`` seconds, ``*_ms`` milliseconds, ``*_gb`` GB (1e9 bytes), ``bandwidth_gbps``
Gbit/s (1e9 bit/s), prices USD per GPU-hour. The reference of every key is docs/scenario.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import (ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationInfo,
                      field_validator, model_validator)

from llmsim.config_base import StrictModel
from llmsim.cost.types import ParallelConfig, QuantConfig
from llmsim.workload.config import WorkloadConfig

__all__ = [
    "ROUTERS", "ROLES", "DTYPES", "WEIGHT_DTYPES", "KV_CACHE_DTYPES", "POLICIES",
    "ScenarioModel", "ParallelSection", "SpeculativeConfig", "OutputLengthPredictorConfig",
    "SchedulerConfig", "MemoryConfig",
    "CustomPrice", "PoolConfig", "StageConfig", "LinkConfig", "RegionLinkConfig",
    "NetworkConfig", "SpotConfig", "ChurnConfig", "FaultsConfig",
    "ClusterConfig", "SLOConfig", "SimulationConfig", "Scenario", "resolve_path_ref",
    "PlanConfig", "PlanMaxRate", "PlanMinCost", "PlanPareto",
]

ROUTERS = ("round_robin", "random", "least_outstanding", "least_kv", "power_of_two",
           "prefix_affinity", "capacity_weighted")
ROLES = ("mixed", "prefill", "decode")
DTYPES = ("bf16", "fp16", "fp32", "fp8", "int8")
WEIGHT_DTYPES = DTYPES + ("int4", "fp4")
KV_CACHE_DTYPES = ("auto", "bf16", "fp16", "fp8", "int8")
POLICIES = ("static", "orca", "vllm", "vllm_v1", "sarathi")

#: policy → default ``max_num_batched_tokens`` when the scenario leaves it null
DEFAULT_MAX_NUM_BATCHED_TOKENS = {"static": 8192, "orca": 8192, "vllm": 8192, "vllm_v1": 8192,
                                  "sarathi": 2048}
#: policies whose ``enable_chunked_prefill`` defaults to true
CHUNKED_BY_DEFAULT = ("sarathi", "vllm_v1")
SJF_KEYS = ("prompt_tokens", "output_tokens", "total_tokens")

_PATH_SUFFIXES = (".yaml", ".yml", ".json")


class ScenarioModel(StrictModel):
    """StrictModel plus strict types and finite floats (the scenario's common base)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    def __eq__(self, other):
        """Equal when the fields are equal (caches and source location are not compared)."""
        if type(self) is not type(other):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = StrictModel.__hash__


def resolve_path_ref(ref: str, base_dir: Path | None) -> str | Path:
    """A model/hardware/trace reference as the catalog loaders should get it.

    Catalog names pass through unchanged. A reference that is clearly a path (ends in
    .yaml/.yml/.json, or starts with ``./``, ``../`` or ``~``) resolves against ``base_dir``
    when relative; one that merely contains ``/`` (an HF-style alias or a directory) is resolved
    only when that file or directory exists under ``base_dir``.
    """
    if not isinstance(ref, str) or base_dir is None:
        return ref
    text = ref.strip()
    p = Path(text).expanduser()
    if p.is_absolute():
        return p
    clearly_path = (text.lower().endswith(_PATH_SUFFIXES)
                    or text.startswith(("./", "../", ".\\", "..\\", "~")))
    candidate = Path(base_dir) / p
    if clearly_path:
        return candidate
    if ("/" in text or "\\" in text) and candidate.exists():
        return candidate
    return ref


# ----------------------------------------------------------------------------- pool parts
class ParallelSection(ScenarioModel):
    """Parallel plan of one replica: tensor (tp), pipeline (pp) and expert (ep) degrees."""

    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1)


class SpeculativeConfig(ScenarioModel):
    """Speculative decoding: ``draft`` (a small draft model) or ``ngram`` (prompt lookup).
    ``acceptance_rate`` is the probability that one proposed token is accepted."""

    method: Literal["draft", "ngram"]
    draft_model: Optional[str] = None
    num_speculative_tokens: int = Field(ge=1)
    acceptance_rate: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _draft_model_matches_method(self):
        if self.method == "draft" and not self.draft_model:
            raise ValueError("method 'draft' needs draft_model (a catalog name or card path)")
        if self.method == "ngram" and self.draft_model:
            raise ValueError("method 'ngram' uses no draft model; remove draft_model")
        return self


class OutputLengthPredictorConfig(ScenarioModel):
    """Output-length predictor used by ``sjf_key: output_tokens | total_tokens``: the
    prediction is the true length times ``exp(error_sigma · z)``, ``z`` standard normal drawn
    from (``seed``, request id); ``error_sigma: 0`` is an oracle."""

    error_sigma: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)


class SchedulerConfig(ScenarioModel):
    """Batching policy of one replica (vLLM names). Nulls mean "policy default": see
    :meth:`effective`."""

    policy: Literal[POLICIES] = "vllm"  # type: ignore[valid-type]
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: Optional[int] = Field(None, ge=1)
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    scheduling_policy: Literal["fcfs", "priority", "sjf"] = "fcfs"
    sjf_key: Literal[SJF_KEYS] = "prompt_tokens"  # type: ignore[valid-type]
    output_length_predictor: OutputLengthPredictorConfig = OutputLengthPredictorConfig()
    enable_chunked_prefill: Optional[bool] = None
    long_prefill_token_threshold: int = Field(0, ge=0)
    speculative: Optional[SpeculativeConfig] = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.sjf_key != "prompt_tokens" and self.scheduling_policy != "sjf":
            raise ValueError(f"sjf_key '{self.sjf_key}' orders the queue of scheduling_policy "
                             "'sjf' only; set scheduling_policy: sjf or remove sjf_key")
        if self.speculative is not None and self.policy == "static":
            raise ValueError("speculative decoding needs an iteration-level policy (orca, vllm, "
                             "vllm_v1, sarathi), not 'static'")
        return self

    def effective(self) -> "SchedulerConfig":
        """Copy with nulls resolved: ``max_num_batched_tokens`` → 8192 (static/orca/vllm/
        vllm_v1) or 2048 (sarathi); ``enable_chunked_prefill`` → true for sarathi and vllm_v1,
        else false."""
        update = {}
        if self.max_num_batched_tokens is None:
            update["max_num_batched_tokens"] = DEFAULT_MAX_NUM_BATCHED_TOKENS[self.policy]
        if self.enable_chunked_prefill is None:
            update["enable_chunked_prefill"] = self.policy in CHUNKED_BY_DEFAULT
        return self.model_copy(update=update) if update else self


class MemoryConfig(ScenarioModel):
    """KV-cache settings of one replica. ``manager`` null → ``contiguous`` for static/orca,
    ``paged`` otherwise (see :meth:`effective`)."""

    manager: Optional[Literal["contiguous", "paged"]] = None
    block_size: int = Field(16, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enable_prefix_caching: bool = False
    swap_space_gb: float = Field(0.0, ge=0)
    kv_offload: bool = False
    watermark: float = Field(0.01, ge=0, lt=1)

    @model_validator(mode="after")
    def _offload_needs_host_space(self):
        if self.kv_offload and not (self.enable_prefix_caching and self.swap_space_gb > 0):
            raise ValueError("kv_offload keeps evicted prefix-cache blocks in host memory: it "
                             "needs enable_prefix_caching: true and swap_space_gb > 0")
        return self

    def effective(self, policy: str) -> "MemoryConfig":
        """Copy with ``manager`` resolved for scheduler ``policy``."""
        if self.manager is not None:
            return self
        return self.model_copy(update={
            "manager": "contiguous" if policy in ("static", "orca") else "paged"})

    @property
    def swap_space_bytes(self) -> float:
        return self.swap_space_gb * 1e9


class CustomPrice(ScenarioModel):
    """An explicit price per GPU-hour (USD)."""

    usd_per_hour: float = Field(ge=0)


def _price_kind(v) -> str | None:
    if isinstance(v, str):
        return "name"
    if isinstance(v, (dict, CustomPrice)):
        return "usd"
    return None


PriceField = Annotated[
    Union[Annotated[Literal["on_demand", "spot"], Tag("name")],
          Annotated[CustomPrice, Tag("usd")]],
    Discriminator(_price_kind, custom_error_type="price_type",
                  custom_error_message="price must be 'on_demand', 'spot' or a mapping "
                                       "{usd_per_hour: <number ≥ 0>}"),
]


class StageConfig(ScenarioModel):
    """One pipeline stage of a decentralized replica, on a node of its own (Petals / HexGen):
    its ``hardware`` card, ``region`` and tensor-parallel degree ``tp`` (null: the pool's)."""

    hardware: Optional[str] = Field(None, min_length=1)
    region: Optional[str] = Field(None, min_length=1)
    tp: Optional[int] = Field(None, ge=1)


class PoolConfig(ScenarioModel):
    """Replicas of one hardware type with one parallel plan, scheduler and memory setup.
    With ``stages`` each replica is a pipeline whose stages may use different hardware in
    different regions (decentralized serving; ``parallel.pp`` is then the number of stages)."""

    name: str = Field(min_length=1)
    hardware: str = Field(min_length=1)
    replicas: int
    role: Literal[ROLES] = "mixed"  # type: ignore[valid-type]
    region: str = Field("default", min_length=1)
    parallel: ParallelSection = ParallelSection()
    dtype: Literal[DTYPES] = "bf16"  # type: ignore[valid-type]
    weight_dtype: Optional[Literal[WEIGHT_DTYPES]] = None  # type: ignore[valid-type]
    kv_cache_dtype: Literal[KV_CACHE_DTYPES] = "auto"  # type: ignore[valid-type]
    scheduler: SchedulerConfig = SchedulerConfig()
    memory: MemoryConfig = MemoryConfig()
    price: PriceField = "on_demand"
    stages: Optional[list[StageConfig]] = Field(None, min_length=1)

    _base_dir: Optional[Path] = PrivateAttr(None)
    _hardware_spec: object = PrivateAttr(None)
    _stage_hardware: object = PrivateAttr(None)

    @field_validator("replicas")
    @classmethod
    def _at_least_one_replica(cls, v: int) -> int:
        if v < 1:
            raise ValueError("a pool needs at least one replica (replicas is an integer ≥ 1)")
        return v

    @model_validator(mode="after")
    def _remember_base_dir(self, info: ValidationInfo):
        ctx = info.context or {}
        if ctx.get("base_dir") is not None:
            self._base_dir = Path(ctx["base_dir"])
        return self

    # ---- helpers
    def resolved_hardware(self):
        """The :class:`~llmsim.hardware.spec.HardwareSpec` (relative card paths resolve
        against the scenario's directory). Raises InputError for unknown names."""
        if self._hardware_spec is None:
            from llmsim.hardware.catalog import load_hardware
            self._hardware_spec = load_hardware(resolve_path_ref(self.hardware, self._base_dir))
        return self._hardware_spec

    def resolved_stage_hardware(self) -> list:
        """HardwareSpec of every stage (the pool's card where a stage names none); [] without
        ``stages``."""
        if self._stage_hardware is None:
            from llmsim.hardware.catalog import load_hardware
            self._stage_hardware = [
                load_hardware(resolve_path_ref(st.hardware, self._base_dir)) if st.hardware
                else self.resolved_hardware() for st in (self.stages or [])]
        return self._stage_hardware

    @property
    def num_stages(self) -> int:
        """Pipeline stages of one replica: ``len(stages)``, else ``parallel.pp``."""
        return len(self.stages) if self.stages else self.parallel.pp

    def parallel_config(self) -> ParallelConfig:
        return ParallelConfig(tp=self.parallel.tp, pp=self.num_stages, ep=self.parallel.ep)

    def quant_config(self) -> QuantConfig:
        """Weights at ``weight_dtype`` (default ``dtype``), activations at ``dtype``, KV at
        ``kv_cache_dtype`` (``auto`` = ``dtype``)."""
        return QuantConfig(
            weight_dtype=self.weight_dtype or self.dtype,
            activation_dtype=self.dtype,
            kv_cache_dtype=self.dtype if self.kv_cache_dtype == "auto" else self.kv_cache_dtype)

    def effective_scheduler(self) -> SchedulerConfig:
        """Scheduler settings with the policy defaults filled in."""
        return self.scheduler.effective()

    def effective_memory(self) -> MemoryConfig:
        """Memory settings with the manager default filled in."""
        return self.memory.effective(self.scheduler.policy)

    @property
    def num_gpus_per_replica(self) -> int:
        if self.stages:
            return sum(st.tp or self.parallel.tp for st in self.stages)
        return self.parallel.tp * self.parallel.pp

    @property
    def num_gpus(self) -> int:
        return self.replicas * self.num_gpus_per_replica

    def price_usd_per_gpu_hour(self) -> float:
        """USD per GPU-hour: the card's on-demand or spot price, or the explicit figure."""
        if isinstance(self.price, CustomPrice):
            return self.price.usd_per_hour
        if self.stages:   # GPU-weighted mean of the stage cards' prices
            gpus = [st.tp or self.parallel.tp for st in self.stages]
            prices = [hw.price_spot_usd_per_h if self.price == "spot"
                      else hw.price_on_demand_usd_per_h for hw in self.resolved_stage_hardware()]
            return sum(g * p for g, p in zip(gpus, prices)) / sum(gpus)
        hw = self.resolved_hardware()
        return (hw.price_spot_usd_per_h if self.price == "spot"
                else hw.price_on_demand_usd_per_h)


# ----------------------------------------------------------------------------- cluster parts
class LinkConfig(ScenarioModel):
    """A network link between two endpoints (pool names or region names), used in both
    directions; each direction has ``bandwidth_gbps`` (Gbit/s); transfers sharing it share
    the bandwidth."""

    src: str = Field(min_length=1)
    dst: str = Field(min_length=1)
    bandwidth_gbps: float
    latency_ms: float = Field(ge=0)

    @field_validator("bandwidth_gbps")
    @classmethod
    def _positive_bandwidth(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("bandwidth_gbps must be > 0 Gbit/s (a link without bandwidth "
                             "never delivers anything)")
        return v

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gbps * 1e9 / 8

    @property
    def latency_s(self) -> float:
        return self.latency_ms / 1e3


class RegionLinkConfig(ScenarioModel):
    """The default link between two regions that no explicit link joins (each direction
    ``bandwidth_gbps``, shared by the transfers between that pair of regions)."""

    bandwidth_gbps: float = Field(gt=0)
    latency_ms: float = Field(ge=0)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gbps * 1e9 / 8

    @property
    def latency_s(self) -> float:
        return self.latency_ms / 1e3


class NetworkConfig(ScenarioModel):
    """The topology (docs/cluster.md). Inside a region replicas talk over the hardware cards'
    ``kv_transfer`` link (``inter_node``, default: different nodes of one fabric; or
    ``intra_node``: one NVLink domain), each replica's GPUs sending in parallel; ``links`` are
    explicit links between two pools or two regions; ``cross_region`` is the default link
    between regions that no explicit link joins (null: such pairs are an error when they must
    talk)."""

    links: list[LinkConfig] = Field(default_factory=list)
    kv_transfer: Literal["inter_node", "intra_node"] = "inter_node"
    cross_region: Optional[RegionLinkConfig] = None


class _FaultSource(ScenarioModel):
    """Fields shared by fault injectors: exactly one of a ``rate_per_hour`` (exponential
    lifetimes) or a ``trace`` file; ``replace`` lost capacity; ``pools`` it applies to."""

    _what = "faults"
    rate_per_hour: Optional[float] = Field(None, ge=0)
    trace: Optional[str] = Field(None, min_length=1)
    replace: bool = True
    pools: Optional[list[str]] = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.rate_per_hour is None) == (self.trace is None):
            raise ValueError(f"{self._what} needs exactly one of rate_per_hour or trace")
        return self


class SpotConfig(_FaultSource):
    """Spot preemptions: a ``rate_per_hour`` per replica (exponential lifetimes), or a
    ``trace`` CSV file with columns ``time_s, pool[, count]`` (exactly one). A preempted replica
    gets ``warning_s`` of notice, during which it drains (takes no new requests; its queue goes
    back to the router); requests still running at the end ``migrate`` (their KV moves to a live
    replica, SpotServe-style; a move that cannot finish in time falls back to ``resume``),
    ``restart`` (their context is recomputed elsewhere, queued like a new request) or
    ``resume`` (recomputed elsewhere, at the head of the queue). ``replace``: a replacement
    replica comes up after ``faults.provisioning_s`` plus its weight-loading time. ``pools``
    limits the preemptions to these pools (null = every pool)."""

    _what = "spot"
    warning_s: float = Field(30.0, ge=0)
    on_preempt: Literal["migrate", "restart", "resume"] = "restart"


class ChurnConfig(_FaultSource):
    """Peers (nodes, one per pipeline stage) that leave without notice: a ``rate_per_hour``
    per peer (exponential lifetimes), or a ``trace`` CSV file ``time_s, pool[, count]`` (count
    replicas of that pool lose a peer). A lost peer breaks its pipeline: its requests
    ``restart`` (recomputed on another replica, queued like new requests) or ``resume``
    (recomputed on another replica at the head of its queue); the pipeline is back after
    ``faults.provisioning_s`` plus the time to load the lost stage's weights when ``replace``.
    ``pools`` limits churn to these pools (null = every pool)."""

    _what = "churn"
    on_failure: Literal["restart", "resume"] = "resume"


class FaultsConfig(ScenarioModel):
    """Fault injection: ``spot`` preemptions and peer ``churn``. ``provisioning_s`` is how long
    a replacement takes to start; it then loads its weights at ``weight_load_gb_per_s`` per GPU
    (null: the card's host link bandwidth, i.e. from host memory)."""

    spot: Optional[SpotConfig] = None
    churn: Optional[ChurnConfig] = None
    provisioning_s: float = Field(120.0, ge=0)
    weight_load_gb_per_s: Optional[float] = Field(None, gt=0)

    @property
    def active(self) -> bool:
        """Whether any fault injector is configured."""
        return self.spot is not None or self.churn is not None


class ClusterConfig(ScenarioModel):
    """Pools of replicas, the router in front of them, network and faults."""

    router: Literal[ROUTERS] = "least_outstanding"  # type: ignore[valid-type]
    pools: list[PoolConfig] = Field(min_length=1)
    network: NetworkConfig = NetworkConfig()
    faults: FaultsConfig = FaultsConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_pool_names(cls, data):
        """A pool without ``name`` is called ``pool<i>`` (its index)."""
        if isinstance(data, dict) and isinstance(data.get("pools"), list):
            pools = [dict(p, name=f"pool{i}") if isinstance(p, dict) and "name" not in p else p
                     for i, p in enumerate(data["pools"])]
            data = dict(data, pools=pools)
        return data

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def num_replicas(self) -> int:
        return sum(p.replicas for p in self.pools)


# ----------------------------------------------------------------------------- top level
class SLOConfig(ScenarioModel):
    """Latency targets; a request meets the SLO when it meets every target that is set."""

    ttft_s: Optional[float] = Field(None, gt=0)
    tpot_s: Optional[float] = Field(None, gt=0)
    e2e_s: Optional[float] = Field(None, gt=0)

    @property
    def targets(self) -> dict[str, float]:
        return {k: v for k, v in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s),
                                  ("e2e_s", self.e2e_s)) if v is not None}


class SimulationConfig(ScenarioModel):
    """Run control. ``duration_s``: simulated-time limit (requests still running then are
    ``unfinished``); ``drain``: after the last arrival, run until every request is done (false:
    stop at the last arrival); ``max_queue_len``: waiting requests per replica beyond which new
    ones are rejected; ``request_timeout_s``: a request still waiting for its first step this
    long after arrival is rejected when it reaches the head of the queue; ``macro_steps``:
    advance runs of identical decode steps as one event (exact; off = one SimPy event per
    step, for checking); ``record_steps``: keep one row per engine step
    (``Result.steps``; turns macro-steps off)."""

    duration_s: Optional[float] = Field(None, gt=0)
    drain: bool = True
    timeline_interval_s: float = Field(1.0, gt=0)
    record_steps: bool = False
    check_invariants: bool = False
    macro_steps: bool = True
    max_queue_len: Optional[int] = Field(None, ge=1)
    request_timeout_s: Optional[float] = Field(None, gt=0)


# ----------------------------------------------------------------------------- plan
def _check_candidates(v: dict | None, what: str) -> dict | None:
    if v is None:
        return v
    for key, values in v.items():
        if not key or any(not p.strip() for p in key.split(".")):
            raise ValueError(f"{what}: '{key}' is not a dotted scenario key such as "
                             "cluster.pools.0.replicas")
        if not values:
            raise ValueError(f"{what}: '{key}' lists no values to try")
    return v


class PlanMaxRate(ScenarioModel):
    """``plan.max_rate``: find the highest arrival rate that meets the SLOs. The search starts
    at ``low_per_s`` (default: the scenario's own rate, or half the roofline bound when the
    scenario has none), doubles or halves until a passing and a failing rate bracket the answer
    (``high_per_s`` may give the failing end), then bisects until the bracket is narrower than
    ``rel_tol`` of the passing rate, or after ``max_evaluations`` rates."""

    low_per_s: Optional[float] = Field(None, gt=0)
    high_per_s: Optional[float] = Field(None, gt=0)
    rel_tol: float = Field(0.05, gt=0, lt=1)
    max_evaluations: int = Field(20, ge=2)

    @model_validator(mode="after")
    def _order(self):
        if (self.low_per_s is not None and self.high_per_s is not None
                and self.high_per_s <= self.low_per_s):
            raise ValueError("high_per_s must be above low_per_s")
        return self


class PlanMinCost(ScenarioModel):
    """``plan.min_cost``: the cheapest deployment among ``candidates`` (dotted scenario key →
    list of values; every combination is a candidate) that meets the SLOs at
    ``target_rate_per_s`` (default: the scenario's own rate). Candidates the roofline shows
    cannot work are pruned before simulating: a latency floor above an SLO for too many
    requests, or a request capacity (times 1 + ``prune_margin``) below the target rate.
    ``max_simulations`` caps the candidates simulated (cheapest first)."""

    target_rate_per_s: Optional[float] = Field(None, gt=0)
    candidates: dict[str, list] = Field(min_length=1)
    prune_margin: float = Field(0.25, ge=0)
    max_simulations: int = Field(64, ge=1)

    @field_validator("candidates")
    @classmethod
    def _keys(cls, v):
        return _check_candidates(v, "candidates")


class PlanPareto(ScenarioModel):
    """``plan.pareto``: simulate every combination of ``candidates`` (default: the scenario
    itself) at every rate of ``rates_per_s`` (default: the scenario's own rate) and keep the
    Pareto front of output tokens/s per GPU against tokens/s per user (1 / median TPOT)."""

    candidates: Optional[dict[str, list]] = None
    rates_per_s: Optional[list[Annotated[float, Field(gt=0)]]] = Field(None, min_length=1)

    @field_validator("candidates")
    @classmethod
    def _keys(cls, v):
        return _check_candidates(v, "candidates")


class PlanConfig(ScenarioModel):
    """``plan:`` — the questions ``llmsim plan`` answers (at least one of ``max_rate``,
    ``min_cost``, ``pareto``). A configuration meets the SLOs at a rate when the mean SLO
    attainment over ``seeds`` runs is at least ``attainment_target`` (DistServe's goodput
    criterion). ``rate_key`` is the dotted key of the arrival rate in requests/s (default: found
    in the workload: ``workload.arrival.rate_per_s`` / ``mean_rate_per_s``,
    ``workload.trace.rate_per_s`` or ``workload.trace.arrival.rate_per_s``)."""

    attainment_target: float = Field(0.9, gt=0, le=1)
    seeds: int = Field(1, ge=1)
    rate_key: Optional[str] = Field(None, min_length=1)
    max_rate: Optional[PlanMaxRate] = None
    min_cost: Optional[PlanMinCost] = None
    pareto: Optional[PlanPareto] = None

    @model_validator(mode="after")
    def _something(self):
        if self.max_rate is None and self.min_cost is None and self.pareto is None:
            raise ValueError("plan needs at least one of max_rate, min_cost or pareto "
                             "(an empty mapping {} asks with the defaults)")
        return self


class Scenario(ScenarioModel):
    """A validated scenario. Built by :func:`llmsim.scenario.load_scenario`, which also sets
    :attr:`source_path` and :attr:`base_dir` and runs the semantic checks."""

    name: str = Field("scenario", min_length=1)
    seed: int = Field(0, ge=0)
    model: str = Field(min_length=1)
    cluster: ClusterConfig
    workload: WorkloadConfig
    slo: SLOConfig = SLOConfig()
    simulation: SimulationConfig = SimulationConfig()
    plan: Optional[PlanConfig] = None

    _source_path: Optional[Path] = PrivateAttr(None)
    _base_dir: Optional[Path] = PrivateAttr(None)
    _model_spec: object = PrivateAttr(None)

    @model_validator(mode="after")
    def _remember_base_dir(self, info: ValidationInfo):
        ctx = info.context or {}
        if ctx.get("base_dir") is not None:
            self._base_dir = Path(ctx["base_dir"])
        if ctx.get("source_path") is not None:
            self._source_path = Path(ctx["source_path"])
        return self

    @property
    def source_path(self) -> Path | None:
        """The YAML file this scenario came from (None for dict sources)."""
        return self._source_path

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths (model cards, hardware cards, traces) resolve
        against: the scenario file's directory, else the current directory."""
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def resolved_model(self):
        """The :class:`~llmsim.models.spec.ModelSpec` (cached)."""
        if self._model_spec is None:
            from llmsim.models.catalog import load_model
            self._model_spec = load_model(resolve_path_ref(self.model, self.base_dir),
                                          where=str(self._source_path or "scenario"),
                                          key="model")
        return self._model_spec

    def pools_by_name(self) -> dict[str, PoolConfig]:
        return {p.name: p for p in self.cluster.pools}

    def memory_plans(self) -> dict:
        """Pool name → :class:`llmsim.cost.memory.MemoryPlan` of one replica of that pool."""
        from llmsim.cost.memory import memory_plan
        model = self.resolved_model()
        out = {}
        for p in self.cluster.pools:
            mem = p.effective_memory()
            if p.stages:   # decentralized pipeline: each stage on its own card
                from llmsim.engine.pipeline import stage_layout, stage_memory_plan
                out[p.name] = stage_memory_plan(
                    model, stage_layout(p, model), p.quant_config(),
                    gpu_memory_utilization=mem.gpu_memory_utilization,
                    block_size=mem.block_size,
                    max_num_batched_tokens=p.effective_scheduler().max_num_batched_tokens,
                    max_num_seqs=p.scheduler.max_num_seqs, pool_name=p.name)
                continue
            out[p.name] = memory_plan(
                model, p.resolved_hardware(), p.parallel_config(), p.quant_config(),
                mem.gpu_memory_utilization, mem.block_size,
                p.effective_scheduler().max_num_batched_tokens,
                max_num_seqs=p.scheduler.max_num_seqs)
        return out

    def to_dict(self) -> dict:
        """Plain data (JSON types) that :func:`~llmsim.scenario.load_scenario` accepts back.

        The returned dict is a :class:`ScenarioDict` that remembers ``base_dir`` and
        ``source_path``, so relative paths keep resolving against the original file."""
        d = ScenarioDict(self.model_dump(mode="json"))
        d.base_dir = self._base_dir
        d.source_path = self._source_path
        return d


class ScenarioDict(dict):
    """A plain dict of scenario data that remembers where it came from (``base_dir``,
    ``source_path``); :func:`llmsim.scenario.load_scenario` uses them when given one."""

    base_dir: Path | None = None
    source_path: Path | None = None
