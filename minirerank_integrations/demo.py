"""The README's main job: rerank generated test-split tasks (scenes, screenshots, captions) with the embedded
demo model, printing the fast configuration's ranking next to the dense baseline's scores.

The demo model is trained on synthetic data only (see :mod:`minirerank_integrations.demo_model`); pass
another checkpoint with ``model=`` to see the same pipeline on it.
"""

from __future__ import annotations

import time
from pathlib import Path

from .demo_model import DEMO_MODEL
from .engine.inputs import Query
from .engine.reranker import MiniReranker
from .quality.data import generate, query_text
from .quality.data.tasks import RerankTask

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


def run_demo(model: str | Path | None = None, *, queries: list[str] | None = None) -> str:
    """Rerank demo tasks with the fast configuration (the checkpoint's own, else ``paper``) and ``dense``; return
    a printable report.

    ``queries``: free-text queries, reranked against the candidates of the generated scene and page tasks.
    """
    model = model or DEMO_MODEL
    lines = [f"model: {model}"]
    if str(model) == DEMO_MODEL:
        lines.append("       (the embedded demo: 1.9M parameters trained from scratch on synthetic scenes and pages)")
    fast = MiniReranker.from_pretrained(model)  # the configuration saved with the checkpoint, else paper
    dense = MiniReranker.from_pretrained(model, config="dense")
    cfg = fast.config
    lines.append(
        f"fast configuration: exit after {cfg.exit_layer}/{fast.num_layers} layers, band {list(cfg.band or ())}, "
        f"keep {cfg.keep_ratio:.0%} of visual tokens"
    )
    tasks = demo_tasks()
    meta = {id(c): (t, i) for t in tasks for i, c in enumerate(t.candidates)}  # candidate -> (task, index)
    if queries:
        pool = [c for t in tasks if t.family != "image_to_text" for c in t.candidates]
        jobs = [(Query(text=q), pool, None) for q in queries]
    else:
        jobs = [(t.query, t.candidates, t) for t in tasks]

    top_hits = 0
    for query, candidates, task in jobs:
        started = time.perf_counter()
        ranked = fast.rerank(query, candidates)
        fast_s = time.perf_counter() - started
        started = time.perf_counter()
        baseline = {r.index: r.score for r in dense.rerank(query, candidates)}
        dense_s = time.perf_counter() - started
        shown_query = describe(task) if task is not None else repr(query.text)
        family = f"{task.family}, " if task is not None else ""
        lines.append(
            f"\nquery: {shown_query}   ({family}{len(candidates)} candidates; "
            f"fast {fast_s * 1000:.0f} ms, dense {dense_s * 1000:.0f} ms)"
        )
        lines.append(f"  {'rank':>4}  {'fast':>6} {'dense':>6}  candidate")
        for rank, result in enumerate(ranked[:_SHOWN], 1):
            owner, index = meta[id(candidates[result.index])]
            relevant = " (relevant)" if task is not None and task.relevance[result.index] > 0 else ""
            lines.append(
                f"  {rank:>4}  {result.score:6.3f} {baseline[result.index]:6.3f}  {describe(owner, index)}{relevant}"
            )
        if task is not None:
            top_hits += task.relevance[ranked[0].index] > 0
    if not queries:
        lines.append(f"\nfast configuration's top-1 is relevant on {top_hits} of {len(jobs)} queries")
    c = fast.counters
    lines.append(
        f"work (fast): {c.prefix_computations} prefixes computed, {c.prefix_hits} reused from the store, "
        f"{c.suffix_prebands} shared suffix passes, {c.pair_passes} per-pair passes"
    )
    return "\n".join(lines)
