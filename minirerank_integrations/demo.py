"""The README's main job: rerank generated test-split tasks (scenes, screenshots, captions) with the embedded
demo model, the way a pipeline uses it: the documents are pre-cached first (as at ingestion), then each
query is reranked by the fast path and by the dense baseline, both timed, with the ranking, the relevance
marks and what the fast path reused.

The demo model is trained on synthetic data only (see :mod:`minirerank_integrations.demo_model`); pass
another checkpoint with ``model=`` to see the same pipeline on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from .demo_model import DEMO_MODEL
from .engine.counters import WorkCounters
from .engine.inputs import Candidate, Query
from .engine.reranker import MiniReranker
from .quality.data import generate, query_text
from .quality.data.tasks import RerankTask

T = TypeVar("T")

__all__ = ["demo_tasks", "describe", "run_demo"]

_SHOWN = 3  # candidates printed per query


def describe(task: RerankTask, index: int | None = None) -> str:
    """A one-line description of a task's query (``index`` None) or candidate, from its attributes."""
    item = task.query if index is None else task.candidates[index]
    if item.text:
        return repr(item.text)
    attributes = task.query_attributes if index is None else task.candidate_attributes[index]
    kind = "page" if task.family == "text_to_doc" else "picture"
    return f"[{kind}: {query_text(task.family, attributes)}]"


def demo_tasks(n_per_family: int = 1, seed: int = 7) -> list[RerankTask]:
    """A few test-split tasks of every family, 20 candidates each, 60% of the negatives hard."""
    return [
        task
        for family in ("text_to_image", "text_to_doc", "image_to_text")
        for task in generate(family, "test", n_per_family, seed=seed, candidates_per_query=20, hard_negative_share=0.6)
    ]


@dataclass(frozen=True)
class _Job:
    query: Query
    candidates: list[Candidate]
    task: RerankTask | None  # None for a free-text query over the pooled candidates


def run_demo(
    model: str | Path | None = None,
    *,
    queries: list[str] | None = None,
    write: Callable[[str], None] | None = None,
) -> str:
    """Pre-cache the demo documents, then rerank each query with the fast configuration (the checkpoint's own,
    else ``paper``) and with ``dense``; return the printable report.

    ``queries``: free-text queries, reranked against the candidates of the generated scene and page tasks.
    ``write``: called with each line as soon as it is known (the command line prints them as they come).
    """
    lines: list[str] = []

    def emit(line: str = "") -> None:
        lines.append(line)
        if write is not None:
            write(line)

    model = model or DEMO_MODEL
    emit(f"model: {model}")
    if str(model) == DEMO_MODEL:
        emit("       (the embedded demo: 1.9M parameters trained from scratch on synthetic scenes and pages)")
    fast = MiniReranker.from_pretrained(model)  # the configuration saved with the checkpoint, else paper
    dense = MiniReranker.from_pretrained(model, config="dense")
    cfg = fast.config
    exit_layer = cfg.exit_layer if cfg.exit_layer is not None else fast.num_layers  # resolved: always set
    emit(
        f"fast path: {cfg.format.replace('_', '-')}, exit after {cfg.exit_layer}/{fast.num_layers} layers, "
        f"band {_band(cfg.band)}, {cfg.keep_ratio:.0%} of visual tokens kept"
    )
    emit(f"dense baseline: the official query-first prompt, all {dense.num_layers} layers, every token")

    tasks = demo_tasks()
    meta = {id(c): (t, i) for t in tasks for i, c in enumerate(t.candidates)}  # candidate -> (task, index)
    documents = [c for t in tasks if t.family != "image_to_text" for c in t.candidates]  # the pictures and pages
    if queries:
        jobs = [_Job(Query(text=q), documents, None) for q in queries]
    else:
        jobs = [_Job(t.query, list(t.candidates), t) for t in tasks]

    started = time.perf_counter()
    report = fast.precache(documents, progress=False)
    emit(
        f"pre-cached {report.stored} document prefixes in {time.perf_counter() - started:.1f} s "
        "(once, as at ingestion; every text query below reuses them)"
    )
    _warm_up(fast, dense, documents[:2])

    fast.counters.reset()
    fast_total = dense_total = 0.0
    top_hits = {"fast": 0, "dense": 0}
    for number, job in enumerate(jobs, 1):
        before = _snapshot(fast.counters)
        fast_s, ranked = _timed(partial(fast.rerank, job.query, job.candidates))
        dense_s, dense_ranked = _timed(partial(dense.rerank, job.query, job.candidates))
        fast_total, dense_total = fast_total + fast_s, dense_total + dense_s
        baseline = {r.index: r.score for r in dense_ranked}
        task = job.task
        shown_query = describe(task) if task is not None else repr(job.query.text)
        family = f"{task.family}, " if task is not None else ""
        emit()
        emit(f"query {number}/{len(jobs)}: {shown_query}   ({family}{len(job.candidates)} candidates)")
        emit(f"  fast {fast_s * 1000:.0f} ms, dense {dense_s * 1000:.0f} ms: {_ratio(dense_s, fast_s)}")
        if fast_s >= dense_s:
            emit(f"  slower here because {_why_slower(job, fast.counters, before)}")
        emit(f"  {'rank':>4}  {'fast':>6} {'dense':>6}  candidate")
        for rank, result in enumerate(ranked[:_SHOWN], 1):
            owner, index = meta[id(job.candidates[result.index])]
            relevant = "  + relevant" if task is not None and task.relevance[result.index] > 0 else ""
            emit(f"  {rank:>4}  {result.score:6.3f} {baseline[result.index]:6.3f}  {describe(owner, index)}{relevant}")
        if task is not None:
            top_hits["fast"] += task.relevance[ranked[0].index] > 0
            top_hits["dense"] += task.relevance[dense_ranked[0].index] > 0

    emit()
    if not queries:
        emit(f"top-1 relevant on {top_hits['fast']} of {len(jobs)} queries (dense: {top_hits['dense']} of {len(jobs)})")
    emit(
        f"all queries: fast {fast_total * 1000:.0f} ms, dense {dense_total * 1000:.0f} ms: {_ratio(dense_total, fast_total)}"
    )
    c = fast.counters
    emit(
        f"reused: {c.prefix_hits} document prefixes read from the store, {c.prefix_computations} computed "
        f"(image queries' own); {c.suffix_prebands} distinct suffixes run below the band once each, "
        f"{c.pair_passes} per-pair passes through layers {cfg.band[0] if cfg.band else 0}..{exit_layer - 1}"
    )
    emit("(single timings on a busy CPU vary; `minirerank bench` measures cold and warm runs against dense)")
    return "\n".join(lines)


def _band(band: tuple[int, int] | None) -> str:
    return "none" if not band or band[0] == band[1] else f"layers [{band[0]}, {band[1]})"


def _warm_up(fast: MiniReranker, dense: MiniReranker, documents: list[Candidate]) -> None:
    """One untimed call on each path, so neither timing includes first-call allocations."""
    for reranker in (fast, dense):
        reranker.rerank("warm-up", documents)


def _timed(call: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _ratio(dense_s: float, fast_s: float) -> str:
    if fast_s <= 0:
        return "-"
    ratio = dense_s / fast_s
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def _snapshot(counters: WorkCounters) -> WorkCounters:
    return WorkCounters(**vars(counters))


def _why_slower(job: _Job, now: WorkCounters, before: WorkCounters) -> str:
    """One line on why the fast path lost on this query, from the work it did."""
    if now.prefix_computations > before.prefix_computations:
        return (
            "the query's picture is the prefix: it was encoded, ranked for pruning by the embedder and run "
            "for this query alone, while the short captions leave dense little to do on this 8-layer toy model"
        )
    return (
        "every prefix came from the store, so the time is per-call overhead (tokenizing, batching) that "
        "outweighs this tiny model's layers, or a busy CPU"
    )
