"""Warm reads through the value file a row named (``disk_reader.RecentRows``): no SQLite lock per read, access
times written later in a batch, and a file replaced, evicted or damaged since is never served from memory of it."""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
import torch
from entries import entry_for

from minirerank_integrations.store import DiskPrefixStore, PrefixEntry
from minirerank_integrations.store.disk_reader import RecentRows

MODE_BINARY = 2  # diskcache's row mode for a value file


def same(a: PrefixEntry | None, b: PrefixEntry) -> bool:
    return a is not None and torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def row(directory: Path, key: str) -> tuple[int, str, float]:
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        ((mode, filename, access_time),) = con.execute(
            "SELECT mode, filename, access_time FROM Cache WHERE key = ?", (f"{key}.float32",)
        ).fetchall()
    return mode, filename, access_time


def test_a_warm_read_takes_no_database_lock_and_its_access_time_is_written_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0, timeout=0.05)
    store.put("k", entry_for(1))
    assert same(store.get("k"), entry_for(1))  # the row read once, its access time written
    mode, _, first_access = row(tmp_path, "k")
    assert mode == MODE_BINARY
    time.sleep(0.01)
    with closing(sqlite3.connect(tmp_path / "cache.db", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert same(store.get("k"), entry_for(1))
        other.execute("COMMIT")
    assert "failed" not in caplog.text  # no read needed the lock (a locked touch logs and reads read-only)
    assert store.stats.hits == 4 and store.stats.misses == 0
    assert row(tmp_path, "k")[2] == first_access  # not yet written
    store.close()
    assert row(tmp_path, "k")[2] > first_access  # written at close


def test_a_replaced_value_file_is_read_through_its_new_row(tmp_path: Path) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    store.put("k", entry_for(1))
    assert same(store.get("k"), entry_for(1))
    old_file = row(tmp_path, "k")[1]
    with DiskPrefixStore(tmp_path, min_file_size=0) as other:
        other.put("k", entry_for(1))  # a fresh file, the old one removed
    assert row(tmp_path, "k")[1] != old_file and not (tmp_path / old_file).exists()
    assert same(store.get("k"), entry_for(1))
    assert store.stats.hits == 2 and store.stats.rejected == 0


def test_an_evicted_or_cleared_entry_is_a_miss(tmp_path: Path) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    store.put("k", entry_for(1))
    assert same(store.get("k"), entry_for(1))
    with DiskPrefixStore(tmp_path, min_file_size=0) as other:
        other.clear()
    assert store.get("k") is None
    assert store.stats.misses == 1 and store.stats.rejected == 0


def test_a_value_file_damaged_after_a_warm_read_is_refused_and_dropped(tmp_path: Path) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    store.put("k", entry_for(1))
    assert same(store.get("k"), entry_for(1))
    path = tmp_path / row(tmp_path, "k")[1]
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 1
    path.write_bytes(bytes(damaged))  # in place, as damage would: the same file name
    assert store.get("k") is None
    assert store.stats.rejected == 1 and "k" not in store and not path.exists()
    store.put("k", entry_for(1))
    assert same(store.get("k"), entry_for(1)) and same(store.get("k"), entry_for(1))


def test_a_file_swapped_into_a_remembered_name_is_refused(tmp_path: Path) -> None:
    """Another entry's bytes under the remembered file name are refused by the key binding, not served."""
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    store.put("a", entry_for(1))
    store.put("b", entry_for(2))
    assert same(store.get("a"), entry_for(1))
    path_a, path_b = tmp_path / row(tmp_path, "a")[1], tmp_path / row(tmp_path, "b")[1]
    path_a.write_bytes(path_b.read_bytes())
    assert store.get("a") is None
    assert store.stats.rejected == 1 and same(store.get("b"), entry_for(2))


def test_reads_go_on_while_access_times_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RecentRows, "FLUSH_S", 0.0)  # every warm read writes its access time at once
    store = DiskPrefixStore(tmp_path, min_file_size=0, timeout=0.05)
    store.put("k", entry_for(1))
    assert same(store.get("k"), entry_for(1))
    first_access = row(tmp_path, "k")[2]
    with closing(sqlite3.connect(tmp_path / "cache.db", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # the write lock, held past the store's timeout
        for _ in range(2):
            assert same(store.get("k"), entry_for(1))  # served; its access time is lost
        other.execute("COMMIT")
    assert row(tmp_path, "k")[2] == first_access
    assert same(store.get("k"), entry_for(1))  # the lock is free again: written at once
    assert row(tmp_path, "k")[2] > first_access
    assert store.stats.hits == 4 and store.stats.rejected == 0
    store.put("j", entry_for(2))  # the store still writes
    assert same(store.get("j"), entry_for(2))
