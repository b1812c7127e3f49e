"""Reading a prefix store directory: rows through read-only SQLite connections, diskcache's own connection for
the statements diskcache has no call for, and the value files of rows read lately (:class:`RecentRows`)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import diskcache
from diskcache.core import MODE_BINARY

from ..errors import CacheError
from .bytes_disk import BytesOnlyDisk
from .disk_layout import DATABASE
from .memo import Memo

__all__ = ["ReadOnlyReader", "RecentRows", "row_names", "sql", "touch_row"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def sql(cache: diskcache.Cache) -> Any:
    """The cache's SQLite ``execute`` for this thread.

    diskcache has no public call to read one row by rowid or to remove a single least-recently-used row;
    these statements run on its own connection, inside ``cache.transact()`` where they change anything.
    """
    return cache._sql


def touch_row(cache: diskcache.Cache, name: str) -> tuple[int, str | None, Any] | None:
    """``(mode, filename, value)`` of the live row ``name``, its access time refreshed (LRU), or None."""
    execute = sql(cache)
    now = time.time()
    with cache.transact():
        rows = execute(
            "SELECT rowid, mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
            " AND (expire_time IS NULL OR expire_time > ?)",
            (name, now),
        ).fetchall()
        if not rows:
            return None
        ((rowid, mode, filename, value),) = rows
        execute("UPDATE Cache SET access_time = ? WHERE rowid = ?", (now, rowid))
    return mode, filename, value


class RecentRows:
    """The value files of rows read lately, so that a warm read skips SQLite, and their access times, written
    back in batches.

    A value file is written once under a fresh name and never changed in place, and a row that is replaced,
    evicted or deleted has its file removed (diskcache, and :mod:`.disk_maintenance`). So while the file a row
    named still opens, it holds the blob that row was written with, and a read through it is checked by the
    codec as any read is (checksum, key, storage); when it is gone or refused, the read goes back to the row.
    This saves a write transaction per warm read (about 15 us, 45-75 us with cold CPU caches, of a 0.2 ms
    memcpy of a 2.9 MB int8 entry at the 2B shape, ``bench/host.py``) and leaves SQLite's lock to writers.

    The access times (least-recently-used eviction) of those reads are written in one transaction once
    :attr:`FLUSH_ROWS` are pending or :attr:`FLUSH_S` seconds have passed, before this store evicts, and at
    close: another process may see a read up to that late.
    """

    FLUSH_ROWS = 64
    FLUSH_S = 1.0  # seconds
    MAX_ROWS = 2**16  # rows remembered (about 200 bytes each), the least recently read going first

    def __init__(self) -> None:
        self._files: Memo[str, str] = Memo(self.MAX_ROWS)  # row name -> value file it named when read
        self._pending: dict[str, float] = {}  # row name -> time of its latest read, not yet written
        self._flushed = time.monotonic()
        self._lock = threading.Lock()

    def remember(self, name: str, row: tuple[int, str | None, Any]) -> None:
        """Keep the value file of row ``name`` (``(mode, filename, value)``, its access time just written)."""
        mode, filename, _ = row
        if mode == MODE_BINARY and isinstance(filename, str):
            self._files.put(name, filename)

    def forget(self, name: str | None = None) -> None:
        """Forget row ``name`` (every row when None): its next read goes to SQLite."""
        if name is not None:
            self._files.pop(name)
            return
        self._files.clear()
        with self._lock:
            self._pending.clear()

    def read(self, cache: diskcache.Cache, name: str, decode: Callable[[memoryview], T]) -> T | None:
        """``decode`` of the value file row ``name`` named when last read, or None: not read lately, or the file
        is gone or refused (replaced, evicted or damaged since), and then the row decides."""
        filename = self._files.get(name)
        if filename is None:
            return None
        try:
            decoded = decode(cache.disk.fetch(MODE_BINARY, filename, None, False))
        except CacheError:
            self.forget(name)
            return None
        with self._lock:
            self._pending[name] = time.time()
            due = len(self._pending) >= self.FLUSH_ROWS or time.monotonic() - self._flushed >= self.FLUSH_S
        if due:
            self.flush(cache)
        return decoded

    def flush(self, cache: diskcache.Cache) -> None:
        """Write the pending access times in one transaction (rows gone meanwhile are skipped). A disk that
        cannot be written loses them: reads go on, and eviction sees these rows as read earlier."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed = time.monotonic()
        if not pending:
            return
        execute = sql(cache)
        try:
            with cache.transact():
                for name, when in pending.items():
                    execute(
                        "UPDATE Cache SET access_time = max(access_time, ?) WHERE key = ? AND raw = 1", (when, name)
                    )
        except (OSError, sqlite3.Error, diskcache.Timeout) as error:
            cache.close()  # a failed COMMIT can leave this thread's connection inside a transaction
            logger.debug("prefix cache %s: %d access times not written: %s", cache.directory, len(pending), error)


def row_names(cache: diskcache.Cache, name: str, filename: str | None) -> bool:
    """Whether row ``name`` still names value file ``filename``."""
    try:
        rows = sql(cache)("SELECT filename FROM Cache WHERE key = ? AND raw = 1", (name,)).fetchall()
    except (OSError, sqlite3.Error):
        return False
    return bool(rows) and rows[0][0] == filename


class ReadOnlyReader:
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
        path = quote(os.path.abspath(os.path.join(self.directory, DATABASE)))
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
