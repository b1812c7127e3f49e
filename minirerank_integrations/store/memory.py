"""The in-memory prefix store: an LRU dictionary of decoded entries bounded by bytes, on the host or on a device.

Without a cache directory it is the whole store; in front of a directory or Redis it is the hot tier
(:mod:`.tiered`). With ``device="cuda"`` the entries it keeps live in GPU memory, so a popular corpus is
served without reading, checking, decoding or copying anything on the host (``docs/design.md``, "On a GPU": an
80 GB card holds several thousand 1024x1024 pages at the 2B shape).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict

import torch

from ..errors import ConfigError
from .entry import PrefixEntry, PrefixStore, StoreStats

logger = logging.getLogger(__name__)


class MemoryPrefixStore(PrefixStore):
    """An LRU dictionary of decoded entries bounded by bytes: the default when no cache directory is given.

    Args:
        size_limit: bytes of tensor data held (on ``device``) before the least recently used entries go; an
            entry larger than this is not kept.
        device: where kept entries live (``"cuda"``, ``"cuda:1"``, a ``torch.device``); None keeps each entry
            where it was given. An entry is copied there once, when it is put.

    An entry holding NaN or inf is never kept (one ``RuntimeWarning`` per store, counted in
    ``stats.unstorable``); the call that computed it goes on.
    """

    def __init__(self, size_limit: int = 2**30, *, device: str | torch.device | None = None) -> None:
        if not isinstance(size_limit, int) or isinstance(size_limit, bool) or size_limit <= 0:
            raise ConfigError(f"size_limit {size_limit!r} must be a positive number of bytes")
        try:
            self.device = None if device is None else torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ConfigError(f"device {device!r} is not a torch device: {error}") from error
        self.size_limit = size_limit  # bytes of tensor data held before the least recently used go
        self.stats = StoreStats()
        self._entries: OrderedDict[str, PrefixEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._warned_unstorable = False

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
        size = entry.nbytes()
        if size > self.size_limit:
            logger.debug(
                "prefix memory store: entry %s is %d bytes, over size_limit %d; not kept", key, size, self.size_limit
            )
            return
        if not entry.is_finite():
            self._unstorable(key)
            return
        if self.device is not None:
            entry = _moved(entry, self.device)  # outside the lock: a host-to-device copy takes a while
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.stats.bytes -= old.nbytes()
            self._entries[key] = entry
            self.stats.bytes += size
            self.stats.writes += 1
            self.stats.bytes_written += size
            while self.stats.bytes > self.size_limit and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self.stats.bytes -= evicted.nbytes()
                self.stats.evictions += 1

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        device = "" if self.device is None else f", device={str(self.device)!r}"
        return f"MemoryPrefixStore(size_limit={self.size_limit}{device})"

    def _unstorable(self, key: str) -> None:
        with self._lock:
            self.stats.unstorable += 1
            first, self._warned_unstorable = not self._warned_unstorable, True
        if first:
            warnings.warn(
                f"prefix memory store: entry {key} holds NaN or inf and is not kept (it is served to the call "
                "that computed it only); further such entries are not warned about",
                RuntimeWarning,
                stacklevel=3,
            )


def _moved(entry: PrefixEntry, device: torch.device) -> PrefixEntry:
    """``entry`` with its tensors on ``device`` (the same object when they are already there; an int8 entry
    moves as codes and scales, half the bytes of bfloat16)."""
    return entry.to(device)
