"""The prefix store: where computed prefixes live between calls.

Holds the entry type and the store interface (:mod:`.entry`), the byte codec (:mod:`.codec`: header,
checksum, safetensors payload), one module per backend (:mod:`.memory`, :mod:`.disk` for diskcache,
:mod:`.redis` for a Redis or Valkey server shared by hosts), :mod:`.tiered` (faster stores in front of a
slower one), :mod:`.writer` (writes on a writer thread), :mod:`.config` (``StoreConfig``: the store's settings as one validated model) and
:mod:`.selection` (``open_store``: the store a ``StoreConfig``, a URL or a directory names). It imports
nothing from the engine or the quality tooling: a backend moves entries and bytes, and knows neither
how a prefix was computed nor what its key means (the engine makes keys). redis-py is imported only
when a Redis store is opened (the ``redis`` extra).
"""

from .codec import CODEC_VERSION, Storage, UnstorableEntry, decode_entry, encode_entry
from .config import DEFAULT_MEMORY_LIMIT, MAX_TTL_SECONDS, StoreConfig
from .disk import BytesOnlyDisk, DiskPrefixStore
from .entry import PrefixEntry, PrefixStore, StoreStats
from .memory import MemoryPrefixStore
from .redis import RedisPrefixStore
from .selection import open_store
from .tiered import TieredPrefixStore
from .writer import WriteBehindStore

__all__ = [
    "CODEC_VERSION",
    "DEFAULT_MEMORY_LIMIT",
    "MAX_TTL_SECONDS",
    "BytesOnlyDisk",
    "DiskPrefixStore",
    "MemoryPrefixStore",
    "PrefixEntry",
    "PrefixStore",
    "RedisPrefixStore",
    "Storage",
    "StoreConfig",
    "StoreStats",
    "TieredPrefixStore",
    "UnstorableEntry",
    "WriteBehindStore",
    "decode_entry",
    "encode_entry",
    "open_store",
]
