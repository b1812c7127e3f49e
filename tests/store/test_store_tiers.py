"""The store's host pipeline: precisions side by side, no non-finite entry kept, reader threads, the writer
thread and the device-resident hot tier."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from entries import entry_for
from pictures import drawn_image

from minirerank_integrations import Candidate, MiniReranker, Query
from minirerank_integrations.store import (
    DiskPrefixStore,
    MemoryPrefixStore,
    PrefixEntry,
    PrefixStore,
    TieredPrefixStore,
    WriteBehindStore,
)

REPO = Path(__file__).resolve().parents[2]
STORAGES = ["float32", "bfloat16", "float16", "int8"]


def same(a: PrefixEntry | None, b: PrefixEntry) -> bool:
    return (
        a is not None
        and torch.equal(a.keys.cpu(), b.keys.cpu())
        and torch.equal(a.values.cpu(), b.values.cpu())
        and (a.length, a.next_position) == (b.length, b.next_position)
    )


def documents(n: int = 3) -> list[Candidate]:
    sizes = [(64, 64), (96, 64), (128, 96)]
    return [Candidate(images=[drawn_image(*sizes[i % 3], seed=700 + i)], id=f"d{i}") for i in range(n)]


QUERY = Query(text="a red circle on the left")


# -- precisions side by side ------------------------------------------------------------------------------------


def test_int8_and_float32_stores_share_a_directory(tmp_path: Path) -> None:
    exact = DiskPrefixStore(tmp_path, min_file_size=0)
    compact = DiskPrefixStore(tmp_path, storage="int8", min_file_size=0)
    original = entry_for(1, shape=(1, 2, 32, 16))
    exact.put("both", original)
    compact.put("both", original)
    compact.put("int8 only", original)
    for _ in range(3):  # rounds of reads by both: neither deletes the other's rows
        assert same(exact.get("both"), original)
        decoded = compact.get("both")
        assert decoded is not None and not torch.equal(decoded.keys, original.keys)  # int8, not the float32 row
        assert float((decoded.keys - original.keys).abs().max()) < float(original.keys.abs().max()) / 127
    assert "int8 only" in compact and "int8 only" not in exact and exact.get("int8 only") is None
    assert exact.stats.rejected == 0 and compact.stats.rejected == 0
    assert len(exact) == 3  # rows of both precisions


def test_precache_in_int8_then_float32_computes_the_float32_prefixes(tiny4_path, tmp_path: Path) -> None:
    docs = documents()
    directory = tmp_path / "cache"
    compact = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=directory, cache_storage="int8")
    assert compact.precache(docs, progress=False).stored == len(docs)
    exact = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=directory)
    assert exact.precache(docs, progress=False).stored == len(docs)  # not "already stored": those rows are int8
    assert exact.precache(docs, progress=False).present == len(docs)
    for engine in (compact, exact):
        fresh = MiniReranker.from_pretrained(
            tiny4_path, config="paper", cache_dir=directory, cache_storage=engine.store.back.storage
        )
        fresh.rerank(QUERY, docs)
        assert (fresh.counters.prefix_hits, fresh.counters.prefix_computations) == (len(docs), 0)
        assert fresh.store.stats.rejected == 0


# -- no non-finite entry is kept --------------------------------------------------------------------------------


def _poisoned(value: float, dtype: str) -> PrefixEntry:
    entry = entry_for(3, dtype=dtype)
    entry.values[0, 1, 2, 3] = value
    return entry


def _stores(tmp_path: Path, storage: str) -> list[PrefixStore]:
    return [
        DiskPrefixStore(tmp_path / f"disk-{storage}", storage=storage, min_file_size=0),  # type: ignore[arg-type]
        MemoryPrefixStore(),
        WriteBehindStore(DiskPrefixStore(tmp_path / f"behind-{storage}", storage=storage)),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("storage", STORAGES)
def test_a_non_finite_entry_is_never_stored(tmp_path: Path, storage: str) -> None:
    for store in _stores(tmp_path, storage):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for n, (value, dtype) in enumerate(
                (v, d) for v in (float("nan"), float("inf"), -float("inf")) for d in ("float32", "bfloat16", "float16")
            ):
                store.put(f"bad{n}", _poisoned(value, dtype))  # goes on: no raise
            store.put("good", entry_for(4))
            store.flush()
        runtime = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(runtime) == 1 and "NaN or inf" in runtime[0], (store, runtime)
        assert store.stats.unstorable == 9 and store.stats.writes == 1, store
        assert all(f"bad{n}" not in store and store.get(f"bad{n}") is None for n in range(9))
        assert same(store.get("good"), entry_for(4)) if storage == "float32" else store.get("good") is not None
        store.close()


# -- reading -----------------------------------------------------------------------------------------------------


def test_get_many_reads_on_several_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0, readers=4)
    for seed in range(8):
        store.put(f"k{seed}", entry_for(seed))
    disk = store._cache.disk  # type: ignore[union-attr]
    fetch = disk.fetch
    readers: set[str] = set()

    def slow_fetch(*args: object) -> object:
        readers.add(threading.current_thread().name)
        time.sleep(0.05)  # long enough that the pool's threads all take a key
        return fetch(*args)

    monkeypatch.setattr(disk, "fetch", slow_fetch)
    keys = [f"k{seed}" for seed in (5, 0, 7, 3, 1, 6, 2, 4)] + ["absent"]
    got = store.get_many(keys)
    assert [same(entry, entry_for(int(key[1:]))) for key, entry in zip(keys[:-1], got)] == [True] * 8
    assert got[-1] is None
    assert len(readers) >= 2 and all(name.startswith("minirerank-disk-read") for name in readers), readers
    assert (store.stats.hits, store.stats.misses, store.stats.rejected) == (8, 1, 0)
    store.close()
    assert store.get_many(["k1", "k2"])[1] is not None  # the pool is made again after close


def test_a_file_replaced_by_a_concurrent_writer_is_a_miss_not_damage(tmp_path: Path) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    other = DiskPrefixStore(tmp_path, min_file_size=0)  # another process, as far as the files go
    store.put("k", entry_for(1))
    disk = store._cache.disk  # type: ignore[union-attr]
    fetch = disk.fetch
    replaced = []

    def replace_then_fetch(*args: object) -> object:
        if not replaced:
            replaced.append(True)
            other.put("k", entry_for(2))  # a new value file and row; the file this read found is removed
        return fetch(*args)

    disk.fetch = replace_then_fetch
    assert store.get("k") is None  # the old file vanished under the read
    assert (store.stats.rejected, store.stats.misses) == (0, 1)
    assert same(store.get("k"), entry_for(2))  # the new row was not deleted as damage


# -- the writer thread ------------------------------------------------------------------------------------------


class _GatedStore(MemoryPrefixStore):
    """A store whose writes wait until the test opens the gate; it fails on request."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail = False
        self.writer_threads: set[str] = set()

    def put(self, key: str, entry: PrefixEntry) -> None:
        self.writer_threads.add(threading.current_thread().name)
        self.gate.wait(30)
        if self.fail:
            raise OSError("disk on fire")
        super().put(key, entry)


def test_put_returns_before_the_write_and_queued_entries_are_served() -> None:
    inner = _GatedStore()
    store = WriteBehindStore(inner)
    entry = entry_for(1)
    store.put("k", entry)  # returns although the inner write waits
    assert "k" not in inner and "k" in store and store.pending == 1
    assert store.get("k") is entry and store.get_many(["absent", "k"]) == [None, entry]
    inner.gate.set()
    assert store.flush(timeout=10)
    assert same(inner.get("k"), entry) and store.pending == 0
    assert inner.writer_threads == {"minirerank-prefix-writer"}
    store.close()


def test_the_queue_is_bounded_in_bytes() -> None:
    inner = _GatedStore()
    one = entry_for(0).nbytes()
    store = WriteBehindStore(inner, max_pending_bytes=2 * one + one // 2)
    store.put("a", entry_for(0))
    store.put("b", entry_for(1))
    third = threading.Thread(target=store.put, args=("c", entry_for(2)))
    third.start()
    third.join(0.3)
    assert third.is_alive() and store.pending == 2  # waits for room
    inner.gate.set()
    third.join(10)
    assert not third.is_alive()
    assert store.flush(timeout=10) and [same(inner.get(k), entry_for(i)) for i, k in enumerate("abc")] == [True] * 3
    store.close()


def test_write_errors_never_fail_a_call() -> None:
    inner = _GatedStore()
    inner.fail = True
    inner.gate.set()
    store = WriteBehindStore(inner)
    with pytest.warns(RuntimeWarning, match="disk on fire") as caught:
        for seed in range(3):
            store.put(f"k{seed}", entry_for(seed))
        assert store.flush(timeout=10)
    assert len([w for w in caught if w.category is RuntimeWarning]) == 1
    assert store.stats.write_failures == 3 and store.get("k0") is None
    inner.fail = False
    store.put("k0", entry_for(0))
    store.flush()
    assert same(store.get("k0"), entry_for(0))
    store.close()


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    inner = _GatedStore()
    store = WriteBehindStore(inner)
    for seed in range(3):
        store.put(f"k{seed}", entry_for(seed))
    threading.Timer(0.2, inner.gate.set).start()
    store.close()
    assert [same(inner.get(f"k{seed}"), entry_for(seed)) for seed in range(3)] == [True] * 3


def test_the_queue_is_written_when_the_process_exits(tmp_path: Path) -> None:
    body = (
        "import sys, torch\n"
        "from minirerank_integrations.store import DiskPrefixStore, PrefixEntry, WriteBehindStore\n"
        + inspect.getsource(entry_for)
        + "store = WriteBehindStore(DiskPrefixStore(sys.argv[1], min_file_size=0))\n"
        "for seed in range(6):\n"
        "    store.put(f'k{seed}', entry_for(seed, shape=(2, 2, 64, 32)))\n"
        "print('queued', store.pending > 0)\n"  # exits without close or flush
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", body, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    store = DiskPrefixStore(tmp_path)
    assert [same(store.get(f"k{seed}"), entry_for(seed, shape=(2, 2, 64, 32))) for seed in range(6)] == [True] * 6


def test_ingestion_through_the_writer_thread_serves_a_fresh_engine(tiny4_path, tmp_path: Path) -> None:
    docs = documents()
    directory = tmp_path / "cache"
    writer = MiniReranker.from_pretrained(tiny4_path, config="paper")
    behind = WriteBehindStore(DiskPrefixStore(directory))
    writer.store = TieredPrefixStore([MemoryPrefixStore(), behind])
    assert writer.precache(docs, progress=False).stored == len(docs)
    expected = writer.score([(QUERY, d) for d in docs])
    assert writer.counters.prefix_computations == len(docs)  # the queued entries were served, not recomputed
    assert writer.store.flush(timeout=60)
    reader = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=directory)
    assert reader.score([(QUERY, d) for d in docs]) == pytest.approx(expected, abs=1e-6)
    assert (reader.counters.prefix_hits, reader.counters.prefix_computations) == (len(docs), 0)
    writer.store.close()


# -- the device-resident hot tier ----------------------------------------------------------------------------------


def test_hot_tier_keeps_entries_on_its_device_bounded_in_bytes_least_recently_used_out() -> None:
    one = entry_for(0).nbytes()
    hot = MemoryPrefixStore(size_limit=3 * one, device="meta")  # a device other than the CPU, on any machine
    for key in "abc":
        hot.put(key, entry_for(ord(key)))
    assert hot.get("a") is not None  # now the most recent
    hot.put("d", entry_for(4))
    assert "b" not in hot and all(key in hot for key in "acd")  # b was the least recently used
    assert hot.stats.bytes == 3 * one <= hot.size_limit and hot.stats.evictions == 1
    entry = hot.get("d")
    assert entry is not None and entry.keys.device.type == "meta" and entry.values.device.type == "meta"
    assert entry.keys.shape == (1, 2, 8, 16) and entry.next_position == 4
    hot.put("huge", entry_for(5, shape=(1, 2, 64, 16)))  # larger than the whole tier: not kept
    assert "huge" not in hot and all(key in hot for key in "acd")


def test_hot_tier_in_front_of_a_directory_is_filled_by_reads(tmp_path: Path) -> None:
    disk = DiskPrefixStore(tmp_path, storage="bfloat16")
    original = entry_for(7, dtype="bfloat16")
    disk.put("k", original)
    hot = MemoryPrefixStore(size_limit=2**20, device="cpu")
    store = TieredPrefixStore([hot, disk])
    assert same(store.get("k"), original)  # read from the directory, promoted
    assert "k" in hot and hot.get("k").keys.device == torch.device("cpu")  # type: ignore[union-attr]
    disk.close()
    disk_reads = disk.stats.hits
    assert same(store.get("k"), original) and disk.stats.hits == disk_reads  # served by the hot tier alone


@pytest.mark.parametrize("storage", ["bfloat16", "int8"])
def test_a_directory_serves_entries_on_its_device(tmp_path: Path, storage: str) -> None:
    original = entry_for(8, dtype="bfloat16")
    with DiskPrefixStore(tmp_path, storage=storage, device="meta", min_file_size=0) as store:  # type: ignore[arg-type]
        store.put("k", original)
        entry = store.get("k")  # int8: codes and scales go to the device and are dequantized there
        assert entry is not None and entry.keys.device.type == "meta" and entry.values.device.type == "meta"
        assert entry.keys.dtype == torch.bfloat16 and entry.keys.shape == original.keys.shape
        assert store.stats.rejected == 0


def test_open_store_builds_the_hot_tier_and_the_writer(tmp_path: Path) -> None:
    from minirerank_integrations.errors import ConfigError
    from minirerank_integrations.store import StoreConfig, open_store

    for target in (tmp_path / "a", StoreConfig(dir=str(tmp_path / "b"), storage="int8")):
        store = open_store(target, write_behind=True, device="meta")
        assert isinstance(store, TieredPrefixStore)
        hot, behind = store.tiers
        assert isinstance(hot, MemoryPrefixStore) and hot.device == torch.device("meta")
        assert isinstance(behind, WriteBehindStore) and isinstance(behind.inner, DiskPrefixStore)
        assert behind.inner.device == torch.device("meta")
        store.put("k", entry_for(1))
        assert store.flush(timeout=30) and "k" in behind.inner
        entry = store.get("k")
        assert entry is not None and entry.keys.device.type == "meta"
        store.close()
    assert open_store(None, device="meta").device == torch.device("meta")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="write_behind"):
        open_store(tmp_path / "c", write_behind="yes")  # type: ignore[arg-type]


def test_a_directory_read_is_one_buffer_the_tensors_view(tmp_path: Path) -> None:
    original = entry_for(9, shape=(2, 2, 64, 32), dtype="bfloat16")
    with DiskPrefixStore(tmp_path, storage="bfloat16", min_file_size=0) as store:
        store.put("k", original)
        entry = store.get("k")
        assert entry is not None and same(entry, original)
        # keys and values lie back to back in the one buffer the value file was read into: views, not copies
        # (two allocations are never exactly adjacent: the allocator keeps a header between them)
        assert entry.values.data_ptr() == entry.keys.data_ptr() + entry.keys.nbytes


def test_read_buffers_are_reused_only_once_no_entry_views_them(tmp_path: Path) -> None:
    a, b = (entry_for(seed, shape=(2, 2, 64, 32), dtype="bfloat16") for seed in (1, 2))
    with DiskPrefixStore(tmp_path, storage="bfloat16", min_file_size=0) as store:
        store.put("a", a)
        store.put("b", b)
        first = store.get("a")
        second = store.get("b")  # the first entry still views its buffer: this read gets another one
        assert first is not None and second is not None
        assert first.keys.data_ptr() != second.keys.data_ptr()
        address = second.keys.data_ptr()
        del second  # its buffer is free again
        third = store.get("a")
        assert third is not None and third.keys.data_ptr() == address  # warm buffer reused
        assert same(first, a) and same(third, a)  # and the live entry was not written over
