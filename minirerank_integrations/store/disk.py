"""The on-disk prefix store: codec bytes in a ``diskcache.Cache`` directory.

It follows diskcache's own split: :mod:`.codec` turns entries into bytes and back (header, checksum,
tensors), :class:`DiskPrefixStore` maps keys to those bytes in a ``diskcache.Cache`` (transactions,
eviction, statistics) and :class:`~.bytes_disk.BytesOnlyDisk` makes sure only bytes cross into it. The
directory's files are named in :mod:`.disk_layout`, read-only access lives in :mod:`.disk_reader`, and
eviction, verification and orphan removal in :mod:`.disk_maintenance`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import get_args

import diskcache
import torch

from ..errors import CacheError, ConfigError
from . import codec as _codec
from .bytes_disk import BytesOnlyDisk, RefusedValue, VanishedValue
from .disk_layout import DATABASE, MARKER_FILE, directory_identity, is_prefix_store, write_marker
from .disk_maintenance import evict_least_recent, remove_orphan_files, verify_rows
from .disk_reader import ReadOnlyReader, RecentRows, row_names, touch_row
from .entry import PrefixEntry, PrefixStore, StoreStats

__all__ = ["MARKER_FILE", "BytesOnlyDisk", "DiskPrefixStore", "is_prefix_store"]

logger = logging.getLogger(__name__)


class DiskPrefixStore(PrefixStore):
    """Prefix entries as codec bytes in a ``diskcache.Cache`` directory: across calls, processes, restarts.

    A store marks its directory (``minirerank-prefix-store.json``) when it creates it, and refuses a
    directory that holds a ``cache.db`` without that mark (:class:`CacheError`): another application's
    cache must never have its rows evicted or dropped as unreadable. ``directory`` must not be empty.

    A row is named by the key and this store's ``storage`` (:func:`.codec.row_key`), so stores of different
    precisions share a directory side by side, and ``key in store`` answers for this store's precision.
    Every blob is bound to its row (see :mod:`.codec`): a row read under another name (swapped or copied
    rows) or stored in another precision is dropped and recomputed, never served. An entry holding NaN or
    inf, or one the storage cannot hold faithfully (float16 or bfloat16 overflow), is not stored: one
    ``RuntimeWarning`` per store, counted in ``stats.unstorable``.

    A store that cannot be written (``read_only=True``, a read-only mount, a full disk) still serves what it
    holds: the database is then read through a read-only SQLite connection (``mode=ro``, falling back to
    ``immutable=1`` when a read-only directory has no ``-shm`` file), nothing is written, and puts are
    counted in ``stats.write_failures`` with one warning. A directory deleted while the store is open is
    noticed at the next call and created afresh, with one warning.

    A read takes the row (refreshing its access time) in one short transaction, then reads the value file into
    one buffer outside it, decoded in place (int8 entries stay codes and scales); a row read before is read
    through the value file it named, without SQLite, its access time written later in a batch
    (:class:`~.disk_reader.RecentRows`). ``get_many`` runs ``readers`` reads side by side. With ``device``
    (``"cuda"``) entries are served there, copied as stored.

    Reads never raise on bad data: a missing, truncated or altered value file, a damaged or planted row,
    or a blob the codec rejects is deleted, counted in ``stats.rejected``, logged, and served as a miss.
    Writes never raise on a bad disk: a read-only or full directory, or SQLite errors, give one
    ``RuntimeWarning`` per store and the store goes on without caching; a directory that cannot be
    opened at all makes a store that only misses. ``put`` raises only for a malformed entry
    (:class:`CacheError`: not 4-D, shapes disagreeing) and for a key that is not a str (``TypeError``): bugs
    in the caller.

    Several processes may share one directory (diskcache serializes writers through SQLite). Each put is
    one ``Cache.set``: the value file is written under a fresh name first and the row that points at it
    commits in one SQLite transaction, so a writer killed at any point leaves the old row or no row, at
    worst with an unreferenced file that :meth:`verify` and :meth:`clear` remove later.

    Eviction removes least-recently-used entries (``get`` refreshes ``access_time``) after each put until
    ``Cache.volume()`` (database pages plus value files) is at most ``size_limit``, never the entry just
    written; an entry whose blob alone exceeds ``size_limit`` is not stored. diskcache's own cull is off
    (``cull_limit=0``: it would drop ten rows at once), so ``stats.evictions`` counts exactly the rows
    this store removed. ``stats`` counts this instance's calls only; ``bytes`` is the shared volume.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        size_limit: int = 8 * 2**30,
        storage: _codec.Storage = "float32",
        min_file_size: int = 2**15,
        timeout: float = 60.0,
        read_only: bool = False,
        readers: int = 4,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(size_limit, int) or isinstance(size_limit, bool) or size_limit <= 0:
            raise ConfigError(f"size_limit {size_limit!r} must be a positive number of bytes")
        if storage not in get_args(_codec.Storage):
            raise ConfigError(f"storage {storage!r} is unknown; use one of {', '.join(get_args(_codec.Storage))}")
        if not isinstance(readers, int) or isinstance(readers, bool) or readers < 1:
            raise ConfigError(f"readers {readers!r} must be an int >= 1 (threads reading one get_many)")
        if not isinstance(min_file_size, int) or min_file_size < 0:
            raise ConfigError(f"min_file_size {min_file_size!r} must be a number of bytes >= 0")
        self.directory = os.fspath(directory)
        if not self.directory.strip():
            raise ConfigError("the prefix cache directory is an empty string; pass a directory path")
        self.size_limit = size_limit  # bytes of database pages plus value files
        self.storage = storage
        self.read_only = read_only
        self._timeout = timeout
        self.readers = readers  # threads that read and decode the entries of one get_many side by side
        try:  # where read entries are served; int8 ones are dequantized there, not on the host
            self.device = None if device is None else torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ConfigError(f"device {device!r} is not a torch device: {error}") from error
        self._pool: ThreadPoolExecutor | None = None
        self._min_file_size = min_file_size
        self._stats = StoreStats()
        self._lock = threading.Lock()
        self._reopen_lock = threading.Lock()
        self._warned = False
        self._warned_unstorable = False
        self._reader: ReadOnlyReader | None = None
        self._recent = RecentRows()
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the directory this store opened
        database = os.path.join(self.directory, DATABASE)
        if os.path.exists(database) and not is_prefix_store(self.directory):
            raise CacheError(
                f"{self.directory!r} holds a cache.db that is not marked as a minirerank prefix store "
                f"(no {MARKER_FILE}); it may be another application's data. Pass an empty or new directory "
                "(a store from an older minirerank version can be deleted and rebuilt)"
            )
        self._cache: diskcache.Cache | None = None
        if read_only:
            self._open_reader(None)
        else:
            self._open()

    def _open(self) -> None:
        """Open (creating and marking when new) the diskcache; fall back to read-only if it cannot be written."""
        try:
            if not os.path.exists(os.path.join(self.directory, DATABASE)):
                os.makedirs(self.directory, exist_ok=True)
                write_marker(self.directory)  # before cache.db exists, so a cache.db always has its mark
            self._cache = diskcache.Cache(
                self.directory,
                timeout=self._timeout,  # seconds to wait for another process's lock before giving up
                disk=BytesOnlyDisk,
                size_limit=self.size_limit,
                eviction_policy="least-recently-used",  # get() refreshes access_time inside a transaction
                cull_limit=0,  # diskcache's cull would drop ten rows at once; evict_least_recent drops one at a time
                statistics=0,  # hits and misses live in StoreStats, per instance
                disk_min_file_size=self._min_file_size,  # bytes; smaller blobs stay in the SQLite row
            )
            self._cache.disk.max_value_bytes = self.size_limit  # no entry this store keeps is larger
            self._cache.disk.pinned = self.device is not None and self.device.type == "cuda"
        except (OSError, sqlite3.Error, diskcache.Timeout) as error:
            self._cache = None
            if os.path.exists(os.path.join(self.directory, DATABASE)):
                self._open_reader(error)
            else:
                self._warn_once(error, what="cannot be opened", stacklevel=4)
        else:
            self._identity = directory_identity(self.directory)
            self._refresh_bytes()

    def _open_reader(self, error: BaseException | None) -> None:
        """Serve what the directory holds through a read-only connection; nothing is written."""
        try:
            self._reader = ReadOnlyReader(self.directory, self._timeout)
        except (OSError, sqlite3.Error) as reader_error:
            self._warn_once(reader_error, what="cannot be opened", stacklevel=5)
            return
        self._identity = directory_identity(self.directory)
        if error is not None:
            self._warn_once(error, what="cannot be written, so it is read only", stacklevel=5)

    # -- PrefixStore ---------------------------------------------------------------------------------

    @property
    def stats(self) -> StoreStats:  # type: ignore[override]
        """This instance's counters; ``bytes`` is re-read from the shared cache on each access."""
        self._refresh_bytes()
        return self._stats

    @property
    def available(self) -> bool:
        """False when the directory could not be opened and the store only misses."""
        return self._cache is not None or self._reader is not None

    @property
    def writable(self) -> bool:
        """False when the store only serves what it holds (read only, read-only mount, unwritable database)."""
        return self._cache is not None

    def get(self, key: str) -> PrefixEntry | None:
        self._check_directory()
        cache = self._cache
        if cache is None:
            return self._read_only_get(key)
        name = _codec.row_key(key, self.storage)
        entry = self._recent.read(
            cache, name, partial(_codec.decode_entry, key=name, storage=self.storage, device=self.device)
        )
        if entry is not None:
            with self._lock:
                self._stats.hits += 1
            return entry
        try:
            row = touch_row(cache, name)
        except (OSError, sqlite3.Error, diskcache.Timeout) as error:
            # A full disk or a mount turned read-only fails the access-time update: read the row without it.
            logger.warning("prefix cache %s: reading %s failed (%s); reading it read-only", self.directory, key, error)
            cache.close()
            return self._read_only_get(key)
        if row is None:
            return self._miss()
        disk: BytesOnlyDisk = cache.disk
        try:
            # Outside the transaction, so that reader threads read files side by side. A value file is never
            # rewritten in place (a put writes a fresh file, then commits its row), so what opens is whole.
            data = disk.fetch(*row, False)
        except VanishedValue as error:
            if row_names(cache, name, row[1]):
                self._reject(name, error)  # the row still points at it: the file was lost
                return None
            return self._miss()  # replaced or evicted by another writer since the row was read
        except RefusedValue as error:
            self._reject(name, error)
            return None
        entry = self._decoded(name, data)
        if entry is not None:
            self._recent.remember(name, row)
        return entry

    def get_many(self, keys: Sequence[str]) -> list[PrefixEntry | None]:
        """The entries for ``keys``, in order, read by up to ``readers`` threads at once (files and decoding
        run side by side; SQLite serializes only the short access-time updates)."""
        keys = list(keys)
        if len(keys) < 2 or self.readers < 2:
            return [self.get(key) for key in keys]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.readers, thread_name_prefix="minirerank-disk-read")
            pool = self._pool
        return list(pool.map(self.get, keys))

    def _decoded(self, name: str, data: bytes | bytearray | memoryview) -> PrefixEntry | None:
        try:
            entry = _codec.decode_entry(data, key=name, storage=self.storage, device=self.device)
        except CacheError as error:
            # Decoding runs outside the lock. A concurrent put of the same key may be deleted with the bad
            # row; keys are content digests, so that only costs one recomputation.
            self._reject(name, error)
            return None
        with self._lock:
            self._stats.hits += 1
        return entry

    def put(self, key: str, entry: PrefixEntry) -> None:
        if type(key) is not str:
            raise TypeError(f"prefix store keys are str digests, got {type(key).__name__}")
        name = _codec.row_key(key, self.storage)
        try:
            data = _codec.encode_entry(entry, key=name, storage=self.storage)
        except _codec.UnstorableEntry as error:  # NaN or inf, or values this storage cannot hold: not stored
            self._unstorable(key, error)
            return
        self._check_directory()
        cache = self._cache
        if cache is None:
            what = "is read only" if self._reader is not None else "cannot be opened"
            self._write_failed(None, what=what)
            return
        if len(data) > self.size_limit:
            logger.warning(
                "prefix cache %s: entry %s is %d bytes, more than size_limit %d; not stored",
                self.directory,
                key,
                len(data),
                self.size_limit,
            )
            return
        disk: BytesOnlyDisk = cache.disk
        disk.take_stored()
        try:
            cache.set(name, data)  # one transaction: the old row or the new one, never half of either
        except (OSError, sqlite3.Error, diskcache.Timeout) as error:
            for filename in disk.take_stored():
                disk.remove(filename)  # its row never committed
            cache.close()  # a failed COMMIT can leave this thread's connection inside a transaction
            self._write_failed(error, what="cannot be written")
            return
        disk.take_stored()
        with self._lock:
            self._stats.writes += 1
            self._stats.bytes_written += len(data)
        self._recent.flush(cache)  # eviction goes by access time
        try:
            evicted = evict_least_recent(cache, self.size_limit, keep=name)
        except (OSError, sqlite3.Error, diskcache.Timeout) as error:
            cache.close()
            self._write_failed(error, what="cannot evict old entries")
            return
        with self._lock:
            self._stats.evictions += evicted

    def __contains__(self, key: object) -> bool:
        """Whether a row exists for ``key`` in this store's precision; cheap, so the value is not read or checked."""
        cache = self._cache
        if type(key) is not str:
            return False
        name = _codec.row_key(key, self.storage)
        if cache is None:
            return self._reader is not None and self._reader.row(name) is not None
        try:
            return name in cache
        except (OSError, sqlite3.Error, diskcache.Timeout):
            return False

    def __len__(self) -> int:
        """Rows in the shared cache, unchecked."""
        cache = self._cache
        if cache is None:
            return self._reader.count() if self._reader is not None else 0
        try:
            return len(cache)
        except (OSError, sqlite3.Error, diskcache.Timeout):
            return 0

    def close(self) -> None:
        """Close this thread's SQLite connection and the reader threads; a later call reopens them, as diskcache does."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._cache is not None:
            self._recent.flush(self._cache)
            self._cache.close()
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> DiskPrefixStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DiskPrefixStore({self.directory!r}, size_limit={self.size_limit}, storage={self.storage!r})"

    # -- maintenance ---------------------------------------------------------------------------------

    def verify(self) -> tuple[int, int]:
        """Read and decode every entry, delete the unreadable ones: ``(ok, dropped)``.

        Each row is checked inside its own transaction (header, checksum and tensors, via the codec) and
        does not count as a use for eviction. Value files no row points at, left by writers that died
        more than 15 minutes ago, are removed too. SQLite and file-system errors are raised.
        """
        cache = self._cache
        if cache is None:
            if self._reader is not None:
                raise CacheError(f"prefix cache {self.directory!r} is read only; verify needs to write")
            return 0, 0
        ok, dropped = verify_rows(cache, self.directory)
        with self._lock:
            self._stats.rejected += dropped
        remove_orphan_files(cache, self.directory)
        return ok, dropped

    def clear(self) -> int:
        """Remove every entry (and old unreferenced value files); returns how many entries there were."""
        cache = self._cache
        if cache is None:
            if self._reader is not None:
                raise CacheError(f"prefix cache {self.directory!r} is read only; clear needs to write")
            return 0
        self._recent.forget()
        count = cache.clear(retry=True)  # batches of 100 rows; their files go through BytesOnlyDisk.remove
        remove_orphan_files(cache, self.directory)
        return int(count)

    # -- internals -----------------------------------------------------------------------------------

    def _miss(self) -> PrefixEntry | None:
        """Counts a miss; returns None, what a miss serves."""
        with self._lock:
            self._stats.misses += 1
        return None

    def _read_only_get(self, key: str) -> PrefixEntry | None:
        reader = self._reader
        if reader is None:
            try:
                reader = self._reader = ReadOnlyReader(self.directory, self._timeout)
            except (OSError, sqlite3.Error):
                return self._miss()
        name = _codec.row_key(key, self.storage)
        try:
            row = reader.row(name)
            if row is None:
                return self._miss()
            data = reader.disk.fetch(*row, False)
        except RefusedValue as error:
            self._reject(name, error)
            return None
        except (OSError, sqlite3.Error) as error:
            logger.warning("prefix cache %s: reading %s failed (%s); counted as a miss", self.directory, key, error)
            return self._miss()
        return self._decoded(name, data)

    def _unstorable(self, key: str, error: BaseException) -> None:
        with self._lock:
            self._stats.unstorable += 1
            first, self._warned_unstorable = not self._warned_unstorable, True
        if first:
            warnings.warn(
                f"prefix cache {self.directory!r}: entry {key} cannot be stored as {self.storage} ({error}); it is "
                "served but not stored, and further such entries are not warned about",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            logger.debug("prefix cache %s: entry %s not stored: %s", self.directory, key, error)

    def _check_directory(self) -> None:
        """Recreate the store when its directory was deleted (or replaced) since it was opened."""
        if self._identity is None or self.read_only:
            return
        if directory_identity(self.directory) == self._identity and os.path.exists(
            os.path.join(self.directory, DATABASE)
        ):
            return
        with self._reopen_lock:  # not self._lock: opening takes that one to refresh the counters
            if directory_identity(self.directory) == self._identity and os.path.exists(
                os.path.join(self.directory, DATABASE)
            ):
                return
            old, self._cache, self._identity = self._cache, None, None
            self._recent.forget()
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            warnings.warn(
                f"prefix cache directory {self.directory!r} was removed or replaced while in use; "
                "opening it afresh (its former entries are gone)",
                RuntimeWarning,
                stacklevel=4,
            )
            if old is not None:
                old.close()
            if os.path.exists(os.path.join(self.directory, DATABASE)) and not is_prefix_store(self.directory):
                logger.warning("prefix cache %s: the new directory is not a prefix store; not using it", self.directory)
                return
            self._open()

    def _reject(self, key: str, reason: BaseException) -> None:
        self._recent.forget(key)
        with self._lock:
            self._stats.rejected += 1
            self._stats.misses += 1
        logger.warning("prefix cache %s: dropping unreadable entry %s: %s", self.directory, key, reason)
        if self._cache is None:
            return  # read only: the entry is skipped, not deleted
        try:
            self._cache.delete(key, retry=True)
        except (OSError, sqlite3.Error) as error:
            logger.warning("prefix cache %s: could not delete entry %s: %s", self.directory, key, error)

    def _write_failed(self, error: BaseException | None, *, what: str) -> None:
        with self._lock:
            self._stats.write_failures += 1
        self._warn_once(error, what=what, stacklevel=4)

    def _warn_once(self, error: BaseException | None, *, what: str, stacklevel: int) -> None:
        with self._lock:
            first, self._warned = not self._warned, True
        if first:
            warnings.warn(
                f"prefix cache directory {self.directory!r} {what} ({error}); reranking goes on without "
                "caching those prefixes, and further failures of this store are not warned about. "
                "Check the directory's permissions and free space, or pass another cache directory; a damaged "
                "cache.db is repaired by deleting the directory (its prefixes are recomputed on demand).",
                RuntimeWarning,
                stacklevel=stacklevel,  # the caller of the store method
            )
        else:
            logger.debug("prefix cache %s %s: %s", self.directory, what, error)

    def _refresh_bytes(self) -> None:
        if self._cache is None and self._reader is None:
            return
        try:
            volume = self._cache.volume() if self._cache is not None else self._reader.volume()  # type: ignore[union-attr]
        except (OSError, sqlite3.Error):
            return
        with self._lock:
            self._stats.bytes = int(volume)
