"""Maintenance of a prefix store directory: least-recently-used eviction, checking every row, and removing
value files that no row names. Each runs on diskcache's own connection, inside its transactions."""

from __future__ import annotations

import logging
import os
import time

import diskcache

from ..errors import CacheError
from . import codec as _codec
from .bytes_disk import BytesOnlyDisk
from .disk_layout import ORPHAN_MIN_AGE_S, hex_dirs
from .disk_reader import sql as _sql

__all__ = ["evict_least_recent", "remove_orphan_files", "verify_row", "verify_rows"]

logger = logging.getLogger(__name__)


def evict_least_recent(cache: diskcache.Cache, size_limit: int, keep: str) -> int:
    """Remove least-recently-used rows, never ``keep``, until the volume is within ``size_limit`` bytes;
    returns how many rows were removed."""
    sql = _sql(cache)
    evicted: list[str | None] = []
    with cache.transact():
        over = cache.volume() - size_limit  # bytes
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


def verify_row(cache: diskcache.Cache, rowid: int) -> tuple[bool | None, str, CacheError | None]:
    """``(verdict, key, reason)`` for one row: True if it decodes, False if it was dropped (row and value
    file, for ``reason``), None if it vanished meanwhile. Checked inside its own transaction; not a use for
    eviction."""
    disk: BytesOnlyDisk = cache.disk
    sql = _sql(cache)
    with cache.transact(retry=True):
        rows = sql("SELECT key, raw, mode, filename, value FROM Cache WHERE rowid = ?", (rowid,)).fetchall()
        if not rows:
            return None, "", None
        ((key, raw, mode, filename, value),) = rows
        shown = key if isinstance(key, str) else f"<{type(key).__name__} key>"
        try:
            disk.get(key, raw)
            # Any storage: verify checks integrity and the key binding, not which precision a reader wants.
            _codec.decode_entry(disk.fetch(mode, filename, value, False), key=key)
            return True, shown, None
        except CacheError as error:
            sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
            reason = error
    disk.remove(filename)
    return False, shown, reason


def verify_rows(cache: diskcache.Cache, directory: str) -> tuple[int, int]:
    """:func:`verify_row` for every row, 100 rowids at a time: ``(ok, dropped)``; each drop is logged."""
    ok = dropped = 0
    last_rowid = 0
    while True:
        batch = _sql(cache)(
            "SELECT rowid FROM Cache WHERE rowid > ? ORDER BY rowid LIMIT 100", (last_rowid,)
        ).fetchall()
        if not batch:
            return ok, dropped
        for (rowid,) in batch:
            last_rowid = rowid
            verdict, key, reason = verify_row(cache, rowid)
            ok += verdict is True
            dropped += verdict is False
            if verdict is False:
                logger.warning("prefix cache %s: dropping unreadable entry %s: %s", directory, key, reason)


def remove_orphan_files(cache: diskcache.Cache, directory: str) -> int:
    """Remove value files that no row names and that are older than any live writer's; returns how many."""
    disk: BytesOnlyDisk = cache.disk
    rows = _sql(cache)("SELECT filename FROM Cache WHERE filename IS NOT NULL").fetchall()
    referenced = {filename.replace(os.sep, "/") for (filename,) in rows if isinstance(filename, str)}
    cutoff = time.time() - ORPHAN_MIN_AGE_S
    removed = 0
    for top in hex_dirs(directory):
        for middle in hex_dirs(top.path):
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
        logger.warning("prefix cache %s: removed %d unreferenced value files", directory, removed)
    return removed
