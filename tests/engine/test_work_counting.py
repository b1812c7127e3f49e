"""The fast path's plan, checked through the engine's own counters (``docs/design.md``, "The computation plan")."""

from __future__ import annotations

import threading

import pytest
import torch

import minirerank_integrations.engine.execution as execution
from minirerank_integrations import Candidate, MiniReranker, Query
from minirerank_integrations.store import MemoryPrefixStore


def test_text_query_runs_each_prefix_once_suffix_once_and_each_distinct_pair_once(tiny4_path, images):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    distinct = [Candidate(images=[im]) for im in images] + [Candidate(text="a page"), Candidate(text="Paris")]
    candidates = distinct + [Candidate(images=[images[0]]), Candidate(text="Paris")]  # two repeats
    results = reranker.rerank(Query(text="a red circle"), candidates)
    c = reranker.counters
    assert c.prefix_computations == len(distinct)
    assert c.prefix_hits == 0
    assert c.suffix_prebands == 1
    assert c.pair_passes == len(distinct)  # a repeated pair is one row of the plan, computed once
    assert c.single_passes == 0
    by_index = {r.index: r.score for r in results}
    assert by_index[len(distinct)] == by_index[0] and by_index[len(distinct) + 1] == by_index[len(distinct) - 1]

    # A second query reuses every prefix from the store and runs its own suffix once.
    c.reset()
    reranker.rerank(Query(text="two blue squares"), candidates)
    assert (c.prefix_computations, c.prefix_hits, c.suffix_prebands, c.pair_passes) == (
        0,
        len(distinct),
        1,
        len(distinct),
    )
    assert c.vision_encodings == 0  # cached prefixes need no vision encoder


def test_image_query_shares_one_prefix_across_text_candidates(tiny4_path, images):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    candidates = ["a red circle", "two blue squares", "a page title"]
    reranker.rerank(Query(images=[images[1]]), candidates)
    c = reranker.counters
    assert c.prefix_computations == 1  # the query image is the prefix
    assert c.suffix_prebands == len(candidates)  # each candidate's text is a distinct suffix
    assert c.pair_passes == len(candidates)


def test_dense_runs_one_whole_pass_per_distinct_pair(tiny4_path):
    reranker = MiniReranker.from_pretrained(tiny4_path, config="dense")
    results = reranker.rerank("query", ["a", "b", "c", "b"])
    assert reranker.counters.single_passes == 3
    assert reranker.counters.prefix_computations == 0
    assert {r.index: r.score for r in results}[1] == {r.index: r.score for r in results}[3]  # exactly


def test_small_batches_fetch_each_prefix_once_and_score_the_same(tiny4_path, images):
    """Entries are fetched per batch and dropped after their last pair: a repeat in a later batch still
    reuses the entry in hand, and scores equal one big batch."""
    paper = MiniReranker.from_pretrained(tiny4_path, config="paper")
    small = MiniReranker(paper.backbone, paper.config.model_copy(update={"batch_size": 2}))
    distinct = [Candidate(images=[im]) for im in images] + [Candidate(text="Paris")]
    candidates = [distinct[0], *distinct[1:], distinct[0], distinct[2]]  # repeats two batches apart
    big = paper.rerank(Query(text="a red circle"), candidates)
    got = small.rerank(Query(text="a red circle"), candidates)
    c = small.counters
    assert (c.prefix_computations, c.prefix_hits, c.pair_passes) == (len(distinct), 0, len(distinct))
    expected = {r.index: r.score for r in big}
    assert len(got) == len(candidates) and all(abs(r.score - expected[r.index]) <= 1e-6 for r in got)


class _RecordingStore(MemoryPrefixStore):
    """A real memory store that records which thread asked for which keys."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[tuple[str, list[str]]] = []

    def get_many(self, keys):
        self.fetches.append((threading.current_thread().name, list(keys)))
        return super().get_many(keys)


def test_windows_after_the_first_are_read_ahead_on_a_reader_thread(tiny4_path):
    """A query over several fetch windows: each prefix is read once, every window after the first on the
    reader thread, and the scores equal those computed without any store."""
    store = _RecordingStore()
    cold = MiniReranker.from_pretrained(tiny4_path, config="paper")
    cold.store = store
    texts = [f"document {i}" for i in range(45)]
    # Prefixes repeated across windows under another query (another suffix, so another row): 77 pairs.
    pairs = [("which document", t) for t in texts] + [("which page", t) for t in [texts[3], texts[40], *texts[:30]]]
    window = max(cold.config.batch_size, execution.FETCH_WINDOW)
    assert len(pairs) > 2 * window  # at least three windows
    first = cold.score(pairs)
    assert cold.counters.prefix_computations == len(texts)

    store.fetches.clear()
    warm = MiniReranker(cold.backbone, cold.config, store=store)
    again = warm.score(pairs)
    assert again == first
    assert (warm.counters.prefix_computations, warm.counters.prefix_hits) == (0, len(texts))
    fetched = [k for _, keys in store.fetches for k in keys]
    assert len(fetched) == len(set(fetched)) == len(texts)  # each prefix read once, repeats held in hand
    threads = [name for name, keys in store.fetches if keys]
    assert len(threads) >= 2 and all(name.startswith("minirerank-prefetch") for name in threads)
    alone = MiniReranker(cold.backbone, cold.config)  # no store: every prefix computed in the call
    assert alone.score(pairs) == pytest.approx(first, abs=1e-6)


def _score_in_child(engine, pairs, results) -> None:
    torch.set_num_threads(1)  # no OpenMP team in the forked child: only the engine's own threads are exercised
    results.put(engine.score(pairs))


def test_a_forked_child_reads_ahead_and_scores_with_threads_of_its_own(tiny4_path):
    """The reader and scoring threads are kept for the process; a child forked after the parent used them has none
    of them, and still scores (with its own threads) what the parent scores."""
    import multiprocessing

    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    pairs = [("which document", f"document {i}") for i in range(3 * execution.FETCH_WINDOW)]  # three windows
    expected = engine.score(pairs)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_score_in_child, args=(engine, pairs, results))
    child.start()
    try:
        got = results.get(timeout=120)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert got == pytest.approx(expected, abs=1e-6)
