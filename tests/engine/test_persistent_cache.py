"""The engine on a persistent prefix store: reuse across instances and processes, exact keys, faults."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest
from pictures import drawn_image
from subprocesses import child_env

from minirerank_integrations import Candidate, MiniReranker, Query, RerankConfig
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint


def documents(n: int = 4, offset: int = 0) -> list[Candidate]:
    sizes = [(64, 64), (96, 64), (128, 96), (64, 128)]
    docs = [
        Candidate(images=[drawn_image(*sizes[i % 4], seed=100 + offset + i)], id=f"d{offset + i}") for i in range(n)
    ]
    return docs + [Candidate(text=f"text document {offset}")]


QUERY = Query(text="a red circle on the left")


def test_hits_equal_misses_and_the_reference(tiny4_path, tmp_path):
    docs = documents()
    first = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=tmp_path / "cache")
    computed = first.score([(QUERY, d) for d in docs])
    assert first.counters.prefix_computations == len(docs)
    first.store.close()

    second = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=tmp_path / "cache")
    cached = second.score([(QUERY, d) for d in docs])
    assert (second.counters.prefix_computations, second.counters.prefix_hits) == (0, len(docs))
    assert second.store.stats.hits == len(docs)
    assert cached == pytest.approx(computed, abs=1e-6)
    assert cached == pytest.approx(second.reference_scores([(QUERY, d) for d in docs]), abs=1e-4)


_CHILD = textwrap.dedent(
    """
    import json
    from test_persistent_cache import QUERY, documents
    from minirerank_integrations import MiniReranker
    reranker = MiniReranker.from_pretrained({model!r}, config="paper", cache_dir={cache!r})
    docs = documents({n}, {offset})
    scores = reranker.score([(QUERY, d) for d in docs])
    print(json.dumps({{"scores": scores, "hits": reranker.counters.prefix_hits,
                      "computed": reranker.counters.prefix_computations}}))
    """
)


def _child(model, cache, n=4, offset=0) -> subprocess.Popen:
    code = _CHILD.format(model=str(model), cache=str(cache), n=n, offset=offset)
    return subprocess.Popen(
        [sys.executable, "-c", code], env=child_env(__file__), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_a_fresh_process_reuses_the_directory(tiny4_path, tmp_path):
    cache = tmp_path / "cache"
    here = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=cache)
    expected = here.score([(QUERY, d) for d in documents()])
    here.store.close()
    result = _result(_child(tiny4_path, cache))
    assert (result["hits"], result["computed"]) == (len(expected), 0)
    assert result["scores"] == pytest.approx(expected, abs=1e-6)


def test_four_processes_share_one_directory(tiny4_path, tmp_path):
    cache = tmp_path / "cache"
    plain = MiniReranker.from_pretrained(tiny4_path, config="paper")
    jobs = [(4, 0), (4, 0), (4, 2), (3, 5)]  # shared documents and some new ones
    processes = [_child(tiny4_path, cache, n, offset) for n, offset in jobs]
    results = [_result(p) for p in processes]
    for (n, offset), result in zip(jobs, results):
        expected = plain.score([(QUERY, d) for d in documents(n, offset)])
        assert result["scores"] == pytest.approx(expected, abs=1e-6)
    again = _result(_child(tiny4_path, cache, 4, 0))
    assert again["computed"] == 0


def _keys_differ(tiny4_path, tmp_path, **changes) -> tuple[int, int]:
    cache = tmp_path / "cache"
    docs = documents()
    base = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=cache)
    base.score([(QUERY, d) for d in docs])
    base.store.close()
    model = changes.pop("model", tiny4_path)
    config = RerankConfig.preset("paper", 4, **changes) if changes else "paper"
    other = MiniReranker.from_pretrained(model, config=config, cache_dir=cache)
    other.score([(QUERY, d) for d in docs])
    return other.counters.prefix_hits, other.counters.prefix_computations


def test_other_weights_band_or_keep_ratio_miss(tiny4_path, tmp_path):
    n = len(documents())
    assert _keys_differ(tiny4_path, tmp_path / "same") == (n, 0)
    assert _keys_differ(tiny4_path, tmp_path / "band", band=(0, 2)) == (0, n)
    assert _keys_differ(tiny4_path, tmp_path / "keep", keep_ratio=0.25) == (0, n)
    other = build_tiny_checkpoint(tmp_path / "other-weights", num_layers=4, seed=7)
    assert _keys_differ(tiny4_path, tmp_path / "weights", model=other) == (0, n)


def test_changed_pixels_miss(tiny4_path, tmp_path):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=tmp_path / "cache")
    image = drawn_image(64, 64, seed=5)
    reranker.rerank(QUERY, [Candidate(images=[image])])
    changed = image.copy()
    changed.putpixel((0, 0), (1, 2, 3))
    reranker.counters.reset()
    reranker.rerank(QUERY, [Candidate(images=[image]), Candidate(images=[changed])])
    assert (reranker.counters.prefix_hits, reranker.counters.prefix_computations) == (1, 1)


def test_unusable_cache_directory_still_reranks_with_one_warning(tiny4_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reranker = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=blocker / "cache")
        first = reranker.rerank(QUERY, documents())
        second = reranker.rerank(QUERY, documents())
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in runtime]
    plain = MiniReranker.from_pretrained(tiny4_path, config="paper").rerank(QUERY, documents())
    assert [r.score for r in first] == pytest.approx([r.score for r in plain], abs=1e-6)
    assert [r.score for r in second] == pytest.approx([r.score for r in plain], abs=1e-6)


def test_precache_fills_the_store_and_resumes(tiny4_path, tmp_path):
    docs = documents()
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=tmp_path / "cache")
    first = reranker.precache(docs[:2], progress=False)
    assert [(o.index, o.id, o.status) for o in first] == [(0, docs[0].id, "stored"), (1, docs[1].id, "stored")]
    assert all(o.bytes > 0 and o.key is not None for o in first)
    report = reranker.precache(docs, progress=True)
    assert [o.status for o in report] == ["present"] * 2 + ["stored"] * (len(docs) - 2)
    assert (report.stored, report.present, report.skipped) == (len(docs) - 2, 2, 0)
    assert [o.key for o in report][:2] == [o.key for o in first]  # resumed: the same keys, found present
    reranker.counters.reset()
    reranker.rerank(QUERY, docs)
    assert (reranker.counters.prefix_hits, reranker.counters.prefix_computations) == (len(docs), 0)


@pytest.mark.parametrize(("storage", "bound"), [("float16", 1e-4), ("bfloat16", 1e-3), ("int8", 2e-3)])
def test_reduced_precision_storage_stays_within_its_documented_bound(tiny8_path, tmp_path, storage, bound):
    docs = documents(4) + documents(4, offset=10)
    pairs = [(QUERY, d) for d in docs]
    exact = MiniReranker.from_pretrained(tiny8_path, config="paper").score(pairs)
    writer = MiniReranker.from_pretrained(
        tiny8_path, config="paper", cache_dir=tmp_path / storage, cache_storage=storage
    )
    writer.score(pairs)
    writer.store.close()
    reader = MiniReranker.from_pretrained(
        tiny8_path, config="paper", cache_dir=tmp_path / storage, cache_storage=storage
    )
    lossy = reader.score(pairs)
    assert reader.counters.prefix_hits == len(docs)
    deviation = max(abs(a - b) for a, b in zip(exact, lossy))
    assert deviation <= bound


def test_corrupt_entries_are_dropped_recomputed_and_counted(tiny4_path, tmp_path):
    import sqlite3

    cache = tmp_path / "cache"
    docs = documents()
    first = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=cache)
    expected = first.score([(QUERY, d) for d in docs])
    first.store.close()
    with sqlite3.connect(cache / "cache.db") as db:  # flip one byte in the middle of every stored value
        rows = db.execute("SELECT rowid, value FROM Cache WHERE value IS NOT NULL").fetchall()
        for rowid, value in rows:
            damaged = bytearray(value)
            damaged[len(damaged) // 2] ^= 0xFF
            db.execute("UPDATE Cache SET value = ? WHERE rowid = ?", (bytes(damaged), rowid))
    assert len(rows) == len(docs)

    second = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_dir=cache)
    scores = second.score([(QUERY, d) for d in docs])
    assert scores == pytest.approx(expected, abs=1e-6)
    assert second.store.stats.rejected == len(docs)
    assert second.counters.prefix_computations == len(docs)
    second.counters.reset()
    assert second.score([(QUERY, d) for d in docs]) == pytest.approx(expected, abs=1e-6)
    assert second.counters.prefix_hits == len(docs)  # the recomputed entries were stored again


def test_precache_skips_bad_documents_on_request(tiny4_path, tmp_path):
    from minirerank_integrations import CandidateError

    docs = [*documents(2), Candidate(images=[str(tmp_path / "missing.png")], id="bad")]
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    with pytest.raises(CandidateError, match="missing.png"):
        reranker.precache(docs, progress=False)
    report = reranker.precache(docs, progress=False, on_error="skip")
    # The good ones were stored before the error; the bad one is skipped with its reason and error.
    assert [o.status for o in report] == ["present", "present", "present", "skipped"]
    bad = report[3]
    assert (bad.index, bad.id, bad.key, bad.bytes) == (3, "bad", None, 0)
    assert "missing.png" in bad.reason and isinstance(bad.error, CandidateError) and bad.error.index == 3
    fresh = MiniReranker.from_pretrained(tiny4_path, config="paper")
    report = fresh.precache(docs, progress=False, on_error="skip")
    assert (report.stored, report.present, report.skipped) == (len(docs) - 1, 0, 1)


def test_precache_reports_an_entry_the_store_did_not_keep(tiny4_path):
    from minirerank_integrations.store import MemoryPrefixStore

    docs = documents(2)
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    sizes = [o.bytes for o in reranker.precache(docs, progress=False)]
    # Room for the largest entry only: a larger one is refused, each one kept pushes out the one before it.
    reranker.store = MemoryPrefixStore(size_limit=max(sizes))
    report = reranker.precache(docs, progress=False)
    assert report.stored == 1 and report.present == 0 and report.skipped == len(docs) - 1
    kept = next(o for o in report if o.status == "stored")
    assert kept.key in reranker.store and kept.bytes == max(sizes)
    for lost in (o for o in report if o.status == "skipped"):
        assert lost.key not in reranker.store and lost.bytes == 0
        assert lost.reason.startswith("the prefix store did not keep the entry (MemoryPrefixStore")
