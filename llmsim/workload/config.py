"""Pydantic v2 models of the scenario's ``workload:`` section.

Three shapes (exactly one per workload, and per source):

* synthetic: ``arrival`` (process) + ``prompt_tokens``/``output_tokens`` (or a joint ``lengths``),
  optionally ``sessions`` (multi-turn conversations sharing a prefix);
* ``trace``: a request log read streaming, with transforms (window, speedup, target rate,
  sampling, caps, filters) and optionally synthetic arrivals (``trace.arrival``) for lengths-only
  traces;
* ``sources``: several named request classes (tenants), each synthetic or a trace, each with a
  ``priority`` and its own ``slo``, merged by arrival time. A source with ``share`` takes that
  fraction of the arrivals of the top-level ``arrival`` process (each arrival is marked with a
  class drawn at random); a source with its own ``arrival`` (or the shorthand ``rate_per_s`` for
  Poisson) is an independent stream.

Discriminated unions (``process:``, ``dist:``, ``format:``) make pydantic errors name the right
variant and field. A trace without ``format:`` is detected from the file header when the workload
is built (see :mod:`llmsim.workload.readers.detect`).

Lengths are integers >= 1: a sampled real value is rounded to the nearest integer (numpy ``rint``,
halves to even), then bounded by ``[min, max]`` (``min`` is never below 1; without ``max``,
100,000,000 = ``MAX_TOKENS``, the most a token count may be anywhere, trace rows included).
``truncate`` says how a draw outside the bounds is handled: ``clip`` (default; set to the
bound — makes a point mass at the bound) or ``resample`` (draw again until inside — keeps the
shape, shifts the mean). Either way the number of affected requests is counted in ``Workload.stats``
(``truncated_prompt_requests`` / ``truncated_output_requests``). ``mean`` is the mean of the
untruncated distribution.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationInfo,
                      model_validator)

from llmsim.config_base import StrictModel
from llmsim.workload.readers.base import MAX_TOKENS


class WorkloadModel(StrictModel):
    """Strict types and finite floats, as the rest of the scenario: ``"5"`` is not 5, ``true``
    is not 1, ``5.0`` is not an integer, ``.inf``/``.nan`` are errors."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
#: a token count: at most MAX_TOKENS (as in a trace row), so that no count overflows int64
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Fraction = Annotated[float, Field(gt=0, le=1)]


# --------------------------------------------------------------------------------------------
# arrival processes
# --------------------------------------------------------------------------------------------

class PoissonArrival(WorkloadModel):
    """Poisson process: exponential inter-arrival gaps of mean 1/rate; first arrival after one gap."""

    process: Literal["poisson"]
    rate_per_s: PosFloat


class GammaArrival(WorkloadModel):
    """Renewal process with gamma gaps of mean 1/rate and coefficient of variation ``cv``
    (shape = 1/cv²). cv = 1 is Poisson, cv > 1 bursty, cv < 1 regular."""

    process: Literal["gamma"]
    rate_per_s: PosFloat
    cv: Annotated[float, Field(ge=0.05, le=400)]     # as weibull's: shape stays representable


class WeibullArrival(WorkloadModel):
    """Renewal process with Weibull gaps of mean 1/rate; give ``shape`` (k < 1 bursty, k = 1
    Poisson) or ``cv`` (the shape is solved from it), not both."""

    process: Literal["weibull"]
    rate_per_s: PosFloat
    shape: Optional[PosFloat] = None
    cv: Optional[PosFloat] = None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.shape is None) == (self.cv is None):
            raise ValueError("give exactly one of 'shape' or 'cv' for a weibull arrival process")
        if self.cv is not None and not (0.05 <= self.cv <= 400):
            raise ValueError("weibull cv must be between 0.05 and 400")
        return self


class ConstantArrival(WorkloadModel):
    """Deterministic arrivals at t = k / rate, k = 0, 1, 2, … (so a duration T holds
    ceil(rate·T) requests)."""

    process: Literal["constant"]
    rate_per_s: PosFloat


class OnOffArrival(WorkloadModel):
    """Bursts: alternating on and off periods (starting with on at t = 0). Inside a period,
    arrivals are Poisson at ``on_rate_per_s`` / ``off_rate_per_s`` (0 = silent). Period lengths are
    ``on_s``/``off_s`` exactly (``durations: fixed``) or exponential with those means
    (``durations: exponential``, a Markov-modulated Poisson process)."""

    process: Literal["on_off"]
    on_rate_per_s: PosFloat
    off_rate_per_s: NonNegFloat = 0.0
    on_s: PosFloat
    off_s: PosFloat
    durations: Literal["fixed", "exponential"] = "fixed"


class PiecewiseArrival(WorkloadModel):
    """Non-homogeneous Poisson process with a rate curve through ``points`` ([t_s, rate_per_s],
    t strictly increasing from 0), ``step`` (hold each rate until the next point) or ``linear``
    interpolation. After the last point the last rate holds, unless ``period_s`` (>= the last t)
    repeats the curve. Generated by thinning (Lewis–Shedler)."""

    process: Literal["piecewise"]
    points: list[Annotated[tuple[NonNegFloat, NonNegFloat],
                           BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]
                 ] = Field(min_length=1)
    interpolation: Literal["step", "linear"] = "linear"
    period_s: Optional[PosFloat] = None

    @model_validator(mode="after")
    def _check(self):
        ts = [p[0] for p in self.points]
        if ts[0] != 0:
            raise ValueError("the first point of a piecewise rate curve must be at t = 0")
        if any(b <= a for a, b in zip(ts, ts[1:])):
            raise ValueError("piecewise rate curve times must be strictly increasing")
        if max(p[1] for p in self.points) <= 0:
            raise ValueError("a piecewise rate curve needs at least one rate > 0")
        if self.period_s is not None and self.period_s < ts[-1]:
            raise ValueError("period_s must be >= the time of the last point")
        return self


class DiurnalArrival(WorkloadModel):
    """Non-homogeneous Poisson process with a sine rate:
    rate(t) = mean_rate_per_s · (1 + amplitude · cos(2π (t − peak_s) / period_s)).
    ``amplitude`` in [0, 1] (relative). Generated by thinning."""

    process: Literal["diurnal"]
    mean_rate_per_s: PosFloat
    amplitude: Annotated[float, Field(ge=0, le=1)] = 0.5
    period_s: PosFloat = 86400.0
    peak_s: NonNegFloat = 0.0


Arrival = Annotated[
    Union[PoissonArrival, GammaArrival, WeibullArrival, ConstantArrival, OnOffArrival,
          PiecewiseArrival, DiurnalArrival],
    Field(discriminator="process"),
]


# --------------------------------------------------------------------------------------------
# length distributions
# --------------------------------------------------------------------------------------------

class _Bounded(WorkloadModel):
    min: Tokens = 1
    max: Optional[Tokens] = None
    truncate: Literal["clip", "resample"] = "clip"

    @model_validator(mode="after")
    def _bounds(self):
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class ConstantLength(WorkloadModel):
    dist: Literal["constant"]
    value: Tokens


class UniformLength(WorkloadModel):
    """Integers uniform on [min, max], both inclusive."""

    dist: Literal["uniform"]
    min: Tokens
    max: Tokens

    @model_validator(mode="after")
    def _bounds(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class NormalLength(_Bounded):
    dist: Literal["normal"]
    mean: PosFloat
    std: NonNegFloat


class LogNormalLength(_Bounded):
    """log(length) ~ Normal(mu, sigma). Give ``mean`` (of the length: mu = ln(mean) − sigma²/2)
    or ``median`` (mu = ln(median)), not both."""

    dist: Literal["lognormal"]
    mean: Optional[PosFloat] = None
    median: Optional[PosFloat] = None
    sigma: NonNegFloat

    @model_validator(mode="after")
    def _one_of(self):
        if (self.mean is None) == (self.median is None):
            raise ValueError("give exactly one of 'mean' or 'median' for a lognormal length")
        return self


class EmpiricalLength(_Bounded):
    """Resample (with replacement) the values of one column of a file (CSV with header, JSONL,
    Parquet; read once into memory, 8 bytes per row), or an inline ``values`` list with optional
    ``weights``."""

    dist: Literal["empirical"]
    path: Optional[str] = None
    column: Optional[str] = None
    values: Optional[list[Tokens]] = None
    weights: Optional[list[NonNegFloat]] = None

    @model_validator(mode="after")
    def _source(self):
        if (self.path is None) == (self.values is None):
            raise ValueError("give either 'path' + 'column' or 'values' for an empirical length")
        if self.path is not None and not self.column:
            raise ValueError("an empirical length read from 'path' needs 'column'")
        if self.values is not None and len(self.values) == 0:
            raise ValueError("'values' must not be empty")
        if self.weights is not None:
            if self.values is None or len(self.weights) != len(self.values):
                raise ValueError("'weights' needs 'values' of the same length")
            if sum(self.weights) <= 0:
                raise ValueError("'weights' must not all be zero")
        return self


LengthDist = Annotated[
    Union[ConstantLength, UniformLength, NormalLength, LogNormalLength, EmpiricalLength],
    Field(discriminator="dist"),
]


class CorrelatedLengths(WorkloadModel):
    """Prompt and output lengths with the given marginals joined by a Gaussian copula of
    correlation ``correlation`` (for lognormal marginals: the correlation of the logs)."""

    dist: Literal["correlated"]
    prompt_tokens: LengthDist
    output_tokens: LengthDist
    correlation: Annotated[float, Field(ge=-1, le=1)]


class EmpiricalJointLengths(WorkloadModel):
    """Resample (prompt, output) pairs from two columns of a file, keeping their joint
    distribution (e.g. the arXiv-summarization lengths file). ``max_prompt_tokens`` /
    ``max_output_tokens`` clip longer values (counted as truncated requests)."""

    dist: Literal["empirical"]
    path: str
    prompt_column: str
    output_column: str
    max_prompt_tokens: Optional[Tokens] = None
    max_output_tokens: Optional[Tokens] = None


JointLengths = Annotated[Union[CorrelatedLengths, EmpiricalJointLengths],
                         Field(discriminator="dist")]


# --------------------------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------------------------

class SessionConfig(WorkloadModel):
    """Multi-turn sessions. The arrival process gives session starts; a session has ``turns``
    turns (an integer or a length distribution); turn k+1 arrives a think time after turn k's
    arrival (open loop: include the expected response time in ``think_time_s``), exponential with
    mean ``think_time_s`` or exactly it (``think_time_dist: constant``). ``prompt_tokens`` of the
    workload/source are the NEW user tokens of a turn; the turn's prompt is the whole history
    (``shared_prefix_tokens`` + earlier user and output tokens) plus them, so later turns share
    the earlier turns' prefix: requests carry ``hash_ids`` (one per ``hash_block_tokens`` block;
    full blocks of the history keep their id, a trailing partial block gets a fresh one) and a
    ``session_id``. A session stops before a turn whose prompt would exceed ``max_prompt_tokens``
    (counted in ``session_turns_dropped``)."""

    turns: Union[Tokens, LengthDist]
    think_time_s: NonNegFloat
    think_time_dist: Literal["exponential", "constant"] = "exponential"
    shared_prefix_tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS)] = 0
    hash_block_tokens: PosInt = 16
    max_prompt_tokens: Optional[Tokens] = None


# --------------------------------------------------------------------------------------------
# traces
# --------------------------------------------------------------------------------------------

class Window(WorkloadModel):
    """Keep requests with start_s <= t < end_s (seconds from the trace's first row); the kept
    requests are re-based so that start_s becomes t = 0."""

    start_s: NonNegFloat = 0.0
    end_s: Optional[PosFloat] = None

    @model_validator(mode="after")
    def _order(self):
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError("window end_s must be > start_s")
        return self


class ColumnMap(WorkloadModel):
    """Which columns of a generic CSV/Parquet hold what. ``arrival`` may be omitted for a
    lengths-only file (then the trace needs ``arrival:``). ``hash_ids``: integers, a JSON list or
    space/semicolon separated (a list column in Parquet)."""

    arrival: Optional[str] = None
    prompt_tokens: str
    output_tokens: str
    session_id: Optional[str] = None
    hash_ids: Optional[str] = None


class _TraceCommon(WorkloadModel):
    path: str
    on_bad_row: Optional[Literal["error", "skip"]] = None   # None: the workload's setting
    window: Optional[Window] = None
    speedup: Optional[PosFloat] = None
    rate_per_s: Optional[PosFloat] = None
    sample_fraction: Optional[Fraction] = None
    max_prompt_tokens: Optional[Tokens] = None
    max_output_tokens: Optional[Tokens] = None
    cap_mode: Literal["clip", "drop"] = "clip"
    arrival: Optional[Arrival] = None

    @model_validator(mode="after")
    def _transforms(self):
        if self.speedup is not None and self.rate_per_s is not None:
            raise ValueError("give at most one of 'speedup' and 'rate_per_s'")
        if self.arrival is not None:
            bad = [k for k in ("window", "speedup", "rate_per_s")
                   if getattr(self, k) is not None]
            if bad:
                raise ValueError(f"{', '.join(bad)} re-time a trace's own timestamps and cannot be "
                                 "combined with synthetic 'arrival'")
        if self._has_no_timestamps() and self.arrival is None:
            raise ValueError(f"format '{self.format}' has no timestamps: give 'arrival' "
                             "(a synthetic arrival process) to replay it")
        return self

    def _has_no_timestamps(self) -> bool:
        return False


class AutoTrace(_TraceCommon):
    """Format detected from the header/first record at build time."""

    format: Literal["auto"] = "auto"


class Azure2023Trace(_TraceCommon):
    """Azure LLM inference trace 2023: TIMESTAMP (wall clock), ContextTokens, GeneratedTokens."""

    format: Literal["azure2023"]


class Azure2024Trace(_TraceCommon):
    """Azure LLM inference trace 2024: as 2023, timestamps carry a UTC offset (+00:00)."""

    format: Literal["azure2024"]


class BurstGPTTrace(_TraceCommon):
    """BurstGPT: Timestamp (s), [Session ID], [Elapsed time], Model, Request tokens, Response
    tokens, Total tokens, Log Type. ``models``/``log_types`` keep only those values (others are
    counted in ``filtered_rows``). BurstGPT marks a failed request by Response tokens = 0:
    ``failed: drop`` (default) leaves them out and counts them in ``failed_rows``; ``keep``
    replays them as a request for the prompt with one output token and ``extra['failed']=True``
    (the server still read the prompt)."""

    format: Literal["burstgpt"]
    models: Optional[list[str]] = Field(None, min_length=1)
    log_types: Optional[list[str]] = Field(None, min_length=1)
    failed: Literal["drop", "keep"] = "drop"


class MooncakeTrace(_TraceCommon):
    """Mooncake JSONL: timestamp (ms), input_length, output_length, hash_ids (one id per
    ``hash_block_tokens`` = 512 prompt tokens; equal ids = shared prefix)."""

    format: Literal["mooncake"]
    hash_block_tokens: PosInt = 512


class ShareGPTTrace(_TraceCommon):
    """ShareGPT / vLLM-benchmark style JSON (array) or JSONL of conversations with token counts
    (see :mod:`llmsim.workload.readers.sharegpt`). No timestamps: needs ``arrival`` (conversation
    starts). ``turns: first`` replays the first exchange of each conversation (what vLLM's
    benchmark does); ``all`` replays every exchange as a session turn, later turns arriving
    ``think_time_s`` (exponential mean) after the previous one and sharing its prefix.
    ``chars_per_token`` (opt-in) estimates token counts from message text when a message has none."""

    format: Literal["sharegpt"]
    turns: Literal["first", "all"] = "first"
    think_time_s: Optional[NonNegFloat] = None
    chars_per_token: Optional[PosFloat] = None
    hash_block_tokens: PosInt = 16

    def _has_no_timestamps(self) -> bool:
        return True

    @model_validator(mode="after")
    def _turns(self):
        if self.turns == "all" and self.think_time_s is None:
            raise ValueError("turns: all needs 'think_time_s' (mean seconds between turns)")
        return self


class LengthsTrace(_TraceCommon):
    """Lengths-only CSV (e.g. Vidur's processed traces): ``num_prefill_tokens``,
    ``num_decode_tokens`` (column names can be changed). Needs ``arrival``."""

    format: Literal["lengths"]
    prompt_column: str = "num_prefill_tokens"
    output_column: str = "num_decode_tokens"

    def _has_no_timestamps(self) -> bool:
        return True


class CsvTrace(_TraceCommon):
    """Generic CSV with a header and a column mapping. ``time_unit``: the arrival column in
    s/ms/us/ns (numbers, any origin) or ``datetime`` (ISO 8601 text)."""

    format: Literal["csv"]
    columns: ColumnMap
    time_unit: Literal["s", "ms", "us", "ns", "datetime"] = "s"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    hash_block_tokens: PosInt = 16

    def _has_no_timestamps(self) -> bool:
        return self.columns.arrival is None


class ParquetTrace(_TraceCommon):
    """Generic Parquet file with a column mapping (read in record batches). A timestamp-typed
    arrival column is converted exactly; a numeric one uses ``time_unit``."""

    format: Literal["parquet"]
    columns: ColumnMap
    time_unit: Literal["s", "ms", "us", "ns", "datetime"] = "s"
    hash_block_tokens: PosInt = 16

    def _has_no_timestamps(self) -> bool:
        return self.columns.arrival is None


def _trace_tag(v: Any) -> str:
    if isinstance(v, dict):
        return v.get("format", "auto")
    return getattr(v, "format", "auto")


TraceConfig = Annotated[
    Union[
        Annotated[AutoTrace, Tag("auto")],
        Annotated[Azure2023Trace, Tag("azure2023")],
        Annotated[Azure2024Trace, Tag("azure2024")],
        Annotated[BurstGPTTrace, Tag("burstgpt")],
        Annotated[MooncakeTrace, Tag("mooncake")],
        Annotated[ShareGPTTrace, Tag("sharegpt")],
        Annotated[LengthsTrace, Tag("lengths")],
        Annotated[CsvTrace, Tag("csv")],
        Annotated[ParquetTrace, Tag("parquet")],
    ],
    Discriminator(_trace_tag, custom_error_type="invalid_trace_format",
                  custom_error_message="unknown trace format; allowed: azure2023, azure2024, "
                  "burstgpt, mooncake, sharegpt, lengths, csv, parquet (or leave 'format' out to "
                  "detect it from the file)"),
]

TRACE_FORMATS = ("azure2023", "azure2024", "burstgpt", "mooncake", "sharegpt", "lengths", "csv",
                 "parquet")


# --------------------------------------------------------------------------------------------
# classes / sources and the workload
# --------------------------------------------------------------------------------------------

class ClassSLO(WorkloadModel):
    """Per-class latency targets (seconds); omitted keys have no target."""

    ttft_s: Optional[PosFloat] = None
    tpot_s: Optional[PosFloat] = None
    e2e_s: Optional[PosFloat] = None


class _SyntheticParts(WorkloadModel):
    prompt_tokens: Optional[LengthDist] = None
    output_tokens: Optional[LengthDist] = None
    lengths: Optional[JointLengths] = None
    sessions: Optional[SessionConfig] = None

    def _lengths_problem(self) -> Optional[str]:
        has_pair = self.prompt_tokens is not None or self.output_tokens is not None
        if self.lengths is not None and has_pair:
            return "give either 'lengths' or 'prompt_tokens' + 'output_tokens', not both"
        if self.lengths is None and (self.prompt_tokens is None or self.output_tokens is None):
            return "synthetic requests need 'prompt_tokens' and 'output_tokens' (or 'lengths')"
        return None

    def _has_synthetic_parts(self) -> bool:
        return any(getattr(self, k) is not None
                   for k in ("prompt_tokens", "output_tokens", "lengths", "sessions"))


class SourceConfig(_SyntheticParts):
    """One request class (tenant). Exactly one of: ``share`` (fraction of the top-level
    arrivals), ``arrival``/``rate_per_s`` (own synthetic stream), ``trace``."""

    name: str = Field(min_length=1)
    share: Optional[Fraction] = None
    rate_per_s: Optional[PosFloat] = None
    arrival: Optional[Arrival] = None
    trace: Optional[TraceConfig] = None
    priority: int = 0
    slo: Optional[ClassSLO] = None

    @model_validator(mode="after")
    def _shape(self):
        kinds = [k for k in ("share", "rate_per_s", "arrival", "trace") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"source '{self.name}' needs exactly one of 'share', 'rate_per_s', "
                             f"'arrival' or 'trace' (got {kinds or 'none'})")
        if self.trace is not None:
            if self._has_synthetic_parts():
                raise ValueError(f"source '{self.name}' reads a trace: lengths and sessions come "
                                 "from the trace (remove prompt_tokens/output_tokens/lengths/sessions)")
        else:
            msg = self._lengths_problem()
            if msg:
                raise ValueError(f"source '{self.name}': {msg}")
        return self

    @property
    def is_endless(self) -> bool:
        return self.trace is None


class WorkloadConfig(_SyntheticParts):
    """The ``workload:`` section. ``num_requests`` stops after that many arrivals,
    ``duration_s`` stops arrivals at that time (arrivals with t < duration_s are kept); at least
    one is required when any arrivals are synthetic (otherwise the run never ends) unless the
    validation context carries ``simulation_duration_s`` (the scenario's simulated-time limit,
    which ends the run); a trace may run to its end. ``on_bad_row`` is the default for every trace (``error``: a malformed row is
    an input error naming file, line and column; ``skip``: it is counted in ``skipped_bad_rows``)."""

    num_requests: Optional[PosInt] = None
    duration_s: Optional[PosFloat] = None
    on_bad_row: Literal["error", "skip"] = "error"
    arrival: Optional[Arrival] = None
    trace: Optional[TraceConfig] = None
    sources: Optional[list[SourceConfig]] = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _shape(self, info: ValidationInfo):
        if self.sources is not None:
            if self.trace is not None or self._has_synthetic_parts():
                raise ValueError("with 'sources', put trace/prompt_tokens/output_tokens/lengths/"
                                 "sessions inside each source")
            names = [s.name for s in self.sources]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"source names must be unique (repeated: {dup})")
            shares = [s.share for s in self.sources if s.share is not None]
            if shares:
                if self.arrival is None:
                    raise ValueError("sources with 'share' split the top-level 'arrival' process: "
                                     "give workload.arrival")
                if abs(sum(shares) - 1.0) > 1e-9:
                    raise ValueError(f"source shares must sum to 1 (they sum to {sum(shares):.6g})")
            elif self.arrival is not None:
                raise ValueError("workload.arrival is only used by sources with 'share'; "
                                 "no source has one")
            endless = any(s.is_endless for s in self.sources)
        elif self.trace is not None:
            if self.arrival is not None or self._has_synthetic_parts():
                raise ValueError("a trace workload takes lengths from the trace; for synthetic "
                                 "arrivals put 'arrival' inside 'trace'")
            endless = False
        else:
            if self.arrival is None:
                raise ValueError("the workload needs 'arrival' (+ lengths), 'trace' or 'sources'")
            msg = self._lengths_problem()
            if msg:
                raise ValueError(msg)
            endless = True
        sim_limit = (info.context or {}).get("simulation_duration_s") if info is not None else None
        if endless and self.num_requests is None and self.duration_s is None and sim_limit is None:
            raise ValueError("synthetic arrivals never end: give 'num_requests' and/or "
                             "'duration_s' (or simulation.duration_s)")
        return self
