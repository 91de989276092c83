"""KV-cache managers (DESIGN §5)."""
from llmsim.memory.base import KVCacheManager
from llmsim.memory.contiguous import ContiguousKVCacheManager
from llmsim.memory.paged import PagedKVCacheManager

MANAGERS = {"contiguous": ContiguousKVCacheManager, "paged": PagedKVCacheManager}

__all__ = ["KVCacheManager", "ContiguousKVCacheManager", "PagedKVCacheManager", "MANAGERS"]
