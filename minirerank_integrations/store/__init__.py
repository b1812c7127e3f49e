"""The prefix store: where computed prefixes live between calls.

Holds the entry type and the store interface (:mod:`.entry`), the byte codec (:mod:`.codec`: header,
checksum, safetensors payload), one module per backend (:mod:`.memory`; :mod:`.disk` for diskcache, with the
directory's files in :mod:`.disk_layout`, its bytes-only ``Disk`` in :mod:`.bytes_disk`, read-only access in
:mod:`.disk_reader`, eviction and verification in :mod:`.disk_maintenance`; :mod:`.redis` for a Redis or
Valkey server shared by hosts), :mod:`.tiered` (faster stores in front of a slower one), :mod:`.writer`
(writes on a writer thread), :mod:`.window` (a window of entries gathered into one batch, int8 dequantized
there), :mod:`.config` (``StoreConfig``: the store's settings as one validated model, with :mod:`.precision`
and :mod:`.urls`, none of which imports torch) and :mod:`.selection` (``open_store``: the store a
``StoreConfig``, a URL or a directory names). It imports
nothing from the engine or the quality tooling: a backend moves entries and bytes, and knows neither
how a prefix was computed nor what its key means (the engine makes keys). redis-py is imported only
when a Redis store is opened (the ``redis`` extra).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .config import DEFAULT_MEMORY_LIMIT, MAX_TTL_SECONDS, StoreConfig
from .precision import Storage

if TYPE_CHECKING:
    from .codec import CODEC_VERSION, UnstorableEntry, decode_entry, encode_entry
    from .disk import BytesOnlyDisk, DiskPrefixStore
    from .entry import PrefixEntry, PrefixStore, StoreStats
    from .memory import MemoryPrefixStore
    from .redis import RedisPrefixStore
    from .selection import open_store
    from .tiered import TieredPrefixStore
    from .writer import WriteBehindStore

#: Names that import torch, loaded on first use (PEP 562) so that the settings and the command line's
#: options do not: public name -> the module that defines it.
_LAZY = {
    "CODEC_VERSION": ".codec",
    "UnstorableEntry": ".codec",
    "decode_entry": ".codec",
    "encode_entry": ".codec",
    "BytesOnlyDisk": ".disk",
    "DiskPrefixStore": ".disk",
    "PrefixEntry": ".entry",
    "PrefixStore": ".entry",
    "StoreStats": ".entry",
    "MemoryPrefixStore": ".memory",
    "RedisPrefixStore": ".redis",
    "open_store": ".selection",
    "TieredPrefixStore": ".tiered",
    "WriteBehindStore": ".writer",
}

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


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
