"""The label-free adaptation of the demo model, as a stand-in for an official checkpoint.

    python scripts/adapt_demo.py export --out build/adapt-demo      # training groups (no labels), validation
    minirerank adapt --model <demo dense> --data build/adapt-demo/train --config <demo paper config> ...
    python scripts/adapt_demo.py measure --adapted build/adapt-demo/model   # 500 test queries per family

``export`` writes the training tasks of recipe I (docs/demo-training.md: 800 training-split queries per family,
20 candidates, 60% hard negatives, seed 0, plus the caption-to-text tasks) without their relevance labels, and
labelled validation-split tasks for checking. ``measure`` writes docs/results/adapt_demo.json: dense and
adapted Hit@1 / NDCG@5 and their retention with paired bootstrap intervals on 500 test queries per family.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from minirerank_integrations import MiniReranker, Query, RerankConfig
from minirerank_integrations.demo_model import demo_checkpoint
from minirerank_integrations.quality.data import FAMILIES, caption, generate, save_tasks
from minirerank_integrations.quality.evaluation import evaluate_scores, retention, retention_interval


def export(out: Path, train_queries: int, validation_queries: int) -> None:
    train = [
        t
        for f in FAMILIES
        for t in generate(f, "train", train_queries, seed=0, candidates_per_query=20, hard_negative_share=0.6)
    ]
    rng = random.Random(0)
    captions = [
        dataclasses.replace(
            t,
            id=t.id + "/caption",
            family="caption_to_text",
            query=Query(text=caption(t.query_attributes, rng.randrange(3))),
        )
        for t in train
        if t.family == "image_to_text"
    ]
    save_tasks(train + captions, out / "train", overwrite=True, labels=False)
    validation = split_tasks(validation_queries, "validation")
    save_tasks(validation, out / "validation", overwrite=True)
    print(f"wrote {len(train) + len(captions)} unlabelled training groups and {len(validation)} validation tasks")


def split_tasks(queries: int, split: str = "test", seed: int | None = None) -> list:
    """The test tasks of scripts/demo_results.py's 500-query retention (same generator arguments), or the
    validation tasks ``export`` writes (seed 1): recipes are compared on validation, reported on test.
    Another ``seed`` draws a fresh sample of the same split, for a recipe chosen after test numbers were seen."""
    seed = seed if seed is not None else (0 if split == "test" else 1)
    return [
        t
        for f in FAMILIES
        for t in generate(f, split, queries, seed=seed, candidates_per_query=20, hard_negative_share=0.6)
    ]


def scores_of(model: MiniReranker, tasks: list) -> tuple[list[list[float]], float]:
    scores, started = [], time.perf_counter()
    for task in tasks:
        results = model.rerank(task.query, task.candidates)
        row = [0.0] * len(task.candidates)
        for r in results:
            row[r.index] = r.score
        scores.append(row)
    return scores, time.perf_counter() - started


def measure(
    adapted_dir: Path | None,
    queries: int,
    out: Path,
    dense_scores: Path,
    documented_dense: bool = False,
    split: str = "test",
    seed: int | None = None,
) -> None:
    """Dense scores are computed once and kept in ``dense_scores`` (JSON); the adapted folder is scored
    under its saved configuration, guided by the dense model as embedder (as the shipped variant is)."""
    tasks = split_tasks(queries, split, seed)
    dense = MiniReranker.from_pretrained(demo_checkpoint("dense"), config="dense")
    if documented_dense:  # the dense means of docs/results.md on the same tasks: ratios without intervals
        base = None
    elif dense_scores.is_file():
        stored = json.loads(dense_scores.read_text())
        assert stored["task_digest"] == evaluate_scores(tasks, stored["scores"]).task_digest
        dense_rows = stored["scores"]
    else:
        dense_rows, seconds = scores_of(dense, tasks)
        digest = evaluate_scores(tasks, dense_rows).task_digest
        dense_scores.parent.mkdir(parents=True, exist_ok=True)
        dense_scores.write_text(json.dumps({"task_digest": digest, "seconds": seconds, "scores": dense_rows}))
        print(f"dense scored in {seconds:.0f} s, kept in {dense_scores}")
    if not documented_dense:
        base = evaluate_scores(tasks, dense_rows)
    if adapted_dir is None:
        return
    config = RerankConfig.model_validate_json((adapted_dir / "minirerank_config.json").read_text())
    model = MiniReranker.from_pretrained(adapted_dir, config=config, embedder=dense.backbone)
    rows, seconds = scores_of(model, tasks)
    report = evaluate_scores(tasks, rows)
    if base is None:
        documented = json.loads(Path("docs/results/results.json").read_text())["retention_large_sample"]
        assert documented["queries_per_family"] == queries
        dense_metrics = documented["dense"]
        ratios = {f: {m: report.metrics[f][m] / dense_metrics[f][m] for m in report.metrics[f]} for f in FAMILIES}
        intervals = None
    else:
        dense_metrics, ratios = base.metrics, retention(report, base)
        intervals = {f: {m: retention_interval(report, base, f, m) for m in ("hit_rate@1", "ndcg@5")} for f in FAMILIES}
    document = {
        "queries_per_family": queries,
        "split": split,
        "sample_seed": seed,
        "config": config.model_dump(mode="json", include={"format", "exit_layer", "band", "keep_ratio"}),
        "dense": dense_metrics,
        "dense_source": "docs/results/results.json (same tasks)" if base is None else "scored in this run",
        "adapted": report.metrics,
        "retention": ratios,
        "retention_95ci": intervals,
        "adapted_seconds": seconds,
    }
    record = adapted_dir / "adapt.json"
    if record.is_file():
        document["adapt"] = json.loads(record.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    for f in FAMILIES:
        r = document["retention"][f]
        print(f, f"Hit@1 retention {r['hit_rate@1']:.3f}", f"NDCG@5 retention {r['ndcg@5']:.3f}")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", type=Path, default=Path("build/adapt-demo"))
    e.add_argument("--train-queries", type=int, default=800)
    e.add_argument("--validation-queries", type=int, default=40)
    m = sub.add_parser("measure")
    m.add_argument("--adapted", type=Path, default=None, help="omit to score (and keep) the dense model only")
    m.add_argument("--split", choices=["test", "validation"], default="test")
    m.add_argument("--dense-scores", type=Path, default=None, help="default build/adapt-demo/dense_<split>_scores.json")
    m.add_argument(
        "--documented-dense",
        action="store_true",
        help="take the dense means from docs/results/results.json (same tasks) instead of scoring dense: no intervals",
    )
    m.add_argument("--queries", type=int, default=500)
    m.add_argument(
        "--sample-seed", type=int, default=None, help="draw another sample of the split (default: the usual one)"
    )
    m.add_argument("--out", type=Path, default=Path("docs/results/adapt_demo.json"))
    args = parser.parse_args()
    if args.command == "export":
        export(args.out, args.train_queries, args.validation_queries)
    else:
        if args.documented_dense and (args.split != "test" or args.sample_seed is not None):
            parser.error("--documented-dense holds the usual test sample's means only")
        sample = "" if args.sample_seed is None else f"_seed{args.sample_seed}"
        dense_scores = args.dense_scores or Path(f"build/adapt-demo/dense_{args.split}{sample}_scores.json")
        measure(args.adapted, args.queries, args.out, dense_scores, args.documented_dense, args.split, args.sample_seed)


if __name__ == "__main__":
    main()
