"""Entries bound to their key and storage: swapped rows are refused and recomputed, an int8 entry is never
served to a float32 engine, and a prefix a storage cannot hold is served but not stored."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
import torch
from hostile import QUERY, A, docs, rows, scores

from minirerank_integrations import (
    MiniReranker,
)
from minirerank_integrations.store import DiskPrefixStore, PrefixEntry


def test_swapped_rows_are_rejected_and_recomputed(tiny4_path, tmp_path):
    directory = tmp_path / "store"
    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory)
    two = docs()[:2]
    expected = scores(engine.rerank(QUERY, two))
    (r1, _, m1, f1, v1), (r2, _, m2, f2, v2) = rows(directory)
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        update = "UPDATE Cache SET mode = ?, filename = ?, value = ? WHERE rowid = ?"
        con.execute(update, (m2, f2, v2, r1))
        con.execute(update, (m1, f1, v1, r2))
        con.commit()

    again = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory)
    assert scores(again.rerank(QUERY, two)) == pytest.approx(expected, abs=1e-6)
    assert again.store.stats.rejected == 2 and again.counters.prefix_hits == 0
    assert scores(again.rerank(QUERY, two)) == pytest.approx(expected, abs=1e-6)  # recomputed and stored back
    assert again.counters.prefix_hits == 2


def test_verify_drops_a_swapped_row(tmp_path):
    directory = tmp_path / "store"
    entry = PrefixEntry(keys=torch.ones(1, 1, 4, 8), values=torch.zeros(1, 1, 4, 8), length=4, next_position=4)
    other = PrefixEntry(keys=torch.zeros(1, 1, 4, 8), values=torch.ones(1, 1, 4, 8), length=4, next_position=4)
    with DiskPrefixStore(directory) as store:
        store.put("a", entry)
        store.put("b", other)
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        con.execute("UPDATE Cache SET key = 'c.float32' WHERE key = 'a.float32'")  # a renamed row (key.precision)
        con.commit()
    with DiskPrefixStore(directory) as store:
        assert store.verify() == (1, 1)
        assert store.get("c") is None and store.get("b") is not None


def test_an_int8_entry_is_never_served_to_a_float32_engine(tiny4_path, tmp_path):
    directory = tmp_path / "store"
    exact = scores(MiniReranker.from_pretrained(tiny4_path, config=A).rerank(QUERY, docs()))
    coarse = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory, cache_storage="int8")
    assert scores(coarse.rerank(QUERY, docs())) == exact  # computed, then stored as int8
    assert scores(coarse.rerank(QUERY, docs())) != exact  # read back: int8 is lossy, the test can tell them apart

    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory)  # float32 storage
    assert scores(engine.rerank(QUERY, docs())) == exact
    # Precision is part of the row: the int8 rows are neither served nor deleted, they stay beside the float32 ones.
    assert engine.counters.prefix_hits == 0 and engine.store.stats.rejected == 0
    again = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory, cache_storage="int8")
    assert scores(again.rerank(QUERY, docs())) != exact and again.counters.prefix_hits == 3


def test_a_prefix_float16_cannot_hold_is_served_not_stored(tiny4_path, tmp_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=tmp_path / "store", cache_storage="float16")
    with torch.no_grad():
        for layer in engine.backbone.layers:
            layer.self_attn.v_proj.weight.mul_(1e6)  # values far beyond float16's 65504
    with pytest.warns(RuntimeWarning, match="cannot be stored as float16") as caught:
        results = engine.rerank(QUERY, docs())
    assert len(results) == 3
    assert sum("cannot be stored" in str(w.message) for w in caught) == 1  # one warning for the store
    assert engine.store.stats.unstorable == 3 and len(engine.store) == 0
