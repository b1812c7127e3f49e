"""The on-disk prefix store: reuse across instances and processes, and every way a cache directory goes bad."""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from contextlib import closing
from pathlib import Path

import pytest
import torch
from entries import entry_for

from minirerank_integrations.errors import CacheError, ConfigError
from minirerank_integrations.store import DiskPrefixStore, PrefixEntry
from minirerank_integrations.store.codec import encode_entry

REPO = Path(__file__).resolve().parents[2]
MODE_RAW, MODE_BINARY, MODE_TEXT, MODE_PICKLE = 1, 2, 3, 4  # diskcache's row modes


def same(a: PrefixEntry | None, b: PrefixEntry) -> bool:
    return (
        a is not None
        and a.keys.dtype == b.keys.dtype
        and torch.equal(a.keys, b.keys)
        and torch.equal(a.values, b.values)
        and (a.length, a.next_position) == (b.length, b.next_position)
    )


def row_of(directory: Path, key: str, storage: str = "float32") -> tuple[int, str | None]:
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        ((mode, filename),) = con.execute(
            "SELECT mode, filename FROM Cache WHERE key = ?", (f"{key}.{storage}",)
        ).fetchall()
    return mode, filename


def value_file(directory: Path, key: str, storage: str = "float32") -> Path:
    mode, filename = row_of(directory, key, storage)
    assert mode == MODE_BINARY and filename is not None
    return directory / filename


def value_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*/*.val"))


def execute(directory: Path, statement: str, parameters: tuple = ()) -> None:
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        con.execute(statement, parameters)
        con.commit()


def python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


# The child processes build their entries with the very same function as the tests.
CHILD_PRELUDE = (
    "import sys, torch\n"
    "from minirerank_integrations.store import DiskPrefixStore, PrefixEntry\n"
    + inspect.getsource(entry_for)
    + inspect.getsource(same)
)


def run_child(body: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + body, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=python_env(),
        cwd=REPO,
    )


# -- basic use -----------------------------------------------------------------------------------------------


def test_hit_miss_and_stats(tmp_path: Path) -> None:
    store = DiskPrefixStore(tmp_path)
    assert store.get("absent") is None
    store.put("a", entry_for(1))
    store.put("b", entry_for(2, dtype="bfloat16"))
    store.put("a", entry_for(1))  # overwriting keeps one row
    assert same(store.get("a"), entry_for(1))
    assert same(store.get("b"), entry_for(2, dtype="bfloat16"))
    assert "a" in store and "absent" not in store and 5 not in store
    assert len(store) == 2
    stats = store.stats
    assert (stats.hits, stats.misses, stats.writes, stats.evictions, stats.rejected) == (2, 1, 3, 0, 0)
    assert stats.bytes > 0 and stats.write_failures == 0
    store.close()


def test_reopened_directory_serves_identical_tensors(tmp_path: Path) -> None:
    for storage in ("float32", "bfloat16"):
        with DiskPrefixStore(tmp_path / storage, storage=storage, min_file_size=0) as first:  # type: ignore[arg-type]
            first.put("k", entry_for(3, shape=(2, 2, 40, 32), dtype="bfloat16"))
        with DiskPrefixStore(tmp_path / storage, storage=storage) as second:  # type: ignore[arg-type]
            assert same(second.get("k"), entry_for(3, shape=(2, 2, 40, 32), dtype="bfloat16"))
            assert second.stats.hits == 1


def test_value_files_read_without_preadv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the platform has no ``os.preadv`` (Windows, older macOS) a value file is read by a seek and a read."""
    with DiskPrefixStore(tmp_path / "s", min_file_size=0) as first:
        first.put("k", entry_for(5, shape=(2, 2, 40, 32), dtype="bfloat16"))
    monkeypatch.delattr(os, "preadv", raising=False)
    with DiskPrefixStore(tmp_path / "s") as second:
        assert same(second.get("k"), entry_for(5, shape=(2, 2, 40, 32), dtype="bfloat16"))
        assert second.stats.hits == 1


def test_int8_storage_is_applied(tmp_path: Path) -> None:
    original = entry_for(4, shape=(1, 2, 64, 64))
    lossless, compact = (
        DiskPrefixStore(tmp_path / "f32", min_file_size=0),
        DiskPrefixStore(tmp_path / "i8", storage="int8", min_file_size=0),
    )
    lossless.put("k", original)
    compact.put("k", original)
    assert (
        value_file(tmp_path / "i8", "k", "int8").stat().st_size < 0.3 * value_file(tmp_path / "f32", "k").stat().st_size
    )
    decoded = compact.get("k")
    assert decoded is not None and decoded.keys.dtype == torch.float32
    assert float((decoded.keys - original.keys).abs().max()) < float(original.keys.abs().max()) / 127


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int4"):
        DiskPrefixStore(tmp_path, storage="int4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="size_limit"):
        DiskPrefixStore(tmp_path, size_limit=0)
    store = DiskPrefixStore(tmp_path)
    with pytest.raises(TypeError, match="str"):
        store.put(b"key", entry_for(0))  # type: ignore[arg-type]
    bad = PrefixEntry(keys=torch.zeros(1, 1, 2, 4), values=torch.zeros(1, 1, 3, 4), length=2, next_position=0)
    with pytest.raises(CacheError):
        store.put("bad", bad)  # a caller bug, not a disk problem
    assert len(store) == 0


def test_fresh_process_reads_identical_bytes(tmp_path: Path) -> None:
    original = entry_for(5, shape=(2, 2, 50, 32), dtype="bfloat16")
    with DiskPrefixStore(tmp_path, min_file_size=0) as store:
        store.put("shared", original)
    result = run_child(
        "import hashlib\n"
        "store = DiskPrefixStore(sys.argv[1])\n"
        "entry = store.get('shared')\n"
        "raw = entry.keys.contiguous().view(torch.uint8).numpy().tobytes()\n"
        "raw += entry.values.contiguous().view(torch.uint8).numpy().tobytes()\n"
        "print(entry.keys.dtype, entry.next_position, hashlib.sha256(raw).hexdigest(), store.stats.hits)\n",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    raw = original.keys.view(torch.uint8).numpy().tobytes() + original.values.view(torch.uint8).numpy().tobytes()
    assert result.stdout.split() == ["torch.bfloat16", "5", hashlib.sha256(raw).hexdigest(), "1"]


# -- damaged value files ------------------------------------------------------------------------------------


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _delete(path: Path) -> None:
    path.unlink()


def _fifo(path: Path) -> None:  # a read that would block forever
    path.unlink()
    os.mkfifo(path)


def _symlink(path: Path) -> None:  # a read that would never end
    path.unlink()
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize("damage", [_flip, _truncate, _empty, _delete, _fifo, _symlink])
def test_damaged_value_file_is_a_rejected_miss(tmp_path: Path, damage, caplog: pytest.LogCaptureFixture) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    store.put("bad", entry_for(1))
    store.put("good", entry_for(2))
    path = value_file(tmp_path, "bad")
    damage(path)
    assert store.get("bad") is None
    assert store.stats.rejected == 1 and store.stats.misses == 1
    assert "bad" not in store
    assert not path.exists() and not path.is_symlink()
    assert "dropping unreadable entry bad" in caplog.text
    assert same(store.get("good"), entry_for(2))
    store.put("bad", entry_for(1))  # the key works again
    assert same(store.get("bad"), entry_for(1))


# -- damaged and planted rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "garbage"),
    [
        ("value", b"\x00garbage bytes that are no prefix blob"),
        ("value", b""),
        ("value", "a text value"),
        ("value", 12345),
        ("value", None),
        ("mode", MODE_TEXT),
        ("mode", 99),
    ],
)
def test_garbage_in_a_row_is_a_rejected_miss(tmp_path: Path, column: str, garbage: object) -> None:
    store = DiskPrefixStore(tmp_path)  # small entries stay in the row (MODE_RAW)
    store.put("row", entry_for(1))
    assert row_of(tmp_path, "row") == (MODE_RAW, None)
    execute(tmp_path, f"UPDATE Cache SET {column} = ? WHERE key = ?", (garbage, "row.float32"))
    assert store.get("row") is None
    assert store.stats.rejected == 1 and "row" not in store
    store.put("row", entry_for(1))
    assert same(store.get("row"), entry_for(1))


@pytest.mark.parametrize("name", ["../outside.val", "{outside}", "ab/cd/../../../outside.val", "ab/cd/x.val"])
def test_row_naming_a_file_outside_the_cache_neither_reads_nor_deletes_it(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "cache"
    outside = tmp_path / "outside.val"
    outside.write_bytes(encode_entry(entry_for(1), key="k"))  # even a valid blob outside the cache is not served
    store = DiskPrefixStore(directory)
    store.put("row", entry_for(1))
    execute(
        directory,
        "UPDATE Cache SET mode = ?, filename = ? WHERE key = ?",
        (MODE_BINARY, name.format(outside=outside), "row.float32"),
    )
    assert store.get("row") is None
    assert store.stats.rejected == 1
    assert outside.read_bytes() == encode_entry(entry_for(1), key="k")


class _Plant:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_planted_pickle_rows_are_never_unpickled(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Plant(probe))).close()
    assert probe.exists()  # the payload is live: unpickling it does create its marker

    directory = tmp_path / "cache"
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Plant(marker))
    store = DiskPrefixStore(directory)
    store.put("good", entry_for(1))
    now = time.time()
    insert = (
        "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size, mode,"
        " filename, value) VALUES (?, ?, ?, NULL, ?, 0, NULL, ?, ?, ?, ?)"
    )
    planted_file = "ab/cd/" + "0" * 28 + ".val"
    (directory / "ab" / "cd").mkdir(parents=True)
    (directory / planted_file).write_bytes(payload)
    execute(directory, insert, ("in-row.float32", 1, now, now, 0, MODE_PICKLE, None, payload))
    execute(directory, insert, ("in-file.float32", 1, now, now, len(payload), MODE_PICKLE, planted_file, None))
    # a pickled key (raw = 0) is what diskcache unpickles when it lists keys
    execute(directory, insert, (payload, 0, now, now, 0, MODE_RAW, None, encode_entry(entry_for(2), key="k")))
    assert len(store) == 4

    assert store.get("in-row") is None
    assert store.get("in-file") is None
    assert store.stats.rejected == 2
    ok, dropped = store.verify()  # reads every row, the pickled key included
    assert (ok, dropped) == (1, 1)
    assert len(store) == 1 and same(store.get("good"), entry_for(1))
    assert not (directory / planted_file).exists()
    store.clear()
    assert not marker.exists()


# -- processes -----------------------------------------------------------------------------------------------


def test_writer_killed_mid_write_leaves_only_whole_entries(tmp_path: Path) -> None:
    body = (
        "store = DiskPrefixStore(sys.argv[1], min_file_size=0)\n"
        "step = 0\n"
        "while True:\n"
        "    store.put(f'key-{step % 30}', entry_for(step % 30, shape=(2, 4, 128, 64)))\n"
        "    if step == 0:\n"
        "        print('started', flush=True)\n"
        "    step += 1\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + body, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=python_env(),
        cwd=REPO,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"started"
        time.sleep(0.4)  # well inside the loop of puts
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        if writer.stdout is not None:
            writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL

    store = DiskPrefixStore(tmp_path, min_file_size=0)
    hits = 0
    for seed in range(30):
        got = store.get(f"key-{seed}")
        if got is not None:
            assert same(got, entry_for(seed, shape=(2, 4, 128, 64)))
            hits += 1
    assert hits >= 1 and store.stats.rejected == 0
    assert store.verify() == (len(store), 0)
    store.put("after", entry_for(99))
    assert same(store.get("after"), entry_for(99))


def test_four_processes_share_one_directory(tmp_path: Path) -> None:
    body = (
        "import random\n"
        "directory, worker = sys.argv[1], int(sys.argv[2])\n"
        "store = DiskPrefixStore(directory, min_file_size=0 if worker % 2 else 2**15)\n"
        "rng = random.Random(worker)\n"
        "for step in range(40):\n"
        "    shared = rng.randrange(6)\n"
        "    store.put(f'shared-{shared}', entry_for(shared, shape=(1, 2, 32, 32)))\n"
        "    own = 1000 * (worker + 1) + step\n"
        "    store.put(f'own-{own}', entry_for(own, shape=(1, 2, 32, 32)))\n"
        "    assert same(store.get(f'own-{own}'), entry_for(own, shape=(1, 2, 32, 32))), own\n"
        "    other = rng.randrange(6)\n"
        "    got = store.get(f'shared-{other}')\n"
        "    assert got is None or same(got, entry_for(other, shape=(1, 2, 32, 32))), other\n"
        "    peer = 1000 * (rng.randrange(4) + 1) + rng.randrange(40)\n"
        "    got = store.get(f'own-{peer}')\n"
        "    assert got is None or same(got, entry_for(peer, shape=(1, 2, 32, 32))), peer\n"
        "assert store.stats.rejected == 0 and store.stats.write_failures == 0, store.stats\n"
        "print('done', store.stats.writes)\n"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD_PRELUDE + body, str(tmp_path), str(worker)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=python_env(),
            cwd=REPO,
        )
        for worker in range(4)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr
        assert stdout.split() == ["done", "80"]

    store = DiskPrefixStore(tmp_path)
    for seed in range(6):
        got = store.get(f"shared-{seed}")
        assert got is None or same(got, entry_for(seed, shape=(1, 2, 32, 32)))
    for worker in range(4):
        for step in range(40):
            own = 1000 * (worker + 1) + step
            assert same(store.get(f"own-{own}"), entry_for(own, shape=(1, 2, 32, 32)))
    assert store.verify()[1] == 0


# -- a directory that cannot be written ------------------------------------------------------------------------


def _chmod_blocks_writes(directory: Path) -> bool:
    """False when permission bits do not stop us (tests run as root in the CI containers)."""
    probe = directory / ".probe"
    try:
        probe.write_bytes(b"")
    except PermissionError:
        return True
    probe.unlink()
    return False


def _puts_warn_once_and_miss(directory: Path) -> DiskPrefixStore:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = DiskPrefixStore(directory)
        for seed in range(3):
            store.put(f"k{seed}", entry_for(seed))  # does not raise
        assert store.get("k0") is None and store.get("old") is None
    runtime = [warning for warning in caught if issubclass(warning.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(warning.message) for warning in caught]
    assert str(directory) in str(runtime[0].message)
    assert not store.available and "k0" not in store and len(store) == 0
    assert store.verify() == (0, 0) and store.clear() == 0
    assert store.stats.write_failures == 3 and store.stats.misses == 2
    return store


def test_unwritable_new_directory(tmp_path: Path) -> None:
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        target = parent / "cache"
        if not _chmod_blocks_writes(parent):
            # As root the mode bits are ignored; a path under a regular file can never be created.
            blocker = tmp_path / "a-file"
            blocker.write_bytes(b"")
            target = blocker / "cache"
        _puts_warn_once_and_miss(target)
        assert not target.exists()
    finally:
        parent.chmod(0o755)


def test_unwritable_existing_directory(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with DiskPrefixStore(directory) as store:
        store.put("old", entry_for(0))
    paths = [directory, *directory.iterdir()]
    for path in paths:
        path.chmod(0o555)
    try:
        if not _chmod_blocks_writes(directory):
            # As root the mode bits are ignored; a directory where cache.db should be cannot be opened
            # by SQLite, which is what a read-only cache.db does to a non-root process.
            for path in paths:
                path.chmod(0o755)
            for path in directory.glob("cache.db*"):
                path.unlink()
            (directory / "cache.db").mkdir()
        _puts_warn_once_and_miss(directory)
    finally:
        for path in [directory, *directory.iterdir()]:
            path.chmod(0o755)


def test_full_disk_warns_once_and_leaves_no_partial_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    store.put("kept", entry_for(0))
    disk = store._cache.disk  # type: ignore[union-attr]

    def full_disk(full_path: str, iterator: object, mode: str, encoding: str | None = None) -> int:
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        with open(full_path, mode) as writer:
            writer.write(b"MRPX partial")  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk, "_write", full_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(1, 4):
            store.put(f"k{seed}", entry_for(seed))
    assert [str(warning.message) for warning in caught if warning.category is RuntimeWarning].__len__() == 1
    assert "No space left" in str(caught[0].message)
    assert store.stats.write_failures == 3 and store.stats.writes == 1
    assert value_files(tmp_path) == [value_file(tmp_path, "kept")]
    assert store.get("k1") is None and same(store.get("kept"), entry_for(0))
    monkeypatch.undo()
    store.put("k1", entry_for(1))  # space is back: writes resume, silently
    assert same(store.get("k1"), entry_for(1))


def test_sqlite_error_during_a_put_warns_once_and_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    store.put("kept", entry_for(0))
    cache = store._cache  # type: ignore[union-attr]

    def failing_insert(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cache, "_row_insert", failing_insert)  # fails after the value file was written
    with pytest.warns(RuntimeWarning, match="disk is full") as caught:
        store.put("k1", entry_for(1))
        store.put("k2", entry_for(2))
    assert len(caught) == 1
    assert value_files(tmp_path) == [value_file(tmp_path, "kept")]  # the new files were removed
    monkeypatch.undo()
    store.put("k1", entry_for(1))  # the connection is usable again
    assert same(store.get("k1"), entry_for(1)) and len(store) == 2


# -- eviction --------------------------------------------------------------------------------------------------


def test_eviction_bounds_the_volume_and_keeps_recent_entries(tmp_path: Path) -> None:
    shape = (1, 1, 50, 128)  # 2 x 25.6 KB of float32: about 51 KB a blob
    one = len(encode_entry(entry_for(0, shape), key="k"))
    limit = 200_000
    store = DiskPrefixStore(tmp_path, size_limit=limit)
    store.put("hot", entry_for(0, shape))
    for seed in range(1, 16):
        store.put(f"k{seed}", entry_for(seed, shape))
        assert same(store.get("hot"), entry_for(0, shape))  # used after every put, so never the LRU one
        assert store.stats.bytes <= limit + one
    stats = store.stats
    assert stats.evictions > 0 and stats.writes == 16
    assert len(store) == stats.writes - stats.evictions >= 3
    assert same(store.get("k15"), entry_for(15, shape)) and same(store.get("k14"), entry_for(14, shape))
    assert store.get("k1") is None
    assert len(value_files(tmp_path)) == len(store)  # evicted files are gone too


def test_entry_larger_than_the_cache_is_not_stored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = DiskPrefixStore(tmp_path, size_limit=100_000)
    store.put("small", entry_for(0))
    store.put("huge", entry_for(1, shape=(1, 2, 100, 128)))
    assert "huge" not in store and "small" in store
    assert store.stats.evictions == 0 and "more than size_limit" in caplog.text


# -- maintenance ---------------------------------------------------------------------------------------------


def test_verify_drops_bad_entries_and_old_stray_files(tmp_path: Path) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    for seed in range(5):
        store.put(f"k{seed}", entry_for(seed))
    _flip(value_file(tmp_path, "k1"))
    _delete(value_file(tmp_path, "k3"))
    stray_old = tmp_path / "ef" / "01" / ("1" * 28 + ".val")
    stray_new = tmp_path / "ef" / "01" / ("2" * 28 + ".val")
    stray_old.parent.mkdir(parents=True)
    stray_old.write_bytes(b"left by a killed writer")
    stray_new.write_bytes(b"a writer about to commit its row")
    an_hour_ago = time.time() - 3600
    os.utime(stray_old, (an_hour_ago, an_hour_ago))
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not ours")

    assert store.verify() == (3, 2)
    assert store.stats.rejected == 2 and len(store) == 3
    assert not stray_old.exists() and stray_new.exists() and unrelated.exists()
    assert store.stats.hits == 0  # verify does not count as use
    assert store.verify() == (3, 0)
    for seed in (0, 2, 4):
        assert same(store.get(f"k{seed}"), entry_for(seed))


def test_clear_empties_the_directory(tmp_path: Path) -> None:
    store = DiskPrefixStore(tmp_path, min_file_size=0)
    for seed in range(4):
        store.put(f"k{seed}", entry_for(seed, shape=(1, 2, 64, 64)))
    full = store.stats.bytes
    assert store.clear() == 4
    assert len(store) == 0 and value_files(tmp_path) == [] and store.get("k0") is None
    assert store.stats.bytes < full
    store.put("k0", entry_for(0))
    assert same(store.get("k0"), entry_for(0))
