"""The prefix store: where computed prefixes live between calls.

Holds the entry type and the store interface (:mod:`.entry`), the byte codec (:mod:`.codec`: header,
checksum, safetensors payload) and one module per backend (:mod:`.memory`, :mod:`.disk`). It imports
nothing from the engine or the quality tooling: a backend moves entries and bytes, and knows neither
how a prefix was computed nor what its key means (the engine makes keys).
"""

from .codec import CODEC_VERSION, Storage, UnstorableEntry, decode_entry, encode_entry
from .disk import BytesOnlyDisk, DiskPrefixStore
from .entry import PrefixEntry, PrefixStore, StoreStats
from .memory import MemoryPrefixStore

__all__ = [
    "CODEC_VERSION",
    "BytesOnlyDisk",
    "DiskPrefixStore",
    "MemoryPrefixStore",
    "PrefixEntry",
    "PrefixStore",
    "Storage",
    "StoreStats",
    "UnstorableEntry",
    "decode_entry",
    "encode_entry",
]
