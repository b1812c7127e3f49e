"""``minirerank cache stats|verify|clear`` on a directory holding good, damaged and planted entries."""

from __future__ import annotations

import pickle
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import diskcache
import pytest
import torch

from minirerank_integrations.cli import build_parser, main
from minirerank_integrations.errors import CacheError
from minirerank_integrations.store import DiskPrefixStore, PrefixEntry


def entry_for(seed: int) -> PrefixEntry:
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(1, 2, 64, 64, generator=generator)
    values = torch.randn(1, 2, 64, 64, generator=generator)
    return PrefixEntry(keys=keys, values=values, length=64, next_position=seed)


class _Plant:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


@pytest.fixture
def damaged_cache(tmp_path: Path) -> tuple[Path, Path]:
    """A cache with 3 good entries, 1 flipped value file and 1 planted pickle row; and the pickle's marker."""
    directory = tmp_path / "cache"
    with DiskPrefixStore(directory) as store:
        for seed in range(4):
            store.put(f"k{seed}", entry_for(seed))
    marker = tmp_path / "marker"
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        ((filename,),) = con.execute("SELECT filename FROM Cache WHERE key = 'k1.float32'").fetchall()
        now = time.time()
        con.execute(
            "INSERT INTO Cache (key, raw, store_time, access_time, access_count, size, mode, value)"
            " VALUES ('planted', 1, ?, ?, 0, 0, 4, ?)",
            (now, now, pickle.dumps(_Plant(marker))),
        )
        con.commit()
    path = directory / filename
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x40
    path.write_bytes(bytes(data))
    return directory, marker


def test_stats_verify_clear(damaged_cache: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    directory, marker = damaged_cache
    args = ["--cache-dir", str(directory)]

    assert main(["cache", "stats", *args]) == 0
    out = capsys.readouterr().out
    assert "entries: 5" in out and f"directory: {directory}" in out
    assert int(out.split("bytes: ")[1].split()[0]) > 4 * 64 * 64 * 2 * 2 * 4

    assert main(["cache", "verify", *args]) == 1  # entries were dropped
    out = capsys.readouterr().out
    assert "ok: 3" in out and "dropped: 2" in out
    assert main(["cache", "verify", *args]) == 0  # nothing left to drop
    assert "dropped: 0" in capsys.readouterr().out

    assert main(["cache", "stats", *args]) == 0
    assert "entries: 3" in capsys.readouterr().out
    assert main(["cache", "clear", *args]) == 0
    assert "removed: 3" in capsys.readouterr().out
    assert main(["cache", "stats", *args]) == 0
    assert "entries: 0" in capsys.readouterr().out
    assert not marker.exists()  # the planted pickle was never loaded


def test_good_entries_survive_verify(damaged_cache: tuple[Path, Path]) -> None:
    directory, _ = damaged_cache
    assert main(["cache", "verify", "--cache-dir", str(directory)]) == 1
    store = DiskPrefixStore(directory)
    for seed in (0, 2, 3):
        got = store.get(f"k{seed}")
        assert got is not None and torch.equal(got.keys, entry_for(seed).keys)
    assert store.get("k1") is None and store.get("planted") is None


def test_missing_cache_directory_is_reported_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    for action in ("stats", "verify", "clear"):
        assert main(["cache", action, "--cache-dir", str(missing)]) == 2
        assert "no prefix cache" in capsys.readouterr().err
    assert not missing.exists()


def test_unopenable_cache_is_reported_with_the_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    DiskPrefixStore(tmp_path).close()  # a marked store ...
    (tmp_path / "cache.db").write_bytes(b"this is not an SQLite database" * 100)  # ... whose database is garbage
    assert main(["cache", "stats", "--cache-dir", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("minirerank: ") for line in lines)  # the store's warning, then the error: no traceback
    assert "cannot be opened" in lines[-1] and "delete the directory" in lines[-1]


def test_other_applications_directories_are_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain"
    with diskcache.Cache(plain) as other:
        for i in range(5):
            other.set(f"user-{i}", b"precious" * i)
    other_db = tmp_path / "sqlite"
    other_db.mkdir()
    with closing(sqlite3.connect(other_db / "cache.db")) as con:
        con.execute("CREATE TABLE notes (body TEXT)")
        con.execute("INSERT INTO notes VALUES ('mine')")
        con.commit()
    before = (other_db / "cache.db").read_bytes()
    for directory in (plain, other_db):
        for action in ("stats", "verify", "clear"):
            assert main(["cache", action, "--cache-dir", str(directory)]) == 2
            err = capsys.readouterr().err
            assert "not a minirerank prefix store" in err and len(err.strip().splitlines()) == 1
    with diskcache.Cache(plain) as other:
        assert [other.get(f"user-{i}") for i in range(5)] == [b"precious" * i for i in range(5)]
    assert (other_db / "cache.db").read_bytes() == before  # stats added no table
    with pytest.raises(CacheError, match="not marked"):  # the engine's store refuses it too
        DiskPrefixStore(plain)


def test_stats_never_writes(damaged_cache: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = damaged_cache
    snapshot = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.rglob("*") if p.is_file()}
    assert main(["cache", "stats", "--cache-dir", str(directory)]) == 0
    assert "entries: 5" in capsys.readouterr().out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.rglob("*") if p.is_file()}
    assert {p: v for p, v in after.items() if not p.name.endswith(("-wal", "-shm"))} == {
        p: v for p, v in snapshot.items() if not p.name.endswith(("-wal", "-shm"))
    }


def test_parser_shape(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["cache", "verify", "--cache-dir", "somewhere"])
    assert (args.command, args.cache_command, args.cache_dir) == ("cache", "verify", "somewhere")
    assert callable(args.handler)
    for argv in ([], ["cache"], ["cache", "stats"], ["cache", "shrink", "--cache-dir", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()


def _files(directory: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_stats_creates_no_wal_or_shm_file(damaged_cache: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = damaged_cache
    before = _files(directory)
    assert not [p for p in before if p.name.endswith(("-wal", "-shm"))]  # no writer has the store open
    for _ in range(2):
        assert main(["cache", "stats", "--cache-dir", str(directory)]) == 0
        assert "entries: 5" in capsys.readouterr().out
        assert _files(directory) == before  # the same files, byte for byte, and no new one


def test_stats_beside_a_live_writer_counts_its_rows_and_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with DiskPrefixStore(tmp_path / "live") as writer:
        for seed in range(3):
            writer.put(f"k{seed}", entry_for(seed))
        names = sorted(p.name for p in (tmp_path / "live").iterdir())
        assert "cache.db-wal" in names and "cache.db-shm" in names  # the writer's side files
        assert main(["cache", "stats", "--cache-dir", str(tmp_path / "live")]) == 0
        assert "entries: 3" in capsys.readouterr().out
        assert sorted(p.name for p in (tmp_path / "live").iterdir()) == names
        assert writer.get("k2") is not None


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--cache-url", "redis://127.0.0.1:abc/0", "Port could not be cast"),
        ("--cache-url", "redis://:s3cret@127.0.0.1:99999/0", "Port out of range"),
        ("--cache-url", "redis://:s3cret@[::1/0", "Invalid IPv6"),
        ("--cache-url", "ftp://127.0.0.1/0", "unknown URL scheme"),
        ("--cache-url", "redis://127.0.0.1:6379/x", "database"),
        ("--cache-url", "redis://:6379/0", "no host"),
        ("--cache-dir", "redis://127.0.0.1:6379/0", "--cache-dir"),
        ("--cache-ttl", "inf", "--cache-ttl"),
        ("--cache-memory-limit", "-1", "--cache-memory-limit"),
    ],
)
def test_a_malformed_store_option_is_one_line_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, words: str
) -> None:
    missing_model = str(tmp_path / "no-such-checkpoint")  # the store is checked first: this is never read
    (tmp_path / "doc.txt").write_text("a page to pre-cache", encoding="utf-8")
    store = [option, value] if option in ("--cache-url", "--cache-dir") else ["--cache-url", "redis://127.0.0.1/0"]
    store += [option, value] if option not in ("--cache-url", "--cache-dir") else []
    commands = [["rerank", "--model", missing_model, "--query", "q", "--text", "a", *store]]
    if option != "--cache-memory-limit":  # precache sets its own (0: ingestion never reads entries back)
        precache = ["precache", str(tmp_path / "doc.txt"), "--model", missing_model, "--no-progress", *store]
        commands += [precache, [*precache, "--ray"]]  # with --ray, before Ray starts
    for argv in commands:
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("minirerank: "), err
        assert words in lines[0] and "s3cret" not in lines[0] and "no-such-checkpoint" not in lines[0]
