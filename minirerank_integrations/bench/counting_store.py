"""A prefix store wrapper that counts what reads return and how long they take: the warm rows' store bytes read
per pair and read speed come from it."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..store import PrefixEntry, PrefixStore, StoreStats

__all__ = ["CountingStore"]


class CountingStore(PrefixStore):
    """A store wrapper that counts what reads return and how long they take (bytes as stored on disk)."""

    def __init__(self, inner: PrefixStore, stored_bytes: Callable[[PrefixEntry], int]) -> None:
        self.inner = inner
        self._stored_bytes = stored_bytes
        self.read_bytes = 0
        self.read_seconds = 0.0
        self.reads = 0

    @property
    def stats(self) -> StoreStats:  # type: ignore[override]
        return self.inner.stats

    def get(self, key: str) -> PrefixEntry | None:
        start = time.perf_counter()
        entry = self.inner.get(key)
        self.read_seconds += time.perf_counter() - start
        if entry is not None:
            self.reads += 1
            self.read_bytes += self._stored_bytes(entry)
        return entry

    def put(self, key: str, entry: PrefixEntry) -> None:
        self.inner.put(key, entry)

    def __contains__(self, key: object) -> bool:
        return key in self.inner

    def close(self) -> None:
        self.inner.close()
