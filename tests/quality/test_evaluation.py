"""Evaluation: ranx metrics on hand-checked rankings, per family and overall; retention; the rerank loop."""

from __future__ import annotations

import math

import pytest

from minirerank_integrations import Candidate, InputError, Query, RerankResult, RerankResults
from minirerank_integrations.quality import evaluation as evaluation_module
from minirerank_integrations.quality.data import RerankTask
from minirerank_integrations.quality.evaluation import OVERALL, evaluate, evaluate_scores, retention, retention_interval

LOG2_3 = math.log2(3)


def _task(task_id: str, family: str, relevance: list[int]) -> RerankTask:
    candidates = [Candidate(text=f"doc {j}", id=f"{task_id}-{j}") for j in range(len(relevance))]
    return RerankTask(id=task_id, family=family, query=Query(text=task_id), candidates=candidates, relevance=relevance)


# q1 (family a): relevant candidate ranked 1st.                 hit 1, NDCG@5 1,                    RR 1
# q2 (family a): relevant candidate ranked 2nd.                 hit 0, NDCG@5 1/log2(3) = 0.630930, RR 1/2
# q3 (family b): relevant ranked 1st and 5th (two positives).   hit 1, RR 1,
#     DCG = 1/log2(2) + 1/log2(6) = 1.386853; ideal DCG = 1 + 1/log2(3) = 1.630930; NDCG@5 = 0.850345
TASKS = [
    _task("q1", "a", [1, 0, 0, 0]),
    _task("q2", "a", [0, 1, 0, 0]),
    _task("q3", "b", [0, 0, 1, 1, 0]),
]
SCORES = [
    [0.9, 0.5, 0.3, 0.1],
    [0.9, 0.5, 0.3, 0.1],
    [0.2, 0.9, 0.95, 0.1, 0.5],  # order: 2, 1, 4, 0, 3
]
NDCG_Q3 = (1 + 1 / math.log2(6)) / (1 + 1 / LOG2_3)


def test_public_surface() -> None:
    assert sorted(evaluation_module.__all__) == sorted(
        ["METRICS", "OVERALL", "EvalReport", "evaluate", "evaluate_scores", "retention", "retention_interval"]
    )
    assert evaluation_module.METRICS == ("hit_rate@1", "ndcg@5", "mrr@10")


def test_metrics_equal_hand_computed_values() -> None:
    report = evaluate_scores(TASKS, SCORES)
    assert NDCG_Q3 == pytest.approx(0.850345, abs=1e-6)
    overall = report.metrics[OVERALL]
    assert overall["hit_rate@1"] == pytest.approx(2 / 3)
    assert overall["ndcg@5"] == pytest.approx((1 + 1 / LOG2_3 + NDCG_Q3) / 3)
    assert overall["mrr@10"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert report.metrics["a"] == pytest.approx({"hit_rate@1": 0.5, "ndcg@5": (1 + 1 / LOG2_3) / 2, "mrr@10": 0.75})
    assert report.metrics["b"] == pytest.approx({"hit_rate@1": 1.0, "ndcg@5": NDCG_Q3, "mrr@10": 1.0})
    assert report.queries == {"a": 2, "b": 1, OVERALL: 3}
    assert report.pairs == {"a": 8, "b": 5, OVERALL: 13}
    assert report.seconds is None and report.pairs_per_second is None
    assert "overall" in report.as_table()


def test_cutoffs_ignore_relevant_candidates_below_them() -> None:
    # The only relevant candidate is ranked 11th: outside NDCG@5 and MRR@10, so both are 0.
    task = _task("deep", "a", [0] * 10 + [1, 0])
    scores = [1.0 - j / 100 for j in range(12)]
    assert evaluate_scores([task], [scores]).metrics[OVERALL] == {"hit_rate@1": 0.0, "ndcg@5": 0.0, "mrr@10": 0.0}
    # Ranked 6th: still outside NDCG@5, inside MRR@10 (1/6).
    task = _task("mid", "a", [0] * 5 + [1] + [0] * 6)
    metrics = evaluate_scores([task], [scores]).metrics[OVERALL]
    assert metrics["ndcg@5"] == 0.0 and metrics["mrr@10"] == pytest.approx(1 / 6)


def test_equal_scores_rank_in_input_order_like_the_engine() -> None:
    first = evaluate_scores([_task("t", "a", [1, 0, 0])], [[0.5, 0.5, 0.5]]).metrics[OVERALL]
    second = evaluate_scores([_task("t", "a", [0, 1, 0])], [[0.5, 0.5, 0.5]]).metrics[OVERALL]
    assert first["hit_rate@1"] == 1.0
    assert second["hit_rate@1"] == 0.0 and second["mrr@10"] == 0.5


def test_retention_divides_by_the_dense_metrics() -> None:
    perfect = [[1.0 if r else 0.0 for r in task.relevance] for task in TASKS]
    dense = evaluate_scores(TASKS, perfect)
    ratios = retention(evaluate_scores(TASKS, SCORES), dense)
    # Against a perfect dense ranking every ratio is the configuration's own metric.
    assert ratios[OVERALL] == pytest.approx(
        {"hit_rate@1": 2 / 3, "ndcg@5": (1 + 1 / LOG2_3 + NDCG_Q3) / 3, "mrr@10": 2.5 / 3}
    )
    assert ratios["b"] == pytest.approx({"hit_rate@1": 1.0, "ndcg@5": NDCG_Q3, "mrr@10": 1.0})
    # Hit@1 of family a is 0.5 in both: ratio 1; a dense metric of 0 gives nan.
    assert retention(dense, evaluate_scores(TASKS, SCORES))["a"]["hit_rate@1"] == pytest.approx(2.0)
    worst = [[0.0 if r else 1.0 for r in task.relevance] for task in TASKS[:2]]
    assert math.isnan(
        retention(evaluate_scores(TASKS[:2], perfect[:2]), evaluate_scores(TASKS[:2], worst))["a"]["hit_rate@1"]
    )
    with pytest.raises(InputError, match="different task lists"):
        retention(evaluate_scores(TASKS[:2], SCORES[:2]), dense)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(InputError, match="3 scores for 4 candidates"):
        evaluate_scores(TASKS[:1], [[0.1, 0.2, 0.3]])
    with pytest.raises(InputError, match="no relevant candidate"):
        evaluate_scores([_task("none", "a", [0, 0])], [[0.1, 0.2]])
    with pytest.raises(InputError, match="appears twice"):
        evaluate_scores([TASKS[0], TASKS[0]], [SCORES[0], SCORES[0]])


class _FixedReranker:
    """Returns preset scores, sorted best first, the way MiniReranker.rerank does."""

    def __init__(self, scores: dict[str, list[float]]) -> None:
        self.scores = scores
        self.calls = 0

    def rerank(self, query: Query, candidates: list[Candidate]) -> RerankResults:
        self.calls += 1
        scores = self.scores[query.text]
        assert len(scores) == len(candidates)
        order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
        return RerankResults([RerankResult(index=j, score=scores[j], id=candidates[j].id) for j in order])


def test_evaluate_maps_results_back_by_index_and_times_the_calls() -> None:
    reranker = _FixedReranker({task.id: scores for task, scores in zip(TASKS, SCORES)})
    report = evaluate(reranker, TASKS)  # type: ignore[arg-type]
    assert reranker.calls == 3
    assert report.metrics == evaluate_scores(TASKS, SCORES).metrics
    assert report.seconds is not None and set(report.seconds) == {"a", "b", OVERALL}
    assert report.seconds[OVERALL] == pytest.approx(report.seconds["a"] + report.seconds["b"])
    assert report.pairs_per_second is not None and report.pairs_per_second > 0


def test_per_query_values_are_kept_by_task_id() -> None:
    report = evaluate_scores(TASKS, SCORES)
    assert report.per_query["a"]["hit_rate@1"] == {"q1": 1.0, "q2": 0.0}
    assert report.per_query[OVERALL]["mrr@10"] == pytest.approx({"q1": 1.0, "q2": 0.5, "q3": 1.0})
    assert report.per_query["b"]["ndcg@5"] == pytest.approx({"q3": NDCG_Q3})


def _hits(n: int, dense_hits: int, config_hits: int):
    """``n`` one-positive tasks: dense ranks the positive first on the first ``dense_hits``, the configuration
    on the first ``config_hits`` (a subset, as a pruned model that loses a few queries)."""
    tasks = [_task(f"q{i}", "a", [1, 0, 0]) for i in range(n)]
    first, second = [0.9, 0.5, 0.1], [0.5, 0.9, 0.1]
    dense = evaluate_scores(tasks, [first if i < dense_hits else second for i in range(n)])
    config = evaluate_scores(tasks, [first if i < config_hits else second for i in range(n)])
    return config, dense


def test_retention_interval_is_a_paired_bootstrap_around_the_ratio() -> None:
    config, dense = _hits(40, 30, 27)
    assert retention(config, dense)["a"]["hit_rate@1"] == pytest.approx(0.9)
    low, high = retention_interval(config, dense, "a", "hit_rate@1", seed=1)
    assert low < 0.9 < high <= 1.0  # the configuration never wins a query here, so no resample exceeds 1
    assert retention_interval(config, dense, "a", "hit_rate@1", seed=1) == (low, high)  # seeded
    big_config, big_dense = _hits(400, 300, 270)
    big_low, big_high = retention_interval(big_config, big_dense, "a", "hit_rate@1", seed=1)
    assert big_high - big_low < 0.6 * (high - low)  # ten times the queries, about a third of the width
    assert retention_interval(dense, dense) == (1.0, 1.0)


def test_retention_interval_rejects_mismatched_reports() -> None:
    config, _ = _hits(10, 8, 7)
    with pytest.raises(InputError, match="different task lists"):
        retention_interval(config, evaluate_scores(TASKS, SCORES))
    with pytest.raises(InputError, match="'ndcg@50'"):
        retention_interval(config, config, "a", "ndcg@50")
