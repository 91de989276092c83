"""llmsim.cost: the roofline cost model, communication times and the memory plan.

Imports nothing from the engine. Main entry points: :class:`CostModel` (hot path
``step_time_s``), :func:`step_time` (convenience), :func:`memory_plan`.
"""
from llmsim.cost.comm import (allgather_time_s, allreduce_time_s, alltoall_time_s,
                              hop_latency_s, send_time_s)
from llmsim.cost.memory import (DecodeCapacity, MemoryPlan, decode_capacity,
                                kv_bytes_per_token, kv_transfer_bytes,
                                max_throughput_tokens_per_s, memory_plan,
                                request_capacity_per_s)
from llmsim.cost.roofline import CostModel, OpCost, StepCost, gemm_efficiency, step_time
from llmsim.cost.types import DTYPE_BITS, BatchAggregates, ParallelConfig, QuantConfig

__all__ = [
    "BatchAggregates", "ParallelConfig", "QuantConfig", "DTYPE_BITS",
    "CostModel", "OpCost", "StepCost", "step_time", "gemm_efficiency",
    "MemoryPlan", "memory_plan", "kv_bytes_per_token", "kv_transfer_bytes",
    "DecodeCapacity", "decode_capacity", "max_throughput_tokens_per_s", "request_capacity_per_s",
    "allreduce_time_s", "allgather_time_s", "alltoall_time_s", "send_time_s", "hop_latency_s",
]
