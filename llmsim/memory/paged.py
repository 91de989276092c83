"""Paged KV cache (vLLM PagedAttention): blocks allocated on demand as tokens are computed.

A request holding ``t`` KV tokens holds exactly ``ceil(t / block_size)`` blocks, so the manager
needs no per-request table: the scheduler passes the held token count. Admission of new prompts
may keep ``watermark`` of the blocks free (vLLM's watermark) to avoid immediate preemption.
"""
from __future__ import annotations

from typing import Any, ClassVar

from mypy_extensions import mypyc_attr
from llmsim.memory.base import KVCacheManager


@mypyc_attr(allow_interpreted_subclasses=True)
class PagedKVCacheManager(KVCacheManager):
    decode_grows: ClassVar[bool] = True

    def _extra_blocks(self, held_tokens: int, after_tokens: int) -> int:
        bs = self.block_size
        return (held_tokens // -bs) - (after_tokens // -bs)     # ceil(after/bs) - ceil(held/bs)

    def can_allocate(self, request: Any, held_tokens: int, num_kv_tokens_after: int,
                     use_watermark: bool = False) -> bool:
        need = self._extra_blocks(held_tokens, num_kv_tokens_after)
        reserve = self.watermark_blocks if use_watermark else 0
        return self.num_free_blocks - need >= reserve

    def allocate_slots(self, request: Any, held_tokens: int, num_kv_tokens_after: int) -> bool:
        return self.allocate_blocks(self._extra_blocks(held_tokens, num_kv_tokens_after))

    def free(self, request: Any, held_tokens: int) -> None:
        self.free_blocks(self.blocks_for(held_tokens))
