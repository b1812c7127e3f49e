"""Reading a prefix store directory without writing it: rows through read-only SQLite connections, and
diskcache's own connection for the statements diskcache has no call for."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any
from urllib.parse import quote

import diskcache

from .bytes_disk import BytesOnlyDisk
from .disk_layout import DATABASE

__all__ = ["ReadOnlyReader", "row_names", "sql", "touch_row"]


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
