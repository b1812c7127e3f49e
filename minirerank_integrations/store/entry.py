"""The prefix entry and the store interface every backend implements.

A prefix entry holds exactly what the fast path reads for one prefix: the post-RoPE keys and values
of the band layers for the kept tokens, and the M-RoPE index at which the suffix starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefixEntry:
    """The cached state of one prefix (``docs/design.md``, "The miniReranker computation")."""

    keys: torch.Tensor  # [band_layers, kv_heads, length, head_dim], RoPE already applied
    values: torch.Tensor  # [band_layers, kv_heads, length, head_dim]
    length: int  # tokens kept in the prefix (after pruning)
    next_position: int  # M-RoPE index where the suffix's first token sits

    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def is_finite(self) -> bool:
        """Whether keys and values hold no NaN or inf: a store never keeps an entry that is not."""
        return all_finite(self.keys, self.values)


def all_finite(*tensors: torch.Tensor) -> bool:
    """Whether every element of ``tensors`` is finite, at the cost of one pass over each.

    A float32 sum is finite only if every addend is (a NaN or an inf makes it NaN or inf), so it answers
    without a mask the size of the tensor; only when a sum overflows is each element checked.
    """
    for tensor in tensors:
        if not tensor.numel() or not tensor.is_floating_point() or tensor.is_meta:
            continue  # nothing to check (a meta tensor holds no values)
        if not bool(torch.isfinite(tensor.sum(dtype=torch.float32))) and not bool(torch.isfinite(tensor).all()):
            return False
    return True


@dataclass
class StoreStats:
    """Counters of a prefix store since it was opened."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    rejected: int = 0  # entries found unreadable (bad header, checksum, shape) and dropped
    bytes: int = 0  # bytes currently held
    write_failures: int = 0  # puts that could not be persisted (read-only or full disk, SQLite errors, Redis down)
    unstorable: int = 0  # entries the storage precision cannot hold faithfully (float16 overflow): not stored
    bytes_written: int = 0  # encoded bytes of the entries this store accepted since it was opened


class PrefixStore(ABC):
    """Maps a prefix key (a hex digest made by the engine) to a :class:`PrefixEntry`."""

    stats: StoreStats

    @abstractmethod
    def get(self, key: str) -> PrefixEntry | None:
        """The entry for ``key``, or None on a miss (an unreadable entry counts as a miss)."""

    @abstractmethod
    def put(self, key: str, entry: PrefixEntry) -> None:
        """Store ``entry`` under ``key``; failures to persist are reported as warnings, not raised."""

    def get_many(self, keys: Sequence[str]) -> list[PrefixEntry | None]:
        """The entries for ``keys``, in order (None for each miss).

        One lookup per key here; a networked backend overrides it to fetch every key in one round trip,
        which is how the engine asks for all the prefixes of a rerank call.
        """
        return [self.get(key) for key in keys]

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted ``put`` is written (a write-behind store queues them); True when done.

        Stores that write on the caller's thread are always done.
        """
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files or connections; the in-memory store has none."""
