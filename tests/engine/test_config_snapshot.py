"""One configuration per call: a configuration changed while calls run never reaches them, and flips under
concurrent calls leave no entry computed under one configuration and served under another."""

from __future__ import annotations

import time

import pytest
from hostile import QUERY, A, B, docs, png, scores

from minirerank_integrations import (
    MiniReranker,
)
from minirerank_integrations.engine.inputs import Candidate


def test_a_config_change_during_a_call_does_not_reach_it(tiny4_path, tmp_path):
    reference_a = MiniReranker.from_pretrained(tiny4_path, config=A)
    expected_a = scores(reference_a.rerank(QUERY, docs()))
    expected_b = scores(MiniReranker.from_pretrained(tiny4_path, config=B).rerank(QUERY, docs()))
    assert expected_a != expected_b

    # The image fetcher runs inside the call, in its thread: it switches the configuration half-way.
    holder: dict[str, MiniReranker] = {}

    def switching_fetcher(url: str) -> bytes:
        holder["engine"].config = B
        return png(201)

    engine = MiniReranker.from_pretrained(
        tiny4_path, config=A, cache_dir=tmp_path / "store", image_fetcher=switching_fetcher
    )
    holder["engine"] = engine
    candidates = [docs()[0], Candidate(images=["https://example.org/d1.png"], id="d1"), docs()[2]]
    got = scores(engine.rerank(QUERY, candidates))
    assert got == pytest.approx(expected_a, abs=1e-5)  # all of A, nothing of B
    assert engine.config == B.resolve(4)  # the change itself took effect, for the next call

    # What the call stored is what its keys describe: a fresh process-like engine on A reads it back exactly.
    fresh = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=tmp_path / "store")
    assert scores(fresh.rerank(QUERY, docs())) == pytest.approx(expected_a, abs=1e-5)
    assert fresh.counters.prefix_hits == 3 and fresh.store.stats.rejected == 0


def test_config_flips_under_concurrent_calls_leave_no_poison(tiny4_path, tmp_path):
    import threading

    expected = {
        "A": scores(MiniReranker.from_pretrained(tiny4_path, config=A).rerank(QUERY, docs())),
        "B": scores(MiniReranker.from_pretrained(tiny4_path, config=B).rerank(QUERY, docs())),
    }
    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=tmp_path / "store")
    seen: list[list[float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        try:
            for _ in range(6):
                seen.append(scores(engine.rerank(QUERY, docs())))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def flipper() -> None:
        for i in range(200):
            if stop.is_set():
                return
            engine.config = B if i % 2 else A
            time.sleep(0.002)

    threads = [threading.Thread(target=worker) for _ in range(2)] + [threading.Thread(target=flipper)]
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join(timeout=300)
    stop.set()
    threads[2].join(timeout=30)
    assert not errors, errors
    for got in seen:
        assert got == pytest.approx(expected["A"], abs=1e-5) or got == pytest.approx(expected["B"], abs=1e-5)
    for name, config in (("A", A), ("B", B)):
        fresh = MiniReranker.from_pretrained(tiny4_path, config=config, cache_dir=tmp_path / "store")
        assert scores(fresh.rerank(QUERY, docs())) == pytest.approx(expected[name], abs=1e-5)
        assert fresh.store.stats.rejected == 0
