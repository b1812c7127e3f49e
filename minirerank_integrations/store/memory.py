"""The in-memory prefix store: an LRU dictionary bounded by bytes, the default without a cache directory."""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..errors import ConfigError
from .entry import PrefixEntry, PrefixStore, StoreStats


class MemoryPrefixStore(PrefixStore):
    """An LRU dictionary bounded by bytes: the default when no cache directory is given."""

    def __init__(self, size_limit: int = 2**30) -> None:
        if not isinstance(size_limit, int) or isinstance(size_limit, bool) or size_limit <= 0:
            raise ConfigError(f"size_limit {size_limit!r} must be a positive number of bytes")
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
            self.stats.bytes_written += entry.nbytes()
            while self.stats.bytes > self.size_limit and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self.stats.bytes -= evicted.nbytes()
                self.stats.evictions += 1

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
