"""Write-behind: a store whose ``put`` hands the entry to a writer thread and returns at once.

Encoding an entry (checksum, int8 quantization) and writing it (a value file, a SQLite transaction, a Redis
SET) take milliseconds per entry at the 2B shape; on the scoring thread they would hold up ingestion and
every cold query. :class:`WriteBehindStore` puts them on one writer thread, behind a queue bounded in bytes:
a producer that runs far ahead of the disk waits for room (back-pressure), never grows memory without
bound. Until an entry is written, a ``get`` of its key is served from the queue, so a reader never misses
what was just put. Writing errors are logged and counted, never raised into a call; ``flush`` waits for
the queue, and ``close`` (or the interpreter's exit) writes what is left.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .entry import PrefixEntry, PrefixStore, StoreStats

logger = logging.getLogger(__name__)

#: Bytes of entries waiting for the writer before ``put`` waits for room: about 28 pages of 1024x1024 at the
#: 2B shape in bfloat16 (18 MB each), enough to ride out a slow fsync or a busy Redis.
DEFAULT_PENDING_BYTES = 512 * 2**20


class _Queue:
    """The writer's state and thread, apart from the store so that the store can be collected (and its
    finalizer drain the queue) while the thread still runs."""

    def __init__(self, inner: PrefixStore, max_pending_bytes: int) -> None:
        self.inner = inner
        self.max_pending_bytes = max_pending_bytes
        self.pending: OrderedDict[str, PrefixEntry] = OrderedDict()  # latest entry per key not yet written
        self.order: deque[str] = deque()  # keys to write, oldest first, each at most once
        self.queued: set[str] = set()
        self.pending_bytes = 0
        self.writing = 0  # entries taken by the writer and not yet written
        self.closed = False
        self.failures = 0
        self.warned = False
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self.run, name="minirerank-prefix-writer", daemon=True)
        self.thread.start()

    def add(self, key: str, entry: PrefixEntry) -> bool:
        """Queue ``entry`` (waiting for room); False when the writer is closed and the caller writes itself."""
        size = entry.nbytes()
        with self.condition:
            # Wait for room, but never for an empty queue: an entry larger than the bound still goes through.
            while not self.closed and self.pending and self.pending_bytes + size > self.max_pending_bytes:
                self.condition.wait()
            if self.closed:
                return False
            old = self.pending.pop(key, None)
            if old is not None:
                self.pending_bytes -= old.nbytes()
            self.pending[key] = entry
            self.pending_bytes += size
            if key not in self.queued:
                self.queued.add(key)
                self.order.append(key)
            self.condition.notify_all()
        return True

    def run(self) -> None:
        while True:
            with self.condition:
                while not self.order and not self.closed:
                    self.condition.wait()
                if not self.order:
                    return  # closed and drained
                key = self.order.popleft()
                self.queued.discard(key)
                entry = self.pending[key]
                self.writing += 1
            try:
                self.inner.put(key, entry)
            except Exception as error:  # a store fault or a malformed entry: never the caller's call
                self.failed(key, error)
            with self.condition:
                self.writing -= 1
                if self.pending.get(key) is entry:  # not replaced by a newer put meanwhile
                    del self.pending[key]
                    self.pending_bytes -= entry.nbytes()
                self.condition.notify_all()

    def failed(self, key: str, error: BaseException) -> None:
        with self.condition:
            self.failures += 1
            first, self.warned = not self.warned, True
        if first:
            warnings.warn(
                f"prefix store writer: entry {key} could not be written ({type(error).__name__}: {error}); it is "
                "served until then and recomputed later, and further failures are only logged",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            logger.warning("prefix store writer: entry %s could not be written: %s", key, error)

    def flush(self, timeout: float | None) -> bool:
        with self.condition:
            return self.condition.wait_for(lambda: not self.order and not self.writing, timeout)

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()
        if self.thread is not threading.current_thread():
            self.thread.join()


class WriteBehindStore(PrefixStore):
    """``inner`` with its writes moved to a writer thread (see the module docstring).

    Args:
        inner: the store written to (a directory or a Redis store); it must be safe to call from two threads,
            as every store here is.
        max_pending_bytes: bytes of queued entries (as given to ``put``) before ``put`` waits for the writer.

    ``stats`` are the inner store's, with ``write_failures`` adding the writes that raised and ``hits`` the
    reads served from the queue. Other attributes (``directory``, ``verify``, ``clear``...) are the inner
    store's.
    """

    def __init__(self, inner: PrefixStore, *, max_pending_bytes: int = DEFAULT_PENDING_BYTES) -> None:
        if not isinstance(inner, PrefixStore):
            raise ConfigError(f"a write-behind store wraps a PrefixStore, got {type(inner).__name__}")
        if not isinstance(max_pending_bytes, int) or isinstance(max_pending_bytes, bool) or max_pending_bytes <= 0:
            raise ConfigError(f"max_pending_bytes {max_pending_bytes!r} must be a positive number of bytes")
        self.inner = inner
        self._queue = _Queue(inner, max_pending_bytes)
        self._queued_hits = 0
        # Drains the queue when the store is collected or the interpreter exits (daemon threads die at exit).
        self._finalizer = weakref.finalize(self, self._queue.close)

    @property
    def storage(self) -> str:
        """The inner store's precision (what a tier in front of it needs to know)."""
        return getattr(self.inner, "storage", "float32")

    @property
    def stats(self) -> StoreStats:  # type: ignore[override]
        inner = self.inner.stats
        with self._queue.condition:
            failures, hits = self._queue.failures, self._queued_hits
        return dataclasses.replace(inner, write_failures=inner.write_failures + failures, hits=inner.hits + hits)

    @property
    def pending(self) -> int:
        """Entries queued or being written."""
        with self._queue.condition:
            return len(self._queue.pending)

    def put(self, key: str, entry: PrefixEntry) -> None:
        """Queue ``entry`` for the writer and return (after waiting for room when the queue is full)."""
        if type(key) is not str:
            raise TypeError(f"prefix store keys are str digests, got {type(key).__name__}")
        if not self._queue.add(key, entry):
            self.inner.put(key, entry)  # closed: written here, as a store without a writer would

    def get(self, key: str) -> PrefixEntry | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[PrefixEntry | None]:
        """Entries still queued come from the queue; the rest from the inner store in one ``get_many``."""
        keys = list(keys)
        queue = self._queue
        with queue.condition:
            found: list[PrefixEntry | None] = [queue.pending.get(key) for key in keys]
            self._queued_hits += sum(entry is not None for entry in found)
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            for i, entry in zip(missing, self.inner.get_many([keys[i] for i in missing])):
                found[i] = entry
        return found

    def __contains__(self, key: object) -> bool:
        with self._queue.condition:
            if key in self._queue.pending:
                return True
        return key in self.inner

    def __len__(self) -> int:
        """Entries the inner store holds (queued ones count once written)."""
        return len(self.inner)  # type: ignore[arg-type]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued entry is written (or ``timeout`` seconds pass); True when drained."""
        return self._queue.flush(timeout)

    def close(self) -> None:
        """Write what is queued, stop the writer, then close the inner store."""
        self._finalizer()
        self.inner.close()

    def __enter__(self) -> WriteBehindStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class lacks: maintenance calls and attributes of the inner store.
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"WriteBehindStore({self.inner!r})"
