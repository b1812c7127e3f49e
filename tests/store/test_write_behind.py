"""Write-behind as a store setting: StoreConfig.write_behind reaches open_store, from_pretrained and the CLI;
entries written behind are readable after a flush; a failed write is a warning, never a damaged entry; and
precache reports the same with and without the writer thread."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import torch
from entries import entry_for
from pictures import drawn_image

from minirerank_integrations import Candidate, MiniReranker, Query
from minirerank_integrations.cli._common import add_engine_options, store_config
from minirerank_integrations.store import (
    DiskPrefixStore,
    PrefixEntry,
    StoreConfig,
    TieredPrefixStore,
    WriteBehindStore,
    open_store,
)


def same(a: PrefixEntry | None, b: PrefixEntry) -> bool:
    return (
        a is not None
        and torch.equal(a.keys, b.keys)
        and torch.equal(a.values, b.values)
        and (a.length, a.next_position) == (b.length, b.next_position)
    )


def documents(n: int = 3) -> list[Candidate]:
    sizes = [(64, 64), (96, 64), (128, 96)]
    return [Candidate(images=[drawn_image(*sizes[i % 3], seed=900 + i)], id=f"d{i}") for i in range(n)]


def test_write_behind_is_a_store_setting(tmp_path: Path) -> None:
    assert StoreConfig().write_behind is False
    assert StoreConfig.from_options(cache_dir=str(tmp_path), cache_write_behind=True).write_behind is True
    assert "writer thread" in (StoreConfig.model_fields["write_behind"].description or "")
    behind = open_store(StoreConfig(dir=str(tmp_path / "a"), write_behind=True))
    assert isinstance(behind, TieredPrefixStore) and isinstance(behind.tiers[-1], WriteBehindStore)
    in_place = open_store(StoreConfig(dir=str(tmp_path / "b"), memory_limit=0))
    assert isinstance(in_place, DiskPrefixStore)
    behind.close()
    in_place.close()


def test_the_cli_has_a_write_behind_flag(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_engine_options(parser, store_required=False)
    flagged = store_config(parser.parse_args(["--cache-dir", str(tmp_path), "--cache-write-behind"]))
    plain = store_config(parser.parse_args(["--cache-dir", str(tmp_path)]))
    assert (flagged.write_behind, plain.write_behind) == (True, False)
    assert flagged.dir == plain.dir == str(tmp_path)


def test_entries_written_behind_are_readable_after_a_flush(tmp_path: Path) -> None:
    store = open_store(StoreConfig(dir=str(tmp_path), storage="bfloat16", write_behind=True))
    originals = {f"k{seed}": entry_for(seed, shape=(2, 2, 64, 32), dtype="bfloat16") for seed in range(5)}
    for key, entry in originals.items():
        store.put(key, entry)
    assert store.flush(timeout=60)
    fresh = DiskPrefixStore(tmp_path, storage="bfloat16")  # another reader of the directory
    assert [same(fresh.get(key), entry) for key, entry in originals.items()] == [True] * 5
    assert fresh.verify() == (5, 0)
    store.close()
    fresh.close()


def test_a_failed_write_behind_is_a_warning_never_a_damaged_entry(tmp_path: Path) -> None:
    store = open_store(StoreConfig(dir=str(tmp_path), write_behind=True, memory_limit=0))
    assert isinstance(store, WriteBehindStore)
    good = entry_for(1)
    bad_shape = PrefixEntry(keys=torch.ones(1, 1, 4, 8), values=torch.ones(1, 1, 5, 8), length=4, next_position=0)
    nan = entry_for(2)
    nan.keys[0, 0, 0, 0] = float("nan")
    with pytest.warns(RuntimeWarning) as caught:
        store.put("bad shape", bad_shape)  # the inner store raises on the writer thread
        store.put("nan", nan)  # the inner store refuses to keep it
        store.put("good", good)
        assert store.flush(timeout=60)
    messages = " ".join(str(w.message) for w in caught)
    assert "bad shape" in messages and "cannot be stored" in messages
    assert store.stats.write_failures == 1 and store.stats.unstorable == 1
    assert "bad shape" not in store and "nan" not in store and store.get("nan") is None
    store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading back warns of nothing: no row is damaged
        fresh = DiskPrefixStore(tmp_path)
        assert same(fresh.get("good"), good) and fresh.get("bad shape") is None
        assert fresh.verify() == (1, 0) and len(fresh) == 1
        fresh.close()


def outcomes(report) -> list[tuple[str, str | None, int]]:  # type: ignore[no-untyped-def]
    return [(o.status, o.key, o.bytes) for o in report]


def test_precache_reports_the_same_with_and_without_the_writer_thread(tiny4_path, tmp_path: Path) -> None:
    docs = documents()
    reports = {}
    for behind in (False, True):
        directory = tmp_path / f"behind-{behind}"
        engine = MiniReranker.from_pretrained(
            tiny4_path, config="paper", store=StoreConfig(dir=str(directory), write_behind=behind)
        )
        assert isinstance(engine.store, TieredPrefixStore)
        assert isinstance(engine.store.tiers[-1], WriteBehindStore) is behind
        first = engine.precache(docs, progress=False)
        again = engine.precache(docs, progress=False)
        reports[behind] = (outcomes(first), outcomes(again))
        reader = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=directory)
        assert all(reader.store.get(key) is not None for _, key, _ in outcomes(first))  # type: ignore[arg-type]
        engine.store.close()
    assert reports[True] == reports[False]
    assert [status for status, _, _ in reports[True][0]] == ["stored"] * len(docs)
    assert [status for status, _, _ in reports[True][1]] == ["present"] * len(docs)


def test_precache_with_write_behind_counts_only_entries_that_were_written(tiny4_path, tmp_path: Path) -> None:
    """A directory too small for any entry keeps none: the report says so, with the writer thread or without."""
    docs = documents(2)
    reports = []
    for behind in (False, True):
        settings = StoreConfig(dir=str(tmp_path / f"small-{behind}"), size_limit=1024, write_behind=behind)
        engine = MiniReranker.from_pretrained(tiny4_path, config="paper", store=settings)
        report = engine.precache(docs, progress=False)
        assert (report.stored, report.skipped) == (0, len(docs))
        reports.append([(o.status, o.key) for o in report])
        engine.store.close()
    assert reports[0] == reports[1]


def test_closing_the_reranker_writes_what_is_queued(tiny4_path, tmp_path: Path) -> None:
    docs = documents(2)
    settings = StoreConfig(dir=str(tmp_path), write_behind=True)
    with MiniReranker.from_pretrained(tiny4_path, config="paper", store=settings) as engine:
        behind = engine.store.tiers[-1]  # type: ignore[attr-defined]
        assert isinstance(behind, WriteBehindStore)
        engine.score([(Query(text="a red circle"), doc) for doc in docs])  # a cold query queues its prefixes
    assert behind.pending == 0
    fresh = DiskPrefixStore(tmp_path, storage=behind.storage)  # type: ignore[arg-type]
    assert len(fresh) == len(docs) and fresh.verify() == (len(docs), 0)
