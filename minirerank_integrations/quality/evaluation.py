"""Ranking quality of a reranker on :class:`~minirerank_integrations.quality.data.RerankTask` lists, computed with ranx.

Metrics (ranx names): ``hit_rate@1`` (share of queries whose top candidate is relevant), ``ndcg@5`` and
``mrr@10``, per task family and over all queries, plus runtime. :func:`retention` divides a configuration's
metrics by those of the dense (unpruned, no early exit) configuration on the same tasks, and
:func:`retention_interval` gives its paired bootstrap confidence interval (scipy), so a retention measured on
a hundred queries is read with its uncertainty.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..engine.inputs import RerankResults
from ..errors import InputError

if TYPE_CHECKING:
    from ..engine.reranker import MiniReranker
    from .data.tasks import RerankTask

__all__ = ["METRICS", "OVERALL", "EvalReport", "evaluate", "evaluate_scores", "retention", "retention_interval"]

#: ranx metric names, in report order.
METRICS = ("hit_rate@1", "ndcg@5", "mrr@10")
#: Key of the all-families row in a report.
OVERALL = "overall"


@dataclass(frozen=True)
class EvalReport:
    """Metrics per family (and under ``"overall"``), query and pair counts, and runtime.

    ``metrics[family][metric]`` is the mean over that family's queries; ``"overall"`` is the mean over all
    queries (not over families). ``seconds`` is the wall time spent in ``rerank`` calls, ``None`` when the
    scores were given precomputed. ``task_digest`` identifies the task list, so reports on different tasks
    are not compared by mistake. ``per_query[family][metric][task id]`` holds each query's value.
    """

    metrics: dict[str, dict[str, float]]
    queries: dict[str, int]
    pairs: dict[str, int]
    seconds: dict[str, float] | None
    task_digest: str
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict, repr=False)

    @property
    def pairs_per_second(self) -> float | None:
        """Query-candidate pairs scored per second over all tasks, or ``None`` without timing."""
        if self.seconds is None or self.seconds[OVERALL] <= 0:
            return None
        return self.pairs[OVERALL] / self.seconds[OVERALL]

    def as_table(self) -> str:
        """A plain-text table: one row per family, then the overall row."""
        header = ["family", "queries", *METRICS, "seconds", "pairs/s"]
        rows = [header]
        for family in [*sorted(k for k in self.metrics if k != OVERALL), OVERALL]:
            seconds = self.seconds[family] if self.seconds is not None else None
            rate = self.pairs[family] / seconds if seconds else None
            rows.append(
                [
                    family,
                    str(self.queries[family]),
                    *(f"{self.metrics[family][m]:.4f}" for m in METRICS),
                    f"{seconds:.2f}" if seconds is not None else "-",
                    f"{rate:.1f}" if rate is not None else "-",
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def evaluate(reranker: MiniReranker, tasks: Sequence[RerankTask], *, progress: bool = False) -> EvalReport:
    """Rerank every task's candidates with ``reranker`` and score the rankings.

    Only the ``rerank`` calls are timed. A candidate the engine cannot score raises (``on_error="raise"``).
    """
    iterator = tasks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(tasks, desc="evaluating", unit="query")
    scores: list[list[float]] = []
    seconds: dict[str, float] = {}
    for task in iterator:
        start = time.perf_counter()
        results = reranker.rerank(task.query, task.candidates)
        seconds[task.family] = seconds.get(task.family, 0.0) + time.perf_counter() - start
        scores.append(_scores_by_index(results, len(task.candidates), task.id))
    seconds[OVERALL] = sum(seconds.values())
    return evaluate_scores(tasks, scores, seconds=seconds)


def evaluate_scores(
    tasks: Sequence[RerankTask],
    scores: Sequence[Sequence[float]],
    *,
    seconds: Mapping[str, float] | None = None,
) -> EvalReport:
    """Score precomputed rankings: ``scores[i][j]`` is the score of ``tasks[i].candidates[j]`` (higher is better).

    Equal scores rank in input order, as the engine does. ``seconds`` (per family and ``"overall"``) is copied
    into the report when given.

    Raises:
        InputError: no tasks, a score list of the wrong length, a task without a relevant candidate, or
            duplicate task or candidate ids.
    """
    if not tasks:
        raise InputError("no tasks to evaluate; pass at least one RerankTask")
    if len(scores) != len(tasks):
        raise InputError(f"{len(scores)} score lists for {len(tasks)} tasks; give one list per task")
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    run: dict[str, dict[str, dict[str, float]]] = {}
    pairs: dict[str, int] = {}
    seen: set[str] = set()
    for task, task_scores in zip(tasks, scores):
        if task.id in seen:
            raise InputError(f"task id {task.id!r} appears twice; task ids must be unique")
        seen.add(task.id)
        n = len(task.candidates)
        if len(task_scores) != n:
            raise InputError(f"task {task.id!r}: {len(task_scores)} scores for {n} candidates")
        if not task.positives:
            raise InputError(f"task {task.id!r} has no relevant candidate; its ranking metrics are undefined")
        keys = [task.candidate_key(j) for j in range(n)]
        if len(set(keys)) != n:
            raise InputError(f"task {task.id!r}: candidate ids are not unique; give each candidate its own id")
        # ranx breaks ties in its own order; handing it n, n-1, ..., 1 by (score desc, index asc) makes the
        # ranking exactly the engine's, where equal scores keep input order.
        order = sorted(range(n), key=lambda j: (-float(task_scores[j]), j))
        ranked = {keys[j]: float(n - rank) for rank, j in enumerate(order)}
        relevant = {keys[j]: task.relevance[j] for j in task.positives}
        for group in (task.family, OVERALL):
            qrels.setdefault(group, {})[task.id] = relevant
            run.setdefault(group, {})[task.id] = ranked
            pairs[group] = pairs.get(group, 0) + n
    per_query = {group: _ranx_per_query(qrels[group], run[group]) for group in qrels}
    metrics = {
        group: {metric: sum(values.values()) / len(values) for metric, values in per_query[group].items()}
        for group in per_query
    }
    return EvalReport(
        metrics=metrics,
        queries={group: len(qrels[group]) for group in qrels},
        pairs=pairs,
        seconds=dict(seconds) if seconds is not None else None,
        task_digest=hashlib.sha256("\n".join(task.id for task in tasks).encode()).hexdigest(),
        per_query=per_query,
    )


def retention(report: EvalReport, dense_report: EvalReport) -> dict[str, dict[str, float]]:
    """``metric(report) / metric(dense_report)`` per family (and ``"overall"``) and metric.

    A ratio whose dense metric is 0 is ``nan`` (undefined).

    Raises:
        InputError: the two reports were computed on different task lists.
    """
    if report.task_digest != dense_report.task_digest:
        raise InputError(
            "the reports were computed on different task lists; evaluate both configurations on the same tasks"
        )
    return {
        group: {
            metric: (values[metric] / dense_report.metrics[group][metric])
            if dense_report.metrics[group][metric] != 0
            else float("nan")
            for metric in METRICS
        }
        for group, values in report.metrics.items()
    }


def retention_interval(
    report: EvalReport,
    dense_report: EvalReport,
    group: str = OVERALL,
    metric: str = "hit_rate@1",
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired bootstrap confidence interval of ``retention(report, dense_report)[group][metric]``.

    Queries are resampled with replacement, the same queries in both reports (``scipy.stats.bootstrap``,
    percentile method, seeded), and the ratio of the two means is recomputed on each resample. ``(nan, nan)``
    when the dense metric is 0.

    Raises:
        InputError: different task lists, or a group or metric the reports do not hold.
    """
    import numpy as np
    from scipy.stats import bootstrap

    if report.task_digest != dense_report.task_digest:
        raise InputError(
            "the reports were computed on different task lists; evaluate both configurations on the same tasks"
        )
    try:
        values, dense_values = report.per_query[group][metric], dense_report.per_query[group][metric]
    except KeyError:
        raise InputError(f"no per-query {metric!r} values for {group!r} in these reports") from None
    ids = sorted(values)
    x = np.array([values[i] for i in ids])
    y = np.array([dense_values[i] for i in ids])
    if y.mean() == 0:
        return float("nan"), float("nan")
    if np.array_equal(x, y):  # every resample gives exactly 1
        return 1.0, 1.0

    def ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return a.mean(axis=axis) / b.mean(axis=axis)

    result = bootstrap(
        (x, y),
        ratio,
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# --- internals -------------------------------------------------------------------------------------------


def _scores_by_index(results: RerankResults, n: int, task_id: str) -> list[float]:
    scores: list[float | None] = [None] * n
    for result in results:
        scores[result.index] = result.score
    missing = [j for j, score in enumerate(scores) if score is None]
    if missing:
        raise InputError(f"task {task_id!r}: the reranker returned no score for candidates {missing}")
    return [float(score) for score in scores if score is not None]


def _ranx_per_query(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    # ranx pulls in numba (seconds to import, a one-time JIT compile); load it only when evaluating.
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    with warnings.catch_warnings():
        # ranx's numba kernels warn about an internal uint64 -> int64 cast on every call; it does not affect results.
        warnings.filterwarnings("ignore", message=".*unsafe cast from uint64 to int64.*")
        ranx_qrels = Qrels(qrels)
        values = ranx_evaluate(ranx_qrels, Run(run), list(METRICS), return_mean=False)
    ids = list(ranx_qrels.keys())  # the order of ranx's per-query arrays
    return {metric: dict(zip(ids, map(float, values[metric]))) for metric in METRICS}
