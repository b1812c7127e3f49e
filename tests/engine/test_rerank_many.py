"""Several requests in one plan (rerank_many), cancellation between batches, and skip covering whatever one
candidate raises."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
import torch

from minirerank_integrations import (
    CallCancelled,
    Candidate,
    CandidateError,
    InputError,
    MiniReranker,
    Query,
    RerankConfig,
    RerankRequest,
)


def _requests(images) -> list[RerankRequest]:
    pages = [Candidate(images=[im], id=f"p{i}") for i, im in enumerate(images)]
    texts = ["a red circle", "two blue squares", "a page title", "Paris"]
    out = []
    for i in range(16):
        candidates = [pages[i % 3], texts[i % 4], pages[(i + 1) % 3], f"note {i}"]
        out.append(RerankRequest(Query(text=f"query {i % 5}"), candidates, top_n=None if i % 2 else 3))
    return out


@pytest.mark.parametrize("config", ["paper", "dense"])
def test_a_request_amid_others_gets_what_it_gets_alone(tiny4_path, images, config):
    engine = MiniReranker.from_pretrained(tiny4_path, config=config)
    requests = _requests(images)
    target = RerankRequest("a red circle on the left", [Candidate(images=[images[0]]), "a red circle", "Paris"])
    alone = MiniReranker(engine.backbone, engine.config).rerank_many([target])[0]
    together = engine.rerank_many([*requests[:8], target, *requests[8:]])
    amid = together[8]
    assert [r.index for r in amid] == [r.index for r in alone]
    assert [r.score for r in amid] == pytest.approx([r.score for r in alone], abs=1e-6)
    for request, result in zip(requests, together[:8] + together[9:]):
        single = engine.rerank(request.query, request.candidates, top_n=request.top_n)
        assert [r.index for r in result] == [r.index for r in single]
        assert [r.score for r in result] == pytest.approx([r.score for r in single], abs=1e-6)


def test_requests_share_prefixes_across_requests(tiny4_path, images):
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    page = Candidate(images=[images[1]])
    engine.rerank_many([RerankRequest("first user", [page, "x"]), RerankRequest("second user", [page, "y"])])
    # The page is one prefix for both users; "x" and "y" are one each: three prefixes, two suffixes.
    assert engine.counters.prefix_computations == 3
    assert engine.counters.suffix_prebands == 2
    assert engine.counters.vision_encodings == 1


def test_a_bad_request_fails_alone_with_return_exceptions(tiny4_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    good = RerankRequest("query", ["a", "b"])
    bad_query = RerankRequest(Query(), ["a"])
    bad_candidate = RerankRequest("query", ["a", Candidate(images=["/no/such/file.png"])])
    results = engine.rerank_many([good, bad_query, bad_candidate], return_exceptions=True)
    assert len(results[0]) == 2
    assert isinstance(results[1], InputError) and "neither text nor images" in str(results[1])
    assert isinstance(results[2], CandidateError) and results[2].index == 1
    with pytest.raises(InputError, match="neither text nor images"):
        engine.rerank_many([good, bad_query])


class _Exploding:
    """An image source whose use raises something other than the project's errors."""

    def __fspath__(self) -> str:
        raise OverflowError("cannot convert float infinity to integer")


def test_skip_covers_whatever_one_candidate_raises(tiny4_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    candidates = ["fine", Candidate(images=[_Exploding()]), "also fine"]  # type: ignore[list-item]
    results = engine.rerank("query", candidates, on_error="skip")
    assert sorted(r.index for r in results) == [0, 2]
    assert [s.index for s in results.skipped] == [1] and "OverflowError" in results.skipped[0].error
    with pytest.raises(CandidateError, match="candidate 1.*OverflowError"):
        engine.rerank("query", candidates)
    engine.precache(candidates, progress=False, on_error="skip")  # the same rule for ingestion
    assert len(engine.store) == 2


async def test_a_cancelled_arerank_stops_between_batches(tiny4_path):
    config = RerankConfig.preset("paper", 4).model_copy(update={"batch_size": 1})
    engine = MiniReranker.from_pretrained(tiny4_path, config=config)
    candidates = [f"document number {i}" for i in range(60)]
    task = asyncio.create_task(engine.arerank("which document", candidates))
    while engine.counters.pair_passes == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = threading.Event()
    # The worker thread notices between batches; once it has, the engine is free for the next call.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not done.is_set():
        passes = engine.counters.pair_passes
        await asyncio.sleep(0.2)
        if engine.counters.pair_passes == passes:
            done.set()
    assert done.is_set()
    assert engine.counters.pair_passes < len(candidates)  # it stopped instead of scoring all 60
    assert len(await engine.arerank("which document", candidates[:3])) == 3


def test_batches_scored_on_several_threads_equal_one_thread_exactly(tiny4_path, images):
    """plan_logits scores a call's batches on several threads at once (the CPU cores torch's threads leave): each
    batch is computed as it is alone, so the logits are bit-equal to one thread's, cold and warm."""
    from minirerank_integrations.engine import execution

    paper = MiniReranker.from_pretrained(tiny4_path, config="paper")
    small = paper.config.model_copy(update={"batch_size": 2})  # many batches: several in flight at once
    pages = [Candidate(images=[im]) for im in images]
    pairs = [(Query(text=q), c) for q in ("a red circle", "two blue squares", "Paris") for c in [*pages, "a note"]]
    results = {}
    for workers in (1, 3, 1):  # the repeat of 1 runs warm: every prefix from the store
        engine = MiniReranker(paper.backbone, small)
        engine.store = paper.store
        sides = engine.prepare_pairs(pairs)
        logits = execution.plan_logits(engine.plan(sides), engine.encoder, engine.store, workers=workers)
        results.setdefault(workers, []).append(logits)
    cold_one, warm_one = results[1]
    assert torch.equal(results[3][0], cold_one) and torch.equal(warm_one, cold_one)
    assert execution.batch_workers(torch.device("meta")) == 1  # not the CPU: one stream of kernels
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # torch's threads use the cores: one batch at a time
        assert execution.batch_workers(torch.device("cpu")) == 1
        torch.set_num_threads(1)  # one thread each: a batch per core
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        assert execution.batch_workers(torch.device("cpu")) == min(cores, execution.MAX_BATCH_WORKERS)
    finally:
        torch.set_num_threads(threads)


def test_a_cancelled_call_with_batches_in_flight_raises_and_frees_its_threads(tiny4_path):
    from minirerank_integrations.engine import execution

    engine = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig.preset("paper", 4))
    config = engine.config.model_copy(update={"batch_size": 1})
    engine = MiniReranker(engine.backbone, config)
    sides = engine.prepare_pairs([("which document", f"document number {i}") for i in range(12)])
    cancelled = threading.Event()
    passes = iter(range(1000))

    def dropped() -> set[int]:
        if next(passes) == 3:  # asked before each batch: the call is abandoned after a few
            cancelled.set()
        return set()

    with pytest.raises(CallCancelled):
        execution.plan_logits(engine.plan(sides), engine.encoder, engine.store, cancelled, dropped, workers=2)
    assert engine.counters.pair_passes < 12
    assert len(engine.rerank("which document", ["a", "b"])) == 2  # nothing left running or locked


def test_a_plan_builds_each_side_once_and_keys_every_pair_as_alone(tiny4_path, images):
    """plan_call builds a prefix (and its store key) per distinct side and a suffix per distinct other side; each
    pair's row is still exactly the prefix key and suffix its own prompt gives."""
    from minirerank_integrations.engine.plan import segment_key

    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    queries = [Query(text=t) for t in ("a red circle", "two blue squares", "a red circle")]
    documents = [Candidate(images=[im]) for im in images] + [Candidate(text="Paris"), Candidate(images=[images[0]])]
    pairs = [(q, d) for q in queries for d in documents] + [(Query(images=[images[1]]), Candidate(text="Paris"))]
    sides = engine.prepare_pairs(pairs)
    plan = engine.plan(sides)
    for (q, d), row in zip(sides, plan.pair_rows):
        prefix, suffix = engine.segments(q, d)
        assert suffix is not None
        assert plan.rows[row] == (engine.prefix_key(prefix), segment_key(suffix))
    assert len(plan.rows) == len(documents) - 1 + len(documents) - 1 + 1  # repeats: a query, a page
