"""Host-memory (CPU) tier for KV blocks: swapped-out requests and offloaded prefix blocks.

Contract (DESIGN §5, plain Python, no SimPy):
- capacity is ``num_blocks`` blocks of ``block_size`` tokens (``swap_space_gb`` of the pool
  divided by the host bytes of one block, see :func:`host_tier_for`);
- moving ``n`` blocks between GPU and host takes ``transfer_s(n) = latency_s + n ·
  block_transfer_s`` (0 for ``n == 0``): every GPU of the replica moves its own shard over its
  own host link at the same time, so ``block_transfer_s`` is the per-GPU bytes of a block over
  ``HardwareSpec.host_link.bandwidth_bytes_per_s``;
- ``swap_out(request, n)`` holds ``n`` blocks for a preempted request until ``swap_in``
  releases them; swapped requests come before offloaded prefix blocks: a swap-out evicts
  least-recently-used prefix blocks when it needs their room, never the other way round;
- ``offload(key)`` keeps an evicted GPU prefix-cache block (LRU; the oldest offloaded block
  makes room; nothing is kept when swapped requests fill the tier); ``take(key)`` removes a
  block that is loaded back to the GPU;
- ``num_free_blocks`` never goes negative nor above ``num_blocks`` (``check()``).
Counters (``blocks_swapped_out``, ``blocks_swapped_in``, ``blocks_offloaded``,
``blocks_loaded``, ``transfer_s``) are cumulative.
"""
from __future__ import annotations

from collections import OrderedDict


class HostKVTier:
    def __init__(self, num_blocks: int, block_size: int, block_transfer_s: float,
                 latency_s: float = 0.0):
        if num_blocks < 0 or block_size < 1 or block_transfer_s < 0 or latency_s < 0:
            raise ValueError("host tier needs num_blocks >= 0, block_size >= 1 and "
                             "non-negative transfer times")
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self.block_transfer_s = float(block_transfer_s)
        self.latency_s = float(latency_s)
        self.num_free_blocks = self.num_blocks
        self.swapped: dict = {}                 # request -> blocks held for it
        self.prefix: OrderedDict = OrderedDict()  # offloaded prefix block keys, LRU first
        self.blocks_swapped_out = 0
        self.blocks_swapped_in = 0
        self.blocks_offloaded = 0
        self.blocks_loaded = 0
        self.transfer_s = 0.0
        self.version = 0      # bumped whenever the set of offloaded prefix blocks changes

    # -- time ----------------------------------------------------------------------------
    def transfer_time_s(self, num_blocks: int) -> float:
        """Seconds to move ``num_blocks`` blocks over the host link (either direction)."""
        if num_blocks <= 0:
            return 0.0
        return self.latency_s + num_blocks * self.block_transfer_s

    # -- swap --------------------------------------------------------------------------------
    def can_swap_out(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free_blocks + len(self.prefix)

    def swap_out(self, request, num_blocks: int) -> float:
        """Hold ``num_blocks`` for ``request``; returns the transfer time. The caller checked
        ``can_swap_out``."""
        if request in self.swapped:
            raise AssertionError(f"{request!r} is already swapped out")
        if not self.can_swap_out(num_blocks):
            raise AssertionError("host tier full")
        while self.num_free_blocks < num_blocks:
            self.prefix.popitem(last=False)
            self.num_free_blocks += 1
            self.version += 1
        self.num_free_blocks -= num_blocks
        self.swapped[request] = num_blocks
        self.blocks_swapped_out += num_blocks
        t = self.transfer_time_s(num_blocks)
        self.transfer_s += t
        return t

    def swap_in(self, request) -> float:
        """Release the blocks of ``request`` (copied back to the GPU); returns the time."""
        n = self.swapped.pop(request)
        self.num_free_blocks += n
        self.blocks_swapped_in += n
        t = self.transfer_time_s(n)
        self.transfer_s += t
        return t

    def swapped_blocks(self, request) -> int:
        return self.swapped[request]

    # -- prefix offload ------------------------------------------------------------------
    def offload(self, key) -> bool:
        """Keep an evicted prefix block (GPU → host copy, overlapped with compute: not timed).
        Returns False when there is no room (the tier is full of swapped requests)."""
        if key in self.prefix:
            self.prefix.move_to_end(key)
            return True
        if self.num_free_blocks == 0:
            if not self.prefix:
                return False
            self.prefix.popitem(last=False)
            self.num_free_blocks += 1
        self.version += 1
        self.prefix[key] = None
        self.num_free_blocks -= 1
        self.blocks_offloaded += 1
        return True

    def has(self, key) -> bool:
        return key in self.prefix

    def take(self, key) -> None:
        """A prefix block is loaded back to the GPU: it leaves the host tier."""
        del self.prefix[key]
        self.num_free_blocks += 1
        self.blocks_loaded += 1
        self.version += 1

    def check(self) -> None:
        used = sum(self.swapped.values()) + len(self.prefix)
        if not 0 <= self.num_free_blocks <= self.num_blocks or \
                used != self.num_blocks - self.num_free_blocks:
            raise AssertionError(f"host KV tier out of balance: free={self.num_free_blocks} "
                                 f"used={used} capacity={self.num_blocks}")


def host_tier_for(swap_space_bytes: float, block_bytes_per_gpu: float, num_gpus: int,
                  host_link, block_size: int, num_engines: int = 1) -> HostKVTier | None:
    """The host tier of one virtual engine of a replica, or None without swap space.

    A block takes ``block_bytes_per_gpu`` on each of the ``num_gpus`` GPUs of the replica, so
    its host copy takes ``block_bytes_per_gpu · num_gpus`` bytes (an upper bound with unequal
    pipeline stages); the replica's ``swap_space_bytes`` is split evenly over ``num_engines``
    (pipeline virtual engines). Transfers run on every GPU's host link in parallel."""
    if swap_space_bytes <= 0:
        return None
    blocks = int(swap_space_bytes // (block_bytes_per_gpu * num_gpus)) // num_engines
    return HostKVTier(blocks, block_size, block_bytes_per_gpu / host_link.bandwidth_bytes_per_s,
                      host_link.latency_s)
