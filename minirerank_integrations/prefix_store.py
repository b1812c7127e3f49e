"""Where computed prefixes live between calls: the entry type, the store interface and the in-memory store.

A prefix entry holds exactly what the fast path reads for one prefix: the post-RoPE keys and values
of the band layers for the kept tokens, and the M-RoPE index at which the suffix starts.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefixEntry:
    """The cached state of one prefix (design notes, section 2)."""

    keys: torch.Tensor  # [band_layers, kv_heads, length, head_dim], RoPE already applied
    values: torch.Tensor  # [band_layers, kv_heads, length, head_dim]
    length: int  # tokens kept in the prefix (after pruning)
    next_position: int  # M-RoPE index where the suffix's first token sits

    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()


@dataclass
class StoreStats:
    """Counters of a prefix store since it was opened."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    rejected: int = 0  # entries found unreadable (bad header, checksum, shape) and dropped
    bytes: int = 0  # bytes currently held


class PrefixStore(ABC):
    """Maps a prefix key (a hex digest made by the engine) to a :class:`PrefixEntry`."""

    stats: StoreStats

    @abstractmethod
    def get(self, key: str) -> PrefixEntry | None:
        """The entry for ``key``, or None on a miss (an unreadable entry counts as a miss)."""

    @abstractmethod
    def put(self, key: str, entry: PrefixEntry) -> None:
        """Store ``entry`` under ``key``; failures to persist are reported as warnings, not raised."""

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files or connections; the in-memory store has none."""


class MemoryPrefixStore(PrefixStore):
    """An LRU dictionary bounded by bytes: the default when no cache directory is given."""

    def __init__(self, size_limit: int = 2**30) -> None:
        self.size_limit = size_limit  # bytes of tensor data held before the least recently used go
        self.stats = StoreStats()
        self._entries: OrderedDict[str, PrefixEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> PrefixEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry

    def put(self, key: str, entry: PrefixEntry) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.stats.bytes -= old.nbytes()
            self._entries[key] = entry
            self.stats.bytes += entry.nbytes()
            self.stats.writes += 1
            while self.stats.bytes > self.size_limit and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self.stats.bytes -= evicted.nbytes()
                self.stats.evictions += 1

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
