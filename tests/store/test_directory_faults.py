"""Read-only and vanished store directories: a read-only store serves and never writes, a read-only mount still
serves, a deleted directory is noticed and recreated, and failing writes never stop serving."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
import torch
from hostile import QUERY, A, docs, scores

from minirerank_integrations import (
    MiniReranker,
)
from minirerank_integrations.store import DiskPrefixStore, PrefixEntry


def _filled_store(directory: Path) -> PrefixEntry:
    entry = PrefixEntry(keys=torch.randn(1, 2, 300, 16), values=torch.randn(1, 2, 300, 16), length=300, next_position=3)
    with DiskPrefixStore(directory) as store:  # 300 tokens: the blob lives in a value file
        store.put("big", entry)
        store.put(
            "small", PrefixEntry(keys=torch.ones(1, 1, 2, 4), values=torch.ones(1, 1, 2, 4), length=2, next_position=2)
        )
    return entry


def test_a_read_only_store_serves_and_never_writes(tmp_path):
    directory = tmp_path / "store"
    entry = _filled_store(directory)
    before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    with DiskPrefixStore(directory, read_only=True) as store:
        got = store.get("big")
        assert got is not None and torch.equal(got.keys, entry.keys)
        assert store.get("small") is not None and store.get("missing") is None
        assert "big" in store and len(store) == 2 and store.stats.bytes > 0
        with pytest.warns(RuntimeWarning, match="read only"):
            store.put("new", entry)
        assert store.stats.write_failures == 1 and (store.stats.hits, store.stats.misses) == (2, 1)
    after = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
    assert after == {p: v for p, v in before.items() if not p.name.endswith(("-wal", "-shm"))}


def _unmount(target: Path) -> None:
    # Lazy: detached at once even while a closed engine's SQLite handles are still being collected.
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def _read_only_mount(source: Path, target: Path) -> bool:
    target.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True, timeout=30)
    if remount.returncode != 0:
        _unmount(target)
        return False
    return True


def test_a_store_on_a_read_only_mount_still_serves(tiny4_path, tmp_path):
    source, mounted = tmp_path / "store", tmp_path / "mounted"
    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=source)
    expected = scores(engine.rerank(QUERY, docs()))
    engine.store.close()
    if not _read_only_mount(source, mounted):
        pytest.skip("this machine does not allow a read-only bind mount (needs mount privileges)")
    try:
        with pytest.warns(RuntimeWarning, match="read only"):
            shipped = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=mounted)
            got = scores(shipped.rerank(QUERY, docs()))
        assert got == expected
        assert shipped.counters.prefix_hits == 3 and shipped.counters.prefix_computations == 0
        shipped.store.close()
    finally:
        _unmount(mounted)


def test_a_deleted_store_directory_is_noticed_and_recreated(tmp_path):
    directory = tmp_path / "store"
    entry = _filled_store(directory)
    store = DiskPrefixStore(directory)
    assert store.get("big") is not None
    shutil.rmtree(directory)
    with pytest.warns(RuntimeWarning, match="removed"):
        store.put("again", entry)
    assert (directory / "cache.db").exists()
    with DiskPrefixStore(directory) as reopened:  # a new process sees what was written after the loss
        assert reopened.get("again") is not None and reopened.get("big") is None
    store.close()


def test_a_store_whose_writes_fail_still_serves_its_entries(tmp_path):
    # A full disk fails the access-time update a read does; a writer holding the lock fails it the same way.
    directory = tmp_path / "store"
    entry = _filled_store(directory)
    store = DiskPrefixStore(directory, timeout=0.2)
    with closing(sqlite3.connect(directory / "cache.db", isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock; WAL readers can still read
        got = store.get("big")
        writer.execute("ROLLBACK")
    assert got is not None and torch.equal(got.values, entry.values)
    assert store.stats.hits == 1 and store.stats.rejected == 0
    store.close()
