"""Contiguous KV reservation (Orca / FasterTransformer): at admission a request reserves room for
its whole prompt plus all ``max_tokens`` outputs, so it can never run out mid-generation (and
memory is wasted on the unused tail). Accounting is kept in blocks of ``block_size`` tokens
(block_size 1 gives exact token reservation).
"""
from __future__ import annotations

from llmsim.memory.base import KVCacheManager


class ContiguousKVCacheManager(KVCacheManager):
    decode_grows = False

    def can_allocate(self, request, held_tokens, num_kv_tokens_after, use_watermark=False):
        if held_tokens > 0:
            return True  # already reserved in full
        return self.blocks_for(self.tokens_needed(request)) <= self.num_free_blocks

    def allocate_slots(self, request, held_tokens, num_kv_tokens_after):
        if held_tokens > 0:
            return True
        return self.allocate_blocks(self.blocks_for(self.tokens_needed(request)))

    def free(self, request, held_tokens):
        if held_tokens > 0:
            self.free_blocks(self.blocks_for(self.tokens_needed(request)))
