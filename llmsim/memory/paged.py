"""Paged KV cache (vLLM PagedAttention): blocks allocated on demand as tokens are computed.

A request holding ``t`` KV tokens holds exactly ``ceil(t / block_size)`` blocks, so the manager
needs no per-request table: the scheduler passes the held token count. Admission of new prompts
may keep ``watermark`` of the blocks free (vLLM's watermark) to avoid immediate preemption.
"""
from __future__ import annotations

from llmsim.memory.base import KVCacheManager


class PagedKVCacheManager(KVCacheManager):
    decode_grows = True

    def _extra_blocks(self, held_tokens: int, after_tokens: int) -> int:
        bs = self.block_size
        return (held_tokens // -bs) - (after_tokens // -bs)     # ceil(after/bs) - ceil(held/bs)

    def can_allocate(self, request, held_tokens, num_kv_tokens_after, use_watermark=False):
        need = self._extra_blocks(held_tokens, num_kv_tokens_after)
        reserve = self.watermark_blocks if use_watermark else 0
        return self.num_free_blocks - need >= reserve

    def allocate_slots(self, request, held_tokens, num_kv_tokens_after):
        return self.allocate_blocks(self._extra_blocks(held_tokens, num_kv_tokens_after))

    def free(self, request, held_tokens):
        self.free_blocks(self.blocks_for(held_tokens))
