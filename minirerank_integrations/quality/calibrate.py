"""Choosing a configuration by measurement: evaluate a grid (exit layer, band, keep ratio, pruning guide) on
validation groups, against the dense teacher's ranking or the labels, and pick the cheapest configuration
that keeps a target retention of NDCG@5 and Hit@1 in every family.

Retention is metric(configuration) / metric(dense teacher) per family. Against the labels this is the usual
ratio; against the teacher's ranking the reference relevance is the teacher's own order (its first candidate
relevant for Hit@1, its first five graded 5..1 for NDCG@5), so the dense teacher scores 1.0 and a
configuration's retention is its agreement with the teacher.

Cost comes from :class:`Timing` (seconds per pair and per new document on this device) through
:func:`configuration_cost`, a small function so that measured numbers from elsewhere (a benchmark runner) can
replace the ones :func:`measure_timing` takes here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.config import RerankConfig
from ..engine.reranker import MiniReranker
from ..errors import ConfigError, InputError
from .data.tasks import RerankTask
from .evaluation import OVERALL, EvalReport, evaluate_scores

__all__ = [
    "CalibrationResult",
    "Candidate",
    "Timing",
    "calibrate",
    "configuration_cost",
    "default_grid",
    "describe",
    "measure_timing",
    "plot_frontier",
]

logger = logging.getLogger(__name__)

METRICS = ("hit_rate@1", "ndcg@5")


@dataclass(frozen=True)
class Timing:
    """Seconds one configuration spends per scored pair, and per document seen for the first time (its
    prefix and pruning work, which a prefix store then serves)."""

    per_pair_s: float
    per_document_s: float


def configuration_cost(timing: Timing, *, document_reuse: float = 0.0) -> float:
    """Expected seconds per candidate: every pair's own work, plus a new document's work for the share
    (1 - ``document_reuse``) of candidates not already in the prefix store."""
    if not 0.0 <= document_reuse <= 1.0:
        raise InputError(f"document_reuse must be in [0, 1], got {document_reuse}")
    return timing.per_pair_s + (1.0 - document_reuse) * timing.per_document_s


def _rerank_all(reranker: MiniReranker, tasks: Sequence[RerankTask]) -> tuple[list[list[float]], list[float]]:
    """Scores by candidate index, and the seconds each task's rerank call took."""
    scores, seconds = [], []
    for task in tasks:
        started = time.perf_counter()
        results = reranker.rerank(task.query, task.candidates)
        seconds.append(time.perf_counter() - started)
        by_index = [0.0] * len(task.candidates)
        for result in results:
            by_index[result.index] = result.score
        scores.append(by_index)
    return scores, seconds


def measure_timing(
    reranker: MiniReranker, tasks: Sequence[RerankTask], *, warm_tasks: int = 30
) -> tuple[Timing, list[list[float]]]:
    """Time ``reranker`` (fresh: empty prefix store, no pruning importances) on ``tasks`` from cold, then the first
    ``warm_tasks`` of them again warm (every document's work cached); returns the :class:`Timing` and the
    cold run's scores.

    On those tasks: per pair = warm seconds / pairs; per document = (cold - warm seconds) / documents,
    floored at 0 (the query-first prompt caches nothing, so its two runs differ by noise only).
    """
    store = reranker.store  # the memory store is Sized; another counts what it was given
    held = len(store) if isinstance(store, Sized) else store.stats.writes
    if held or reranker.encoder.cached_importances:
        raise InputError("measure_timing needs a fresh reranker: its prefix store or pruning importances hold work")
    scores, cold = _rerank_all(reranker, tasks)
    timed = list(tasks[: max(1, warm_tasks)])
    _, warm = _rerank_all(reranker, timed)
    pairs = sum(len(t.candidates) for t in timed)
    documents = len({(c.text, tuple(map(str, c.images))) for t in timed for c in t.candidates})
    cold_s, warm_s = sum(cold[: len(timed)]), sum(warm)
    return Timing(per_pair_s=warm_s / pairs, per_document_s=max(0.0, cold_s - warm_s) / max(1, documents)), scores


def default_grid(depth: int) -> list[RerankConfig]:
    """Exit at 1/2, 3/4 and all of the depth; the query-first prompt (no band), vision-first with full
    interaction, an early one-layer band and the paper preset's band; keep all or half of the visual tokens,
    embedder-guided. Configurations equal after resolution appear once."""
    exits = sorted({max(1, round(depth * f)) for f in (0.5, 0.75, 1.0)})
    preset_band = RerankConfig.preset("paper", depth).band
    early = max(1, round(depth / 8))
    return grid(depth, exits=exits, bands=[None, "full", (0, early), preset_band], keeps=[1.0, 0.5])


def grid(
    depth: int,
    *,
    exits: Sequence[int],
    bands: Sequence[tuple[int, int] | str | None],
    keeps: Sequence[float],
    guides: Sequence[str] = ("embedder",),
) -> list[RerankConfig]:
    """Every combination; a band of None is the query-first prompt, ``"full"`` vision-first with the band
    [0, exit). Bands that do not fit an exit layer are left out."""
    out: dict[str, RerankConfig] = {}
    for exit_layer in exits:
        for band in bands:
            if isinstance(band, tuple) and band[1] > exit_layer:
                continue
            for keep in keeps:
                for guide in guides if keep < 1 else ("embedder",):
                    fields: dict = {"exit_layer": exit_layer, "keep_ratio": keep, "pruning_guide": guide}
                    if band is None:
                        fields["format"] = "query_first"
                    else:
                        fields |= {"format": "vision_first", "band": None if band == "full" else tuple(band)}
                    try:
                        config = RerankConfig(**fields).resolve(depth)
                    except ValueError as exc:  # pydantic's ValidationError: a band or exit out of range
                        if isinstance(exc, ConfigError):
                            raise
                        raise ConfigError(f"grid configuration {fields}: {exc}") from exc
                    out.setdefault(config.model_dump_json(), config)
    return list(out.values())


def describe(config: RerankConfig, depth: int) -> str:
    """``dense``, ``full`` (all four techniques) or ``partial: ...`` naming the techniques used."""
    config = config.resolve(depth)
    parts = []
    if config.format == "vision_first":
        parts.append("vision-first")
        if config.band != (0, config.exit_layer):
            parts.append(f"band {list(config.band or ())}")
    if config.exit_layer != depth:
        parts.append(f"exit {config.exit_layer}/{depth}")
    if config.keep_ratio < 1:
        parts.append(f"keep {config.keep_ratio} ({config.pruning_guide})")
    if not parts:
        return "dense"
    if len(parts) == 4:
        return "full: " + ", ".join(parts)
    return "partial: " + ", ".join(parts)


@dataclass
class Candidate:
    """One evaluated configuration: retention per family and metric, timing and cost."""

    config: RerankConfig
    retention: dict[str, dict[str, float]]
    timing: Timing
    cost: float
    meets: bool = False

    @property
    def min_retention(self) -> float:
        values = [v for fam, r in self.retention.items() if fam != OVERALL for v in r.values() if not math.isnan(v)]
        return min(values) if values else float("nan")


@dataclass
class CalibrationResult:
    """Every candidate (in grid order), the chosen one (None: no configuration met the target, not even dense
    weights under the query-first prompt), the reference used and the target."""

    candidates: list[Candidate]
    chosen: Candidate | None
    reference: str
    target: float
    depth: int
    families: list[str] = field(default_factory=list)

    @property
    def answer(self) -> str:
        if self.chosen is None:
            return f"no configuration keeps {self.target} of the reference; serve dense"
        return describe(self.chosen.config, self.depth)

    def table(self) -> str:
        """A plain-text table: one row per configuration, cheapest first."""
        header = ["config", *(f"{f} hit@1/ndcg@5" for f in self.families), "min", "pair ms", "doc ms", "cost ms", "ok"]
        rows = [header]
        for c in sorted(self.candidates, key=lambda c: c.cost):
            mark = "ok" if c.meets else ""
            if c is self.chosen:
                mark = "CHOSEN"
            rows.append(
                [
                    describe(c.config, self.depth),
                    *(f"{c.retention[f]['hit_rate@1']:.3f}/{c.retention[f]['ndcg@5']:.3f}" for f in self.families),
                    f"{c.min_retention:.3f}",
                    f"{1000 * c.timing.per_pair_s:.2f}",
                    f"{1000 * c.timing.per_document_s:.2f}",
                    f"{1000 * c.cost:.2f}",
                    mark,
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _teacher_tasks(tasks: Sequence[RerankTask], scores: Sequence[Sequence[float]]) -> tuple[list, list]:
    """Two relevance views of the teacher's order: its top candidate (for Hit@1) and its top five graded
    5..1 (for NDCG@5)."""
    import dataclasses

    top1, top5 = [], []
    for task, s in zip(tasks, scores):
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        rel1 = [0] * len(s)
        rel1[order[0]] = 1
        rel5 = [0] * len(s)
        for rank, j in enumerate(order[:5]):
            rel5[j] = 5 - rank
        top1.append(dataclasses.replace(task, relevance=rel1))
        top5.append(dataclasses.replace(task, relevance=rel5))
    return top1, top5


def _metrics(reference: tuple, scores: Sequence[Sequence[float]]) -> dict[str, dict[str, float]]:
    """hit_rate@1 and ndcg@5 per family (and overall) of ``scores`` under ``reference``."""
    if reference[0] == "labels":
        report: EvalReport = evaluate_scores(reference[1], scores)
        return {f: {m: report.metrics[f][m] for m in METRICS} for f in report.metrics}
    hit = evaluate_scores(reference[1], scores).metrics
    ndcg = evaluate_scores(reference[2], scores).metrics
    return {f: {"hit_rate@1": hit[f]["hit_rate@1"], "ndcg@5": ndcg[f]["ndcg@5"]} for f in hit}


def calibrate(
    model: MiniReranker,
    teacher: MiniReranker,
    tasks: Sequence[RerankTask],
    *,
    configs: Sequence[RerankConfig] | None = None,
    target: float = 0.97,
    reference: str = "auto",
    document_reuse: float = 0.0,
    progress: bool = True,
) -> CalibrationResult:
    """Evaluate ``configs`` (default :func:`default_grid`) of ``model``'s weights on ``tasks`` and choose the
    cheapest whose Hit@1 and NDCG@5 retention is >= ``target`` in every family.

    ``teacher`` is the dense reference (usually the checkpoint ``model`` was adapted from, or ``model``
    itself zero-shot); it runs under the query-first dense configuration. ``reference``: ``"labels"``,
    ``"teacher"``, or ``"auto"`` (the labels when every task has them, else the teacher's ranking). Families
    where the reference metric is 0 are not held to the target.

    Raises:
        InputError: no tasks, ``reference="labels"`` on unlabelled tasks, or a bad target.
    """
    from tqdm.auto import tqdm

    if not tasks:
        raise InputError("no validation groups to calibrate on")
    if not 0 < target <= 1.5:
        raise InputError(f"target retention must be in (0, 1.5], got {target}")
    labelled = all(t.labelled and t.positives for t in tasks)
    if reference == "auto":
        reference = "labels" if labelled else "teacher"
    if reference == "labels" and not labelled:
        raise InputError("reference 'labels' needs every validation task to carry a relevant candidate")
    if reference not in ("labels", "teacher"):
        raise InputError(f"reference must be 'labels', 'teacher' or 'auto', got {reference!r}")
    depth = model.num_layers
    configs = list(configs) if configs is not None else default_grid(depth)

    dense = MiniReranker(teacher.backbone, "dense", embedder=teacher.embedder)
    dense_scores, _ = _rerank_all(dense, tasks)  # the reference, computed once
    ref = ("labels", list(tasks)) if reference == "labels" else ("teacher", *_teacher_tasks(tasks, dense_scores))
    base = _metrics(ref, dense_scores)
    families = sorted(f for f in base if f != OVERALL)

    candidates = []
    for config in tqdm(configs, disable=not progress, desc="calibrate", unit="config"):
        reranker = MiniReranker(model.backbone, config, embedder=model.embedder)
        timing, scores = measure_timing(reranker, tasks)
        metrics = _metrics(ref, scores)
        retention = {
            f: {m: metrics[f][m] / base[f][m] if base[f][m] > 0 else float("nan") for m in METRICS} for f in metrics
        }
        candidate = Candidate(config, retention, timing, configuration_cost(timing, document_reuse=document_reuse))
        candidate.meets = all(
            math.isnan(retention[f][m]) or retention[f][m] >= target for f in families for m in METRICS
        )
        candidates.append(candidate)
        logger.info(
            "%s: min retention %.3f, cost %.3g s", describe(config, depth), candidate.min_retention, candidate.cost
        )
    meeting = [c for c in candidates if c.meets]
    chosen = min(meeting, key=lambda c: c.cost) if meeting else None
    return CalibrationResult(candidates, chosen, reference, target, depth, families)


def frontier(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other is both cheaper than and at least as good as (min retention), by cost."""
    out, best = [], -math.inf
    for c in sorted(candidates, key=lambda c: (c.cost, -c.min_retention)):
        if c.min_retention > best:
            out.append(c)
            best = c.min_retention
    return out


def plot_frontier(result: CalibrationResult, path: str | Path, *, title: str = "Calibration") -> Path:
    """Cost against lowest retention of every configuration, the frontier joined, the target and choice
    marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [1000 * c.cost for c in result.candidates]
    ys = [c.min_retention for c in result.candidates]
    ax.scatter(xs, ys, c=["tab:green" if c.meets else "tab:gray" for c in result.candidates], s=22)
    front = frontier(result.candidates)
    ax.plot([1000 * c.cost for c in front], [c.min_retention for c in front], "-", color="tab:blue", label="frontier")
    ax.axhline(result.target, color="tab:red", linestyle="--", linewidth=1, label=f"target {result.target}")
    if result.chosen is not None:
        ax.scatter([1000 * result.chosen.cost], [result.chosen.min_retention], marker="*", s=180, color="tab:orange")
        ax.annotate(
            describe(result.chosen.config, result.depth),
            (1000 * result.chosen.cost, result.chosen.min_retention),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=7,
        )
    ax.set_xlabel("cost per candidate (ms, this device)")
    ax.set_ylabel(f"lowest retention (Hit@1, NDCG@5; vs {result.reference})")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
