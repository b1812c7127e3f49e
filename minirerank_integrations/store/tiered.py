"""Faster stores in front of a slower one, so that hot prefixes are not fetched and decoded per query.

A typical stack: a :class:`~.memory.MemoryPrefixStore` of decoded entries (on the GPU with ``device``: the
hot tier), optionally a local :class:`~.disk.DiskPrefixStore` directory, then the shared
:class:`~.redis.RedisPrefixStore` (or, for one host, a memory tier in front of the disk store); a slow tier
may be wrapped in a :class:`~.writer.WriteBehindStore` so that writes leave the scoring thread. Reads go down the tiers and copy a hit into every tier
above the one that had it; writes go to every tier. Keys are content digests, so an entry never changes
under its key and a copy in a front tier cannot go stale.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import ConfigError
from .entry import PrefixEntry, PrefixStore, StoreStats
from .memory import MemoryPrefixStore


class TieredPrefixStore(PrefixStore):
    """Tiers from fastest to slowest, read in that order; the last one is the store of record.

    A memory tier holds decoded entries as they were given to it. When a tier below stores a lossy
    precision (``storage`` other than ``"float32"``), a freshly computed entry is therefore not put in
    the memory tiers: they fill from reads, with the entry as the lossy tier returns it, so every reader
    is served the same numbers whichever tier answers.

    ``stats``: ``hits`` and ``misses`` count lookups of this store (a hit in any tier is a hit);
    ``rejected``, ``evictions``, ``write_failures`` and ``unstorable`` add up the tiers'; ``writes``, ``bytes_written``
    and ``bytes`` are the last tier's.
    """

    def __init__(self, tiers: Sequence[PrefixStore]) -> None:
        if len(tiers) < 2:
            raise ConfigError(f"a tiered store needs at least two tiers, got {len(tiers)}")
        self.tiers: tuple[PrefixStore, ...] = tuple(tiers)
        self._lookups = StoreStats()
        self._lock = threading.Lock()
        # A memory tier may take a computed entry only if every tier below it keeps it bit-exact.
        self._put_memory = [
            not isinstance(tier, MemoryPrefixStore)
            or all(getattr(lower, "storage", "float32") == "float32" for lower in self.tiers[depth + 1 :])
            for depth, tier in enumerate(self.tiers)
        ]

    @property
    def back(self) -> PrefixStore:
        """The slowest tier: the store of record (shared by processes when it is Redis or a directory)."""
        return self.tiers[-1]

    @property
    def stats(self) -> StoreStats:  # type: ignore[override]
        tier_stats = [tier.stats for tier in self.tiers]
        back = tier_stats[-1]
        with self._lock:
            hits, misses = self._lookups.hits, self._lookups.misses
        return StoreStats(
            hits=hits,
            misses=misses,
            writes=back.writes,
            evictions=sum(s.evictions for s in tier_stats),
            rejected=sum(s.rejected for s in tier_stats),
            bytes=back.bytes,
            write_failures=sum(s.write_failures for s in tier_stats),
            unstorable=sum(s.unstorable for s in tier_stats),
            bytes_written=back.bytes_written,
        )

    def get(self, key: str) -> PrefixEntry | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[PrefixEntry | None]:
        """Each tier is asked once, for what the tiers above it missed (one round trip to a Redis tier)."""
        keys = list(keys)
        found: list[PrefixEntry | None] = [None] * len(keys)
        pending = list(range(len(keys)))
        for depth, tier in enumerate(self.tiers):
            if not pending:
                break
            missing = []
            for index, entry in zip(pending, tier.get_many([keys[i] for i in pending])):
                if entry is None:
                    missing.append(index)
                    continue
                found[index] = entry
                for upper in self.tiers[:depth]:
                    upper.put(keys[index], entry)  # promoted as read, so later readers get the same numbers
            pending = missing
        with self._lock:
            self._lookups.hits += len(keys) - len(pending)
            self._lookups.misses += len(pending)
        return found

    def put(self, key: str, entry: PrefixEntry) -> None:
        for tier, take in zip(self.tiers, self._put_memory):
            if take:
                tier.put(key, entry)

    def __contains__(self, key: object) -> bool:
        """Whether the store of record holds ``key``: what resumable pre-caching asks before computing."""
        return key in self.back

    def __len__(self) -> int:
        return len(self.back)  # type: ignore[arg-type]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for every tier's queued writes (see :class:`~.writer.WriteBehindStore`); True when all are done."""
        return all([tier.flush(timeout) for tier in self.tiers])

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()

    def __enter__(self) -> TieredPrefixStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TieredPrefixStore([{', '.join(repr(t) for t in self.tiers)}])"
