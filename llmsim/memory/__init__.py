"""KV-cache managers (DESIGN §5)."""
from llmsim.memory.base import KVCacheManager
from llmsim.memory.contiguous import ContiguousKVCacheManager
from llmsim.memory.host import HostKVTier, host_tier_for
from llmsim.memory.paged import PagedKVCacheManager
from llmsim.memory.prefix import PrefixCachingKVCacheManager, prefix_block_keys

MANAGERS = {"contiguous": ContiguousKVCacheManager, "paged": PagedKVCacheManager}

__all__ = ["KVCacheManager", "ContiguousKVCacheManager", "PagedKVCacheManager",
           "PrefixCachingKVCacheManager", "HostKVTier", "host_tier_for", "prefix_block_keys",
           "MANAGERS"]
