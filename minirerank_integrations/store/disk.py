"""The on-disk prefix store: codec bytes in a ``diskcache.Cache`` directory.

It follows diskcache's own split: :mod:`.codec` turns entries into bytes and back (header, checksum,
tensors), :class:`DiskPrefixStore` maps keys to those bytes in a ``diskcache.Cache`` (transactions,
eviction, statistics) and :class:`BytesOnlyDisk` makes sure only bytes cross into it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sqlite3
import stat
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, get_args
from urllib.parse import quote

import diskcache
import torch
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

from ..errors import CacheError, ConfigError
from . import codec as _codec
from .entry import PrefixEntry, PrefixStore, StoreStats

logger = logging.getLogger(__name__)

# The names diskcache.Disk.filename gives value files: two levels of two hex digits, then 28 hex digits.
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
_HEX_DIR = re.compile(r"[0-9a-f]{2}")
_READ_BUFFER_BYTES = 256 * 2**20  # host read buffers a store keeps warm for reuse (see _ReadBuffers)
_ORPHAN_MIN_AGE_S = 15 * 60  # seconds; a writer commits its row within `timeout` of writing the value file
#: The file that marks a directory as a minirerank prefix store; written before ``cache.db`` is created.
MARKER_FILE = "minirerank-prefix-store.json"
_MARKER = {"kind": "minirerank-prefix-store", "version": 1}
_DATABASE = "cache.db"  # diskcache's database file name


def is_prefix_store(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` carries the mark a :class:`DiskPrefixStore` writes when it creates a store."""
    try:
        with open(os.path.join(os.fspath(directory), MARKER_FILE), encoding="utf-8") as handle:
            marker = json.loads(handle.read(4096))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("kind") == _MARKER["kind"]


def _write_marker(directory: str) -> None:
    """Mark ``directory`` (atomically: a reader sees the whole file or none)."""
    temporary = os.path.join(directory, f".{MARKER_FILE}.{os.getpid()}.{threading.get_ident()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(_MARKER, handle)
    os.replace(temporary, os.path.join(directory, MARKER_FILE))


class _RefusedValue(CacheError):
    """A row the store will not serve: not bytes, not a value file diskcache made, or a pickle."""


class _VanishedValue(_RefusedValue):
    """The value file a row named is gone: damage, unless a concurrent writer replaced or evicted the row."""


class BytesOnlyDisk(diskcache.Disk):
    """A ``diskcache.Disk`` that moves bytes values under str keys, and nothing else.

    The stock Disk pickles every value that is not bytes, str, int or float when storing, and unpickles
    rows whose mode is ``MODE_PICKLE`` (and keys whose ``raw`` is 0, when iterating) when reading. A
    cache directory is data that any process able to write it can change, and unpickling a planted row
    runs whatever code it names. So this Disk stores only bytes (small ones in the row, ``MODE_RAW``,
    the rest in value files, ``MODE_BINARY``) and its ``fetch`` refuses every other row with
    :class:`CacheError` instead of decoding it: text, pickles, unknown modes, non-bytes ``MODE_RAW``
    values, and file names diskcache would not have made (``../`` or absolute paths).
    """

    #: Bytes; a value file larger than this is damage (a store sets its size_limit: no entry it keeps is larger).
    max_value_bytes: int = 2**40
    #: Read value files into page-locked memory (a store serving a CUDA device sets it): torch's caching host
    #: allocator hands back warm blocks (no page faults per read) and the copy to the GPU runs asynchronously.
    pinned: bool = False

    def __init__(self, directory: str, min_file_size: int = 2**15, pickle_protocol: int = 0, **_: Any) -> None:
        # Extra ``disk_*`` settings read from the database are ignored rather than failing the open.
        super().__init__(directory, min_file_size=min_file_size, pickle_protocol=pickle_protocol)
        self._buffers = _ReadBuffers(_READ_BUFFER_BYTES)
        self._local = threading.local()  # value files this thread stored since the last take_stored()

    def put(self, key: Any) -> tuple[str, bool]:
        if type(key) is not str:
            raise TypeError(f"prefix store keys are str digests, got {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> str:
        if not raw or type(key) is not str:
            raise _RefusedValue("row key is not a text key (pickled keys are never loaded)")
        return key

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, str | None, Any]:
        if type(value) is not bytes or read:
            raise TypeError(f"the prefix store keeps bytes from the codec only, got {type(value).__name__}")
        if len(value) < self.min_file_size:
            return 0, MODE_RAW, None, sqlite3.Binary(value)
        filename, full_path = self.filename(key, value)
        try:
            self._write(full_path, io.BytesIO(value), "xb")
        except BaseException:
            self.remove(filename)  # a partial file (full disk) would otherwise stay behind, unreferenced
            raise
        self._stored().append(filename)
        return len(value), MODE_BINARY, filename, None

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> bytes | memoryview:
        if read:
            raise _RefusedValue("file handles are not served; values are read whole")
        if mode == MODE_RAW:
            if not isinstance(value, (bytes, memoryview)):
                raise _RefusedValue(f"row holds a {type(value).__name__}, not bytes")
            return bytes(value)
        if mode == MODE_BINARY:
            return self._read_value_file(filename)
        raise _RefusedValue(f"row has mode {mode!r}; only raw bytes and value files are read, never pickles")

    def remove(self, file_path: str | None) -> None:
        if file_path is None:
            return
        if not self.is_value_file(file_path):
            logger.warning("not removing %r: not a value file name of %s", file_path, self._directory)
            return
        super().remove(file_path)

    def is_value_file(self, filename: object) -> bool:
        """Whether ``filename`` is a name diskcache gives value files, relative to the cache directory."""
        return isinstance(filename, str) and _VALUE_FILE.fullmatch(filename.replace(os.sep, "/")) is not None

    def take_stored(self) -> list[str]:
        """The value files this thread stored since the last call (removed when their row did not commit)."""
        stored = self._stored()
        taken = list(stored)
        stored.clear()
        return taken

    def _stored(self) -> list[str]:
        stored = getattr(self._local, "stored", None)
        if stored is None:
            stored = self._local.stored = []
        return stored

    def _read_value_file(self, filename: str | None) -> memoryview:
        """The whole value file, read once into one buffer that the codec then decodes in place."""
        if not self.is_value_file(filename):
            raise _RefusedValue(f"row names value file {filename!r}, not one this cache would have written")
        assert filename is not None
        path = os.path.join(self._directory, filename)
        # O_NOFOLLOW and O_NONBLOCK: a planted symlink (to /dev/zero, say) or FIFO must not hang the read.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            descriptor = os.open(path, flags)
        except FileNotFoundError as error:
            raise _VanishedValue(f"value file {filename} is missing: {error}") from error
        except OSError as error:
            raise _RefusedValue(f"value file {filename} cannot be opened: {error}") from error
        with open(descriptor, "rb", buffering=0) as reader:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise _RefusedValue(f"value file {filename} is not a regular file")
            if info.st_size > self.max_value_bytes:
                raise _RefusedValue(f"value file {filename} is {info.st_size} bytes, over {self.max_value_bytes}")
            buffer = self._buffer(info.st_size)
            filled = 0
            try:
                while filled < info.st_size:
                    count = reader.readinto(buffer[filled:])
                    if not count:
                        raise _RefusedValue(
                            f"value file {filename} shrank while read: {filled} of {info.st_size} bytes"
                        )
                    filled += count
                if reader.read(1):  # value files are written once under a fresh name: one that grows is not ours
                    raise _RefusedValue(f"value file {filename} grew while read, past {info.st_size} bytes")
            except OSError as error:
                raise _RefusedValue(f"value file {filename} cannot be read: {error}") from error
            return buffer

    def _buffer(self, size: int) -> memoryview:
        """``size`` writable bytes that a value file is read into and its entry's tensors then view."""
        if self.pinned:
            return memoryview(torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy())  # keeps the tensor
        return self._buffers.take(size)


class _ReadBuffers:
    """Host buffers that value files are read into, reused once no decoded entry views them any more.

    A fresh buffer costs a page fault per 4 KiB page (about 4500 for an 18 MB entry, which the kernel maps and
    zeroes): measured here at 3 to 5 times the read itself, while a warm buffer costs none. A buffer is free
    when this pool holds the only reference: ``torch.frombuffer`` keeps the buffer alive through the
    memoryview it was given, so while an entry's tensors (or any view of them) live, its buffer is not handed
    out again. At most ``max_bytes`` of buffers are kept; reads beyond that get fresh ones.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffers: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> memoryview:
        """``size`` writable bytes, warm when a kept buffer is free."""
        count = getattr(sys, "getrefcount", None)  # CPython; elsewhere every read gets a fresh buffer
        with self._lock:
            free_slot = None
            for slot in range(len(self._buffers)):
                # 2: this list's reference and getrefcount's argument; any more and an entry still views it.
                if count is None or count(self._buffers[slot]) != 2:
                    continue
                if len(self._buffers[slot]) >= size:
                    return memoryview(self._buffers[slot])[:size]  # taken before the lock is released
                free_slot = slot if free_slot is None else free_slot
            buffer = bytearray(size)
            kept = sum(len(kept) for kept in self._buffers)
            if free_slot is not None and kept - len(self._buffers[free_slot]) + size <= self.max_bytes:
                self._buffers[free_slot] = buffer  # a free buffer too small for this read makes room
            elif count is not None and kept + size <= self.max_bytes:
                self._buffers.append(buffer)
            return memoryview(buffer)


def _sql(cache: diskcache.Cache) -> Any:
    """The cache's SQLite ``execute`` for this thread.

    diskcache has no public call to read one row by rowid or to remove a single least-recently-used row;
    these statements run on its own connection, inside ``cache.transact()`` where they change anything.
    """
    return cache._sql


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

    A read takes the row (and refreshes its access time) in one short transaction, then reads the value file
    once into one buffer outside it, which the codec decodes in place: ``get_many`` runs ``readers`` such
    reads side by side. With ``device`` (``"cuda"``) entries are served on it, copied there as stored (int8
    codes and scales) and cast or dequantized there.

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
        self._reader: _ReadOnlyReader | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the directory this store opened
        database = os.path.join(self.directory, _DATABASE)
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
            if not os.path.exists(os.path.join(self.directory, _DATABASE)):
                os.makedirs(self.directory, exist_ok=True)
                _write_marker(self.directory)  # before cache.db exists, so a cache.db always has its mark
            self._cache = diskcache.Cache(
                self.directory,
                timeout=self._timeout,  # seconds to wait for another process's lock before giving up
                disk=BytesOnlyDisk,
                size_limit=self.size_limit,
                eviction_policy="least-recently-used",  # get() refreshes access_time inside a transaction
                cull_limit=0,  # diskcache's cull would drop ten rows at once; _evict drops one at a time
                statistics=0,  # hits and misses live in StoreStats, per instance
                disk_min_file_size=self._min_file_size,  # bytes; smaller blobs stay in the SQLite row
            )
            self._cache.disk.max_value_bytes = self.size_limit  # no entry this store keeps is larger
            self._cache.disk.pinned = self.device is not None and self.device.type == "cuda"
        except (OSError, sqlite3.Error, diskcache.Timeout) as error:
            self._cache = None
            if os.path.exists(os.path.join(self.directory, _DATABASE)):
                self._open_reader(error)
            else:
                self._warn_once(error, what="cannot be opened", stacklevel=4)
        else:
            self._identity = _identity(self.directory)
            self._refresh_bytes()

    def _open_reader(self, error: BaseException | None) -> None:
        """Serve what the directory holds through a read-only connection; nothing is written."""
        try:
            self._reader = _ReadOnlyReader(self.directory, self._timeout)
        except (OSError, sqlite3.Error) as reader_error:
            self._warn_once(reader_error, what="cannot be opened", stacklevel=5)
            return
        self._identity = _identity(self.directory)
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
        try:
            row = self._touch(cache, name)
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
        except _VanishedValue as error:
            if self._row_names(cache, name, row[1]):
                self._reject(name, error)  # the row still points at it: the file was lost
                return None
            return self._miss()  # replaced or evicted by another writer since the row was read
        except _RefusedValue as error:
            self._reject(name, error)
            return None
        return self._decoded(name, data)

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

    def _touch(self, cache: diskcache.Cache, name: str) -> tuple[int, str | None, Any] | None:
        """``(mode, filename, value)`` of the live row ``name``, its access time refreshed (LRU), or None."""
        sql = _sql(cache)
        now = time.time()
        with cache.transact():
            rows = sql(
                "SELECT rowid, mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (name, now),
            ).fetchall()
            if not rows:
                return None
            ((rowid, mode, filename, value),) = rows
            sql("UPDATE Cache SET access_time = ? WHERE rowid = ?", (now, rowid))
        return mode, filename, value

    def _row_names(self, cache: diskcache.Cache, name: str, filename: str | None) -> bool:
        """Whether row ``name`` still names value file ``filename``."""
        try:
            rows = _sql(cache)("SELECT filename FROM Cache WHERE key = ? AND raw = 1", (name,)).fetchall()
        except (OSError, sqlite3.Error):
            return False
        return bool(rows) and rows[0][0] == filename

    def _decoded(self, name: str, data: bytes | bytearray) -> PrefixEntry | None:
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
        try:
            evicted = self._evict(cache, keep=name)
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
        ok = dropped = 0
        last_rowid = 0
        while True:
            batch = _sql(cache)(
                "SELECT rowid FROM Cache WHERE rowid > ? ORDER BY rowid LIMIT 100", (last_rowid,)
            ).fetchall()
            if not batch:
                break
            for (rowid,) in batch:
                last_rowid = rowid
                verdict = self._verify_row(cache, rowid)
                ok += verdict is True
                dropped += verdict is False
        self._remove_orphan_files(cache)
        return ok, dropped

    def clear(self) -> int:
        """Remove every entry (and old unreferenced value files); returns how many entries there were."""
        cache = self._cache
        if cache is None:
            if self._reader is not None:
                raise CacheError(f"prefix cache {self.directory!r} is read only; clear needs to write")
            return 0
        count = cache.clear(retry=True)  # batches of 100 rows; their files go through BytesOnlyDisk.remove
        self._remove_orphan_files(cache)
        return int(count)

    # -- internals -----------------------------------------------------------------------------------

    def _miss(self) -> None:
        with self._lock:
            self._stats.misses += 1
        return None

    def _read_only_get(self, key: str) -> PrefixEntry | None:
        reader = self._reader
        if reader is None:
            try:
                reader = self._reader = _ReadOnlyReader(self.directory, self._timeout)
            except (OSError, sqlite3.Error):
                return self._miss()
        name = _codec.row_key(key, self.storage)
        try:
            row = reader.row(name)
            if row is None:
                return self._miss()
            data = reader.disk.fetch(*row, False)
        except _RefusedValue as error:
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
        if _identity(self.directory) == self._identity and os.path.exists(os.path.join(self.directory, _DATABASE)):
            return
        with self._reopen_lock:  # not self._lock: opening takes that one to refresh the counters
            if _identity(self.directory) == self._identity and os.path.exists(os.path.join(self.directory, _DATABASE)):
                return
            old, self._cache, self._identity = self._cache, None, None
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
            if os.path.exists(os.path.join(self.directory, _DATABASE)) and not is_prefix_store(self.directory):
                logger.warning("prefix cache %s: the new directory is not a prefix store; not using it", self.directory)
                return
            self._open()

    def _reject(self, key: str, reason: BaseException) -> None:
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

    def _evict(self, cache: diskcache.Cache, keep: str) -> int:
        """Remove least-recently-used rows, never ``keep``, until the volume is within size_limit."""
        sql = _sql(cache)
        evicted: list[str | None] = []
        with cache.transact():
            over = cache.volume() - self.size_limit  # bytes
            while over > 0:
                # Rows held in the database free their pages only at commit, so count their value length.
                rows = sql(
                    "SELECT rowid, filename, size + COALESCE(length(value), 0) FROM Cache"
                    " WHERE NOT (key = ? AND raw = 1) ORDER BY access_time LIMIT 16",
                    (keep,),
                ).fetchall()
                if not rows:
                    break
                for rowid, filename, nbytes in rows:
                    sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
                    evicted.append(filename)
                    over -= int(nbytes or 0)
                    if over <= 0:
                        break
        for filename in evicted:  # after the commit, as diskcache does: a rollback keeps its files
            cache.disk.remove(filename)
        return len(evicted)

    def _verify_row(self, cache: diskcache.Cache, rowid: int) -> bool | None:
        """True if the row decodes, False if it was dropped, None if it vanished meanwhile."""
        disk: BytesOnlyDisk = cache.disk
        sql = _sql(cache)
        with cache.transact(retry=True):
            rows = sql("SELECT key, raw, mode, filename, value FROM Cache WHERE rowid = ?", (rowid,)).fetchall()
            if not rows:
                return None
            ((key, raw, mode, filename, value),) = rows
            try:
                disk.get(key, raw)
                # Any storage: verify checks integrity and the key binding, not which precision a reader wants.
                _codec.decode_entry(disk.fetch(mode, filename, value, False), key=key)
                return True
            except CacheError as error:
                sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
                reason = error
        disk.remove(filename)
        with self._lock:
            self._stats.rejected += 1
        shown = key if isinstance(key, str) else f"<{type(key).__name__} key>"
        logger.warning("prefix cache %s: dropping unreadable entry %s: %s", self.directory, shown, reason)
        return False

    def _remove_orphan_files(self, cache: diskcache.Cache) -> int:
        """Remove value files that no row names and that are older than any live writer's."""
        disk: BytesOnlyDisk = cache.disk
        rows = _sql(cache)("SELECT filename FROM Cache WHERE filename IS NOT NULL").fetchall()
        referenced = {filename.replace(os.sep, "/") for (filename,) in rows if isinstance(filename, str)}
        cutoff = time.time() - _ORPHAN_MIN_AGE_S
        removed = 0
        for top in _hex_dirs(self.directory):
            for middle in _hex_dirs(top.path):
                with os.scandir(middle.path) as files:
                    for file in files:
                        name = f"{top.name}/{middle.name}/{file.name}"
                        if name in referenced or not disk.is_value_file(name):
                            continue
                        if file.stat(follow_symlinks=False).st_mtime > cutoff:
                            continue  # possibly a writer between its file and its row
                        disk.remove(os.path.join(top.name, middle.name, file.name))
                        removed += 1
        if removed:
            logger.warning("prefix cache %s: removed %d unreferenced value files", self.directory, removed)
        return removed


class _ReadOnlyReader:
    """Rows of a diskcache database read through read-only SQLite connections (one per thread)."""

    def __init__(self, directory: str, timeout: float) -> None:
        self.directory = directory
        self.timeout = timeout
        self.disk = BytesOnlyDisk(directory)
        self._local = threading.local()
        self._connection()  # fail now, not at the first read

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        path = quote(os.path.abspath(os.path.join(self.directory, _DATABASE)))
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.timeout)
            connection.execute("SELECT count(*) FROM Cache").fetchall()
        except sqlite3.OperationalError:
            # A WAL database in a read-only directory without its -shm file opens only as immutable.
            connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=self.timeout)
            connection.execute("SELECT count(*) FROM Cache").fetchall()
        self._local.connection = connection
        return connection

    def row(self, key: str) -> tuple[int, str | None, Any] | None:
        """``(mode, filename, value)`` of the live row for ``key``, or None."""
        rows = (
            self._connection()
            .execute(
                "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (key, time.time()),
            )
            .fetchall()
        )
        return rows[0] if rows else None

    def count(self) -> int:
        try:
            ((count,),) = self._connection().execute("SELECT count(*) FROM Cache").fetchall()
        except sqlite3.Error:
            return 0
        return int(count)

    def volume(self) -> int:
        """Database pages plus value files, as ``diskcache.Cache.volume``."""
        connection = self._connection()
        ((pages,),) = connection.execute("PRAGMA page_count").fetchall()
        ((page_size,),) = connection.execute("PRAGMA page_size").fetchall()
        ((files,),) = connection.execute("SELECT COALESCE(SUM(size), 0) FROM Cache").fetchall()
        return int(pages) * int(page_size) + int(files)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _identity(directory: str) -> tuple[int, int] | None:
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _hex_dirs(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as entries:
        return [e for e in entries if _HEX_DIR.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
