"""KV-cache managers: block accounting for one replica (plain Python, no SimPy).

Contract shared by every manager (DESIGN §5):
- capacity is fixed at construction (``num_blocks`` of ``block_size`` tokens);
- ``allocate_slots(request, num_kv_tokens_after) -> bool`` makes the request hold enough KV for
  ``num_kv_tokens_after`` tokens (all or nothing; False leaves state unchanged);
- ``free(request, num_kv_tokens)`` returns what the request holds;
- ``decode_grows`` says whether holding grows one block per ``block_size`` decoded tokens (paged)
  or was reserved up front (contiguous); the scheduler then calls ``allocate_blocks(n)`` for the
  decode block boundaries it tracks itself (so decoding needs no per-request loop);
- ``get_computed_blocks(request) -> int`` prefix-cache hit tokens (0 without prefix caching;
  see :mod:`llmsim.memory.prefix`); the next allocation of the request starts from them;
- ``usage`` is the fraction of blocks in use; ``num_free_blocks`` never goes negative or above
  ``num_blocks`` (asserted by ``check()``).
"""
from __future__ import annotations

from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

@mypyc_attr(allow_interpreted_subclasses=True)
class KVCacheManager:
    decode_grows: ClassVar[bool] = False
    enable_prefix_caching: ClassVar[bool] = False
    host: Any = None             # HostKVTier (swap / offload) or None
    pending_transfer_s: float = 0.0     # host→GPU load time the next step must pay (prefix offload)

    def __init__(self, num_blocks: int, block_size: int, watermark: float = 0.0) -> None:
        if num_blocks < 0 or block_size < 1:
            raise ValueError("num_blocks must be >= 0 and block_size >= 1")
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self.num_free_blocks = int(num_blocks)
        self.watermark_blocks = int(watermark * num_blocks)

    # -- block arithmetic ------------------------------------------------------------------
    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks if self.num_blocks else 0.0

    def allocate_blocks(self, n: int) -> bool:
        if n > self.num_free_blocks:
            return False
        self.num_free_blocks -= n
        return True

    def free_blocks(self, n: int) -> None:
        self.num_free_blocks += n
        if self.num_free_blocks > self.num_blocks:
            raise AssertionError(f"KV free blocks {self.num_free_blocks} above capacity "
                                 f"{self.num_blocks}")

    def check(self) -> None:
        if not 0 <= self.num_free_blocks <= self.num_blocks:
            raise AssertionError(f"KV blocks out of range: free={self.num_free_blocks} "
                                 f"capacity={self.num_blocks}")

    # -- per-request interface (overridden) ------------------------------------------------
    def get_computed_blocks(self, request: Any) -> int:
        """Tokens of ``request``'s prompt already in the cache (prefix caching); 0 here."""
        return 0

    def max_request_tokens(self) -> int:
        """Largest prompt+output a single request can ever hold."""
        return self.capacity_tokens

    def tokens_needed(self, request: Any) -> int:
        """KV tokens a request will hold at its largest (prompt + all output tokens)."""
        return request.num_prompt_tokens + request.max_tokens

    def can_allocate(self, request: Any, held_tokens: int, num_kv_tokens_after: int,
                     use_watermark: bool = False) -> bool:
        raise NotImplementedError

    def allocate_slots(self, request: Any, held_tokens: int, num_kv_tokens_after: int) -> bool:
        raise NotImplementedError

    def free(self, request: Any, held_tokens: int) -> None:
        raise NotImplementedError
