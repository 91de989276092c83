"""Request: one inference request as the simulator carries it.

Contract (vLLM vocabulary): the workload fills the immutable part (``request_id``,
``arrival_s``, ``num_prompt_tokens``, ``max_tokens`` = output tokens the request will generate,
optional ``hash_ids`` (one id per ``hash_block_tokens``-token prompt block; equal ids = shared prefix, as in the Mooncake traces), ``tenant``/class,
``priority``, ``session_id``). The engine fills the mutable part. ``num_tokens`` is prompt +
generated so far; ``num_computed_tokens`` is how many of those are in the KV cache. Plain
``__slots__`` class: cheap to create by the million.
"""
from __future__ import annotations

from operator import index
from typing import Any, SupportsIndex

FINISHED = "finished"
REJECTED = "rejected"
UNFINISHED = "unfinished"
FAILED = "failed"


class Request:
    __slots__ = (
        # workload (immutable by convention)
        "request_id", "arrival_s", "num_prompt_tokens", "max_tokens", "hash_ids",
        "hash_block_tokens", "tenant", "priority", "session_id", "extra",
        # engine state
        "num_output_tokens", "num_computed_tokens", "num_cached_tokens", "num_preemptions",
        "first_scheduled_s", "first_token_s", "finish_s", "status", "reason",
        "pool", "replica", "sched",
    )

    def __init__(self, request_id, arrival_s: float, num_prompt_tokens: SupportsIndex,
                 max_tokens: SupportsIndex, hash_ids=None, hash_block_tokens: SupportsIndex = 0,
                 tenant: str | None = None, priority: SupportsIndex = 0, session_id=None,
                 extra: dict | None = None) -> None:
        # the counts take any integer (numpy's too; a float is refused) and hold Python ints,
        # the arrival a float: the same in the pure and the compiled build (llmsim/_compiled.py)
        # (a Python int is taken as it is: index() is a call per count, once per request)
        self.request_id = request_id
        self.arrival_s: float = float(arrival_s)
        self.num_prompt_tokens: int = num_prompt_tokens if type(num_prompt_tokens) is int \
            else index(num_prompt_tokens)
        self.max_tokens: int = max_tokens if type(max_tokens) is int else index(max_tokens)
        self.hash_ids = hash_ids
        self.hash_block_tokens: int = hash_block_tokens if type(hash_block_tokens) is int \
            else index(hash_block_tokens)
        self.tenant = tenant
        self.priority: int = priority if type(priority) is int else index(priority)
        self.session_id = session_id
        self.extra = extra
        self.num_output_tokens = 0
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.num_preemptions = 0
        self.first_scheduled_s: Any = None
        self.first_token_s: Any = None
        self.finish_s: Any = None
        self.status: Any = None
        self.reason: Any = None
        self.pool: Any = None
        self.replica: Any = None
        self.sched: Any = None   # scheduler-private state (set and read only by the scheduler)

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens

    def __repr__(self) -> str:
        return (f"Request({self.request_id!r}, arrival_s={self.arrival_s:.6g}, "
                f"prompt={self.num_prompt_tokens}, max_tokens={self.max_tokens}, "
                f"status={self.status})")
