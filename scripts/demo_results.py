"""Measure the embedded demo model: dense quality, the no-interaction control, retention of the adapted and
zero-shot ``paper`` configuration and of each technique alone, embedder vs random pruning, training step
time dense vs adapted, and the layer-wise analysis. Writes docs/results.md (+ results.json and two PNGs).

    make results        # python -m minirerank_integrations.bench.train_step --json docs/results/train_step.json,
                        # then this script
    python scripts/demo_results.py --video-only [--dense DIR --paper DIR --video-name NAME --image-check]
                        # the video family alone (docs/results/video.json, its section of results.md)

Every quality number is deterministic (seeded test-split tasks, fixed weights); runtimes are of this machine.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.demo_model import demo_checkpoint
from minirerank_integrations.quality.analysis import attention_share, exit_curve, plot_attention_share, plot_exit_curve
from minirerank_integrations.quality.data import FAMILIES, VIDEO_FAMILIES, generate
from minirerank_integrations.quality.evaluation import OVERALL, EvalReport, evaluate, retention, retention_interval

METRICS = ("hit_rate@1", "ndcg@5", "mrr@10")
#: What a configuration's fast rows carry over: the techniques and how pruning ranks tokens. The guide's depth
#: must travel with the rest: the demo's adapted configuration pins the full-depth guide it was measured with,
#: and a configuration built without it takes the 2-layer default.
FAST_FIELDS = {"format", "exit_layer", "band", "keep_ratio", "pruning_guide", "pruning_guide_layers", "pruning_seed"}
TARGET = 0.97  # retention bar of the adapted paper preset


def configs(adapted: RerankConfig) -> dict[str, dict]:
    """Name -> RerankConfig fields: the adapted configuration, then each of its techniques alone."""
    dense = {"format": "query_first"}  # the official prompt, every layer and token
    return {
        "dense": dense,
        "no interaction (band empty)": {"format": "vision_first", "band": (0, 0)},
        "adapted config": adapted.model_dump(include=FAST_FIELDS),
        "vision-first only": {"format": "vision_first"},
        f"exit only (layer {adapted.exit_layer})": dense | {"exit_layer": adapted.exit_layer},
        f"band only {list(adapted.band or ())}": {"format": "vision_first", "band": adapted.band},
        f"pruning only (keep {adapted.keep_ratio})": dense | {"keep_ratio": adapted.keep_ratio},
    }


def pruning_configs(adapted: RerankConfig) -> dict[str, dict]:
    base = adapted.model_dump(include=FAST_FIELDS - {"keep_ratio", "pruning_guide"})
    return {
        f"adapted config, keep {keep}, {guide}": base | {"keep_ratio": keep, "pruning_guide": guide}
        for keep in (0.5, 0.25)
        for guide in ("embedder", "random")
    }


def run(model: MiniReranker, fields: dict, tasks: list) -> EvalReport:
    """Evaluate ``model``'s weights under a configuration, from cold: a fresh prefix store and fresh pruning
    importances, so every run pays for its own prefixes and embedder passes."""
    reranker = MiniReranker(model.backbone, RerankConfig(**fields), embedder=model.embedder)
    return evaluate(reranker, tasks)


def test_tasks(families, n: int, seed: int) -> list:
    """``n`` test-split queries per family, 20 candidates, 60% hard negatives (a larger n extends a smaller)."""
    return [
        t for f in families for t in generate(f, "test", n, seed=seed, candidates_per_query=20, hard_negative_share=0.6)
    ]


def with_interval(entry: dict, group: str, metric: str) -> str:
    """A retention and its 95% interval, as the tables print it."""
    low, high = entry["retention_95ci"][group][metric]
    return f"{entry['retention'][group][metric]:.3f} [{low:.3f}, {high:.3f}]"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", type=Path, default=demo_checkpoint("dense"))
    parser.add_argument("--paper", type=Path, default=demo_checkpoint("paper"))
    parser.add_argument("--queries", type=int, default=100, help="test-split queries per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--retention-queries",
        type=int,
        default=500,
        help="test-split queries per family for the adapted configuration's retention (dense and adapted only)",
    )
    parser.add_argument(
        "--train-step",
        type=Path,
        default=Path("docs/results/train_step.json"),
        help="timings written by python -m minirerank_integrations.bench.train_step --json, included when present",
    )
    parser.add_argument(
        "--history",
        type=Path,
        nargs="*",
        default=[
            Path("docs/results/training_history.json"),
            Path("docs/results/training_history_continued.json"),
            Path("docs/results/training_history_stage3.json"),
        ],
        help="train_demo.py history files, in training order, for the validation curve (missing ones are skipped)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument(
        "--label-free-only",
        action="store_true",
        help="re-render only the label-free adaptation section of results.md from the files already written",
    )
    parser.add_argument(
        "--video-only",
        action="store_true",
        help="measure the video family alone (dense and fast) for --dense/--paper, record it under --video-name in "
        "video.json and re-render the video section of results.md",
    )
    parser.add_argument(
        "--no-paper", action="store_true", help="with --video-only: the dense model alone (no adapted weights)"
    )
    parser.add_argument(
        "--image-check-only",
        action="store_true",
        help="with --video-only: the image families alone (--image-check without the video rows), merged into the "
        "--video-name entry, so the two can run side by side",
    )
    parser.add_argument("--video-queries", type=int, default=100, help="test-split queries of the video family")
    parser.add_argument("--video-name", default="shipped demo model", help="the row label of --video-only's models")
    parser.add_argument(
        "--video-history", type=Path, default=None, help="train_demo_video.py's history.json for the models measured"
    )
    parser.add_argument(
        "--image-check",
        action="store_true",
        help="with --video-only: also measure --dense and --paper on the image families' --queries test queries, "
        "next to the numbers in results.json (the same tasks), to see whether video training cost them anything",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; on a shared 2-core machine 2 threads contend (a 200-pair evaluation took 79 s "
        "with 2 threads against 1.1 s with 1 under a load of 8)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.label_free_only or args.video_only:
        path = args.out.parent / "results.md"
        document = json.loads((args.out / "results.json").read_text())
        if args.video_only:
            record_video(args, document)
        text = path.read_text().split(VIDEO_HEADING)[0].split(LABEL_FREE_HEADING)[0].rstrip("\n") + "\n\n"
        tail = video_section(args.out) + label_free_section(args.out, document.get("retention_large_sample"))
        path.write_text(text + "\n".join(tail))
        print(f"wrote {path}")
        return
    torch.manual_seed(args.seed)

    tasks = test_tasks(FAMILIES, args.queries, args.seed)
    dense = MiniReranker.from_pretrained(args.dense, config="dense")
    adapted = MiniReranker.from_pretrained(args.paper, embedder=dense.backbone)  # its saved configuration
    depth = dense.num_layers
    preset = RerankConfig.preset("paper", depth)
    results: dict[str, dict] = {}
    base = run(dense, {"format": "query_first"}, tasks)

    def record(group: str, name: str, report: EvalReport) -> None:
        results.setdefault(group, {})[name] = {
            "metrics": report.metrics,
            "retention": retention(report, base),
            "retention_95ci": {
                group: {m: retention_interval(report, base, group, m) for m in ("hit_rate@1", "ndcg@5")}
                for group in [*FAMILIES, OVERALL]
            },
            "seconds": (report.seconds or {}).get(OVERALL, 0.0),
        }
        print(group, name, {f: round(m["hit_rate@1"], 3) for f, m in report.metrics.items()}, flush=True)

    preset_fields = preset.model_dump(include=FAST_FIELDS)
    record("zero-shot (dense weights)", "dense", base)
    record(
        "zero-shot (dense weights)", f"paper preset (band {list(preset.band or ())})", run(dense, preset_fields, tasks)
    )
    for name, fields in list(configs(adapted.config).items())[1:]:
        record("zero-shot (dense weights)", name, run(dense, fields, tasks))
    record("adapted weights", f"paper preset (band {list(preset.band or ())})", run(adapted, preset_fields, tasks))
    for name, fields in list(configs(adapted.config).items())[2:]:
        record("adapted weights", name, run(adapted, fields, tasks))
    warm = MiniReranker(adapted.backbone, adapted.config, embedder=adapted.embedder)
    evaluate(warm, tasks)  # fills the prefix store and the pruning importances
    record("adapted weights", "adapted config, warm prefix store", evaluate(warm, tasks))
    for name, fields in pruning_configs(adapted.config).items():
        record("pruning guide (adapted weights)", name, run(adapted, fields, tasks))

    # The headline retention on a larger sample: at 100 queries per family its interval spans +-0.08.
    eligible = [f for f in FAMILIES if base.metrics[f]["hit_rate@1"] >= 0.5]
    large = test_tasks(eligible, args.retention_queries, args.seed)
    large_sample = None
    if large:
        dense_large = run(dense, {"format": "query_first"}, large)
        adapted_large = run(adapted, configs(adapted.config)["adapted config"], large)
        large_sample = {
            "queries_per_family": args.retention_queries,
            "families": eligible,
            "dense": dense_large.metrics,
            "adapted": adapted_large.metrics,
            "retention": retention(adapted_large, dense_large),
            "retention_95ci": {
                group: {m: retention_interval(adapted_large, dense_large, group, m) for m in ("hit_rate@1", "ndcg@5")}
                for group in [*eligible, OVERALL]
            },
        }
        print("retention, large sample", large_sample["retention"], flush=True)

    dense.config = "dense"
    curve = exit_curve(dense, tasks)
    share = attention_share(dense, tasks)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_exit_curve(curve, args.out / "exit_curve.png", title="Dense demo model: quality by exit layer")
    band = adapted.config.band
    plot_attention_share(
        share, args.out / "attention_share.png", band=band, band_label=f"adapted band {list(band or ())}"
    )
    steps = json.loads(args.train_step.read_text()) if args.train_step.exists() else None
    validation = validation_curve([json.loads(p.read_text()) for p in args.history if p.exists()])
    if validation:
        plot_validation_curve(validation, args.out / "validation_curve.png")

    document = {
        "tasks": {"split": "test", "queries_per_family": args.queries, "candidates": 20, "seed": args.seed},
        "results": results,
        "retention_large_sample": large_sample,
        "exit_curve": curve,
        "attention_share": share,
        "train_step": steps,
        "validation_curve": validation,
        "chance_hit@1": {f: chance([t for t in tasks if t.family == f]) for f in FAMILIES},
        "adapted_config": adapted.config.model_dump(
            mode="json", include={"format", "exit_layer", "band", "keep_ratio"}
        ),
    }
    (args.out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    (args.out.parent / "results.md").write_text(markdown(document, depth, args))
    print(f"wrote {args.out.parent / 'results.md'}")


def markdown(doc: dict, depth: int, args: argparse.Namespace) -> str:
    families = [*FAMILIES, "overall"]
    results = doc["results"]
    dense = results["zero-shot (dense weights)"]["dense"]
    base = dense["metrics"]
    # Retention is studied only where the dense model is worth retaining (Hit@1 >= 0.5).
    eligible = [f for f in FAMILIES if base[f]["hit_rate@1"] >= 0.5]
    lines = [
        "# Demo model results",
        "",
        "Measured by `make results` (`scripts/demo_results.py`) on the embedded demo model: "
        f"{args.queries} test-split queries per family, 20 candidates each (1-3 relevant; 60% of the negatives "
        f"differ from the query in exactly one attribute), seed {args.seed}. Test-split attribute combinations "
        "never occur as training queries. The model is a demo trained on synthetic data; docs/demo-training.md "
        "tells how. Quality numbers are deterministic; runtimes are of the machine that ran the command.",
        "",
        "## Dense model",
        "",
        table(
            ["family", *METRICS, "Hit@1 of a random order"],
            [[f, *(f"{base[f][m]:.3f}" for m in METRICS), f"{doc['chance_hit@1'][f]:.3f}"] for f in FAMILIES]
            + [["overall", *(f"{base['overall'][m]:.3f}" for m in METRICS), ""]],
        ),
        "",
    ]
    if doc["validation_curve"]:
        last = doc["validation_curve"][-1]
        lines += [
            "Validation Hit@1 during dense training (15 validation-split queries per family at each point; dashed "
            "lines mark where a training stage starts, docs/demo-training.md). Last point, step "
            f"{last['step']}: " + ", ".join(f"{f} {last[f]:.2f}" for f in FAMILIES) + ".",
            "",
            "![validation curve](results/validation_curve.png)",
            "",
        ]
    below = [f for f in FAMILIES if base[f]["hit_rate@1"] < 0.9]
    if below:
        lines += [f"Below the 0.9 Hit@1 target on the test split: {', '.join(below)}.", ""]
    lines += [
        f"Retention below is studied on the families where dense Hit@1 >= 0.5: {', '.join(eligible) or 'none'}.",
        "Each row is evaluated from cold (empty prefix store, pruning importances computed in the run), except "
        "`adapted config, warm prefix store`: the same tasks again, every prefix reused. Runtime is the whole rerank call "
        "(image decoding and vision encoder included). Each row is timed once, against one dense run, so a ratio moves "
        "by up to a third between runs of this command on a shared machine; `minirerank bench` measures speed alone.",
        "",
    ]
    header = ["configuration", *(f"{f} Hit@1 / NDCG@5" for f in families), "min retention", "runtime / dense"]
    for group, entries in results.items():
        rows = []
        for name, entry in entries.items():
            metrics, ret = entry["metrics"], entry["retention"]
            kept = [ret[f][m] for f in eligible for m in ("hit_rate@1", "ndcg@5")]
            rows.append(
                [
                    name,
                    *(f"{metrics[f]['hit_rate@1']:.3f} / {metrics[f]['ndcg@5']:.3f}" for f in families),
                    f"{min(kept):.3f}" if kept else "n/a",
                    f"{entry['seconds'] / dense['seconds']:.2f}",
                ]
            )
        lines += [f"## {group}", "", table(header, rows), ""]
    paper = results["adapted weights"]["adapted config"]["retention"]
    worst = min((paper[f][m] for f in eligible for m in ("hit_rate@1", "ndcg@5")), default=float("nan"))
    adapted = results["adapted weights"]["adapted config"]
    lines += [
        f"Adapted configuration ({doc['adapted_config']}), lowest retention over {', '.join(eligible) or 'no family'}"
        f" and (Hit@1, NDCG@5): {worst:.3f}; the bar is {TARGET}. With {args.queries} queries per family a "
        "retention is uncertain by several points; the 95% paired bootstrap intervals (queries resampled "
        "together for both models, `evaluation.retention_interval`):",
        "",
        table(
            ["family", "Hit@1 retention [95% interval]", "NDCG@5 retention [95% interval]"],
            [
                [
                    f,
                    *(with_interval(adapted, f, m) for m in ("hit_rate@1", "ndcg@5")),
                ]
                for f in [*FAMILIES, "overall"]
            ],
        ),
        "",
    ]
    large = doc["retention_large_sample"]
    if large is not None:
        fams = large["families"]
        lowest = min(large["retention"][f][m] for f in fams for m in ("hit_rate@1", "ndcg@5"))
        lines += [
            f"## Retention of the adapted configuration, {large['queries_per_family']} queries per family",
            "",
            f"The same measurement on {large['queries_per_family']} test-split queries per family (the tables above "
            "use the first draws of the same generator), dense and adapted configuration only, for the families "
            "where retention is studied. This is the headline number: its intervals are about half as wide.",
            "",
            table(
                [
                    "family",
                    "dense Hit@1 / NDCG@5",
                    "adapted Hit@1 / NDCG@5",
                    "Hit@1 retention [95% interval]",
                    "NDCG@5 retention [95% interval]",
                ],
                [
                    [
                        f if f in fams else "overall (these families)",
                        f"{large['dense'][f]['hit_rate@1']:.3f} / {large['dense'][f]['ndcg@5']:.3f}",
                        f"{large['adapted'][f]['hit_rate@1']:.3f} / {large['adapted'][f]['ndcg@5']:.3f}",
                        *(with_interval(large, f, m) for m in ("hit_rate@1", "ndcg@5")),
                    ]
                    for f in [*fams, "overall"]
                ],
            ),
            "",
            f"Lowest retention over {', '.join(fams)} and (Hit@1, NDCG@5): {lowest:.3f}; the bar of {TARGET} is "
            f"{'met' if lowest >= TARGET else 'not met'}.",
            "",
        ]
    steps = doc["train_step"]
    if steps is not None:
        seconds = steps["seconds"]
        lines += [
            "## Training step time",
            "",
            f"`python -m minirerank_integrations.bench.train_step`: {steps['groups']} queries x {steps['size']} candidates per step, "
            f"mean of {steps['steps']} steps on {steps['device']}, the same batches for every row.",
            "",
            table(
                ["configuration", *(f"s/step, vision tower {v}" for v in seconds), "speed vs dense, vision frozen"],
                [
                    [
                        name,
                        *(f"{seconds[v][name]:.3f}" for v in seconds),
                        f"{seconds['frozen']['dense'] / seconds['frozen'][name]:.2f}x",
                    ]
                    for name in seconds["frozen"]
                ],
            ),
            "",
        ]
    lines += [
        "## Layer-wise analysis (dense weights)",
        "",
        "Quality when the score is read after each layer (query-first prompt):",
        "",
        table(
            ["exit layer", *(f"{f} Hit@1" for f in families)],
            [[str(k), *(f"{v[f]['hit_rate@1']:.3f}" for f in families)] for k, v in doc["exit_curve"].items()],
        ),
        "",
        "![exit curve](results/exit_curve.png)",
        "",
        "Share of the suffix's attention that goes to the prefix, by layer (vision-first prompt, every layer "
        "attending everywhere): where interaction concentrates.",
        "",
        table(["layer", "share"], [[str(i), f"{s:.3f}"] for i, s in enumerate(doc["attention_share"])]),
        "",
        "![attention share](results/attention_share.png)",
        "",
    ]
    return "\n".join(lines + video_section(args.out) + label_free_section(args.out, doc.get("retention_large_sample")))


VIDEO_HEADING = "## Video family (text_to_video)"
#: Where each file's numbers of the video family live, beside results.json.
VIDEO_FILE = "video.json"


def record_video(args: argparse.Namespace, document: dict) -> None:
    """Measure the video family (and with ``--image-check`` the image families) on ``args.dense`` and
    ``args.paper``; record it in ``video.json`` under ``args.video_name``, replacing an earlier entry of
    that name."""
    from train_demo import ADAPTED_CONFIG
    from train_demo_video import CLIP_FRAMES, CLIP_SIZE, VIDEO_FIELDS

    dense = MiniReranker.from_pretrained(args.dense, config="dense")
    adapted = None if args.no_paper else MiniReranker.from_pretrained(args.paper, embedder=dense.backbone)
    fast = (adapted.config if adapted is not None else ADAPTED_CONFIG).model_dump(include=FAST_FIELDS)
    entry: dict = {"name": args.video_name}
    if not args.image_check_only:
        entry |= video_rows(args, dense, adapted, fast)
    if args.video_history is not None:
        history = json.loads(args.video_history.read_text())
        entry["training"] = {key: history.get(key) for key in ("args", "dense_summary", "adapt_summary")}
    if args.image_check or args.image_check_only:
        image = test_tasks(FAMILIES, args.queries, args.seed)
        results = document["results"]
        entry["image_check"] = {
            "queries_per_family": args.queries,
            "dense": run(dense, {"format": "query_first"}, image).metrics,
            "adapted": None if adapted is None else run(adapted, fast, image).metrics,
            # The same tasks as results.json's tables when --queries and --seed are those of the run that wrote it.
            "results_json": {
                "queries_per_family": document["tasks"]["queries_per_family"],
                "dense": results["zero-shot (dense weights)"]["dense"]["metrics"],
                "adapted": results["adapted weights"]["adapted config"]["metrics"],
            },
        }
        print("image families", entry["image_check"]["dense"], entry["image_check"]["adapted"], flush=True)
    # Read just before writing: a run measuring the same model's image families (--image-check-only) may
    # have written its part of the entry meanwhile; each run's keys replace only their own.
    path = args.out / VIDEO_FILE
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc |= {
        "tasks": {
            "split": "test",
            "queries": args.video_queries,
            "candidates": 20,
            "hard_negative_share": 0.6,
            "seed": args.seed,
            "frames": CLIP_FRAMES,
            "frame_size": CLIP_SIZE,
        },
        "video_fields": VIDEO_FIELDS,
    }
    models = doc.get("models", [])
    earlier: dict = next((m for m in models if m["name"] == args.video_name), {})
    doc["models"] = [m for m in models if m["name"] != args.video_name] + [earlier | entry]
    path.write_text(json.dumps(doc, indent=1) + "\n")


def video_rows(args: argparse.Namespace, dense: MiniReranker, adapted: MiniReranker | None, fast: dict) -> dict:
    """The video family's test tasks on ``dense`` (query-first and the adapted configuration) and on
    ``adapted`` (its configuration), with retention over the dense row."""
    from train_demo_video import VIDEO_FIELDS, video_tasks

    tasks = video_tasks("test", args.video_queries, args.seed)
    rows = {
        "dense": run(dense, {"format": "query_first"} | VIDEO_FIELDS, tasks),
        "adapted config, dense weights": run(dense, fast | VIDEO_FIELDS, tasks),
    }
    if adapted is not None:
        rows["adapted config, adapted weights"] = run(adapted, fast | VIDEO_FIELDS, tasks)
    base = rows["dense"]
    for name, report in rows.items():
        print(
            "video",
            args.video_name,
            name,
            {f: round(m["hit_rate@1"], 3) for f, m in report.metrics.items()},
            flush=True,
        )
    return {
        "dense": str(args.dense),
        "paper": None if adapted is None else str(args.paper),
        "adapted_config": fast,
        "rows": {
            name: {
                "metrics": report.metrics,
                "retention": retention(report, base),
                "seconds": (report.seconds or {}).get(OVERALL, 0.0),
            }
            for name, report in rows.items()
        },
        "chance_hit@1": {f: chance([t for t in tasks if t.family == f]) for f in VIDEO_FAMILIES},
    }


def video_section(results_dir: Path) -> list[str]:
    """The video family's numbers from ``video.json`` (nothing when it is absent)."""
    path = results_dir / VIDEO_FILE
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    spec = doc["tasks"]
    lines = [
        VIDEO_HEADING,
        "",
        f"`python scripts/demo_results.py --video-only`: {spec['queries']} test-split queries of the synthetic video "
        f'family ("a red circle moving left"; colour x shape x direction), {spec["candidates"]} candidate clips '
        f"each, {round(100 * spec['hard_negative_share'])}% of the negatives one attribute off, the query's own clip "
        f"turned to the three other directions first; each clip {spec['frames']} frames of {spec['frame_size']} x "
        f"{spec['frame_size']} pixels, which the official frame-list path rounds to multiples of 64 (128 x 128: "
        "two temporal groups of 4 x 4 merged tokens) and which are then kept at that size ("
        + ", ".join(f"`{k}={v}`" for k, v in doc["video_fields"].items())
        + ": the official floor of 128 x 32 x 32 "
        "pixels per frame would upscale them to 384 x 384, nine times the tokens). Dense is the official query-first prompt; the fast rows are "
        "the adapted variant's configuration (vision-first, exit, band, pruning) served by the engine's fast path. "
        "Retention is over the same model's dense row. A model under build/ is a trial that was not shipped "
        '(docs/demo-training.md, "Video", says why); the shipped demo model is the one named so.',
        "",
    ]
    rows = []
    for model in (m for m in doc["models"] if "rows" in m):
        dense_seconds = model["rows"]["dense"]["seconds"] or float("nan")
        for name, row in model["rows"].items():
            m, r = row["metrics"]["text_to_video"], row["retention"]["text_to_video"]
            rows.append(
                [
                    model["name"],
                    name,
                    f"{m['hit_rate@1']:.3f} / {m['ndcg@5']:.3f}",
                    f"{m['mrr@10']:.3f}",
                    " / ".join(f"{r[k]:.3f}" if math.isfinite(r[k]) else "n/a" for k in ("hit_rate@1", "ndcg@5")),
                    f"{row['seconds'] / dense_seconds:.2f}",
                ]
            )
    chance_hit = next((m["chance_hit@1"]["text_to_video"] for m in doc["models"] if "rows" in m), float("nan"))
    lines += [
        table(
            ["model", "configuration", "Hit@1 / NDCG@5", "MRR@10", "retention Hit@1 / NDCG@5", "runtime / dense"],
            rows,
        ),
        "",
        f"Hit@1 of a random order: {chance_hit:.3f}.",
        "",
    ]
    checks = [m for m in doc["models"] if "image_check" in m]
    if checks:
        lines += [
            "The image families on the same models, against the numbers in the tables above (`results.json`, the "
            "same test tasks when the query counts match), dense / adapted configuration on adapted weights, Hit@1 "
            "and NDCG@5:",
            "",
        ]
        rows = []
        for model in checks:
            check = model["image_check"]
            then = check["results_json"]
            same = check["queries_per_family"] == then["queries_per_family"]
            for f in [*FAMILIES, "overall"]:
                rows.append(
                    [
                        model["name"],
                        f,
                        *(
                            "not measured"
                            if check[kind] is None
                            else f"{check[kind][f]['hit_rate@1']:.3f} / {check[kind][f]['ndcg@5']:.3f}"
                            + (
                                f" (tables: {then[kind][f]['hit_rate@1']:.3f} / {then[kind][f]['ndcg@5']:.3f})"
                                if same
                                else ""
                            )
                            for kind in ("dense", "adapted")
                        ),
                    ]
                )
        lines += [table(["model", "family", "dense", "adapted config, adapted weights"], rows), ""]
    for model in doc["models"]:
        summary = (model.get("training") or {}).get("dense_summary")
        if summary:
            lines += [
                f"{model['name']}: dense video training {summary['steps']} steps in "
                f"{summary['seconds'] / 60:.0f} min ({summary['mean_step_seconds']:.2f} s/step, "
                "`scripts/train_demo_video.py`, docs/demo-training.md).",
                "",
            ]
    return lines


LABEL_FREE_HEADING = "## Label-free adaptation (minirerank adapt) and calibration"


def mix_of(run: dict) -> str:
    """The training mix of an adapt.json record: groups per family, or the command in docs/adaptation.md."""
    mix = run.get("family_mix")
    if not mix:
        return "the command in docs/adaptation.md says"
    return ", ".join(f"{family} {count}" for family, count in sorted(mix.items())) + " groups"


def label_free_section(results_dir: Path, large_sample: dict | None) -> list[str]:
    """The label-free adaptation next to the shipped labelled one, and the calibrations, from the files
    ``scripts/adapt_demo.py measure`` and ``minirerank calibrate`` wrote (nothing when they are absent)."""
    path = results_dir / "adapt_demo.json"
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    run = doc.get("adapt", {})
    settings = run.get("settings", {})
    n = doc["queries_per_family"]
    lines = [
        LABEL_FREE_HEADING,
        "",
        f"`minirerank adapt` from the demo's dense variant, without labels, to the adapted variant's configuration "
        f"({doc['config']}), on training-split groups without their relevance (`scripts/adapt_demo.py export`), "
        f"mixed as {mix_of(run)}; full fine-tuning with the vision tower trained, lr "
        f"{settings.get('lr') or 3e-4}, {settings.get('steps')} steps of {settings.get('queries_per_step')} "
        f"queries x {settings.get('group_size')} candidates (each group the teacher's top "
        f"{settings.get('teacher_top')} plus candidates drawn from the list)"
        + (
            f", serving the moving average of the weights (decay {settings['ema']} per step)"
            if settings.get("ema")
            else ""
        )
        + f". Training {run.get('train_seconds', 0) / 60:.0f} min "
        + (
            # Records written before teacher_cache_hit existed: a pass of under a minute was a cache read.
            f"with the teacher's scores read from an earlier run's cache ({run.get('teacher_seconds', 0):.1f} s)"
            if run.get("teacher_cache_hit", run.get("teacher_seconds", 0) < 60)
            else f"and the teacher pass {run.get('teacher_seconds', 0) / 60:.0f} min"
        )
        + " on this 2-core machine; teacher-score cache "
        f"{run.get('teacher_cache_bytes', 0) / 1e3:.0f} KB ({run.get('tasks', 0)} groups in the mix). Retention on "
        f"{n} test queries per family (the 500-query sample above)"
        + (
            ", 95% paired bootstrap intervals:"
            if doc.get("retention_95ci")
            else "; dense means from that section (same tasks), so no paired intervals:"
        ),
        "",
    ]
    header = ["family", "dense Hit@1 / NDCG@5", "label-free Hit@1 / NDCG@5", "Hit@1 retention", "NDCG@5 retention"]
    if large_sample:
        header += ["labelled (shipped) Hit@1 / NDCG@5 retention"]
    rows = []
    for f in FAMILIES:
        d, a, r = doc["dense"][f], doc["adapted"][f], doc["retention"][f]
        ci = (doc.get("retention_95ci") or {}).get(f)

        row = [
            f,
            f"{d['hit_rate@1']:.3f} / {d['ndcg@5']:.3f}",
            f"{a['hit_rate@1']:.3f} / {a['ndcg@5']:.3f}",
            *(
                f"{r[m]:.3f}" if ci is None else f"{r[m]:.3f} [{ci[m][0]:.3f}, {ci[m][1]:.3f}]"
                for m in ("hit_rate@1", "ndcg@5")
            ),
        ]
        if large_sample:
            lr = large_sample["retention"][f]
            row.append(f"{lr['hit_rate@1']:.3f} / {lr['ndcg@5']:.3f}")
        rows.append(row)
    lowest = min(doc["retention"][f][m] for f in FAMILIES for m in ("hit_rate@1", "ndcg@5"))
    verdict = "met" if lowest >= TARGET else "not met"
    lines += [table(header, rows), "", f"Lowest retention: {lowest:.3f}; the bar of {TARGET} is {verdict}.", ""]
    calibrations = sorted((results_dir / "calibration").glob("*/calibration.json"))
    if calibrations:
        lines += [
            "### minirerank calibrate",
            "",
            "Each run evaluates a grid on validation-split queries (labelled, 20 candidates; how many is said per "
            "run) against the dense demo model, times every configuration on this machine (cold, then warm) and "
            "writes the cheapest keeping 0.97 of Hit@1 and NDCG@5 in every family; a candidate costs its pair "
            "plus the share of a new document that the run's document reuse leaves. Costs are of a shared CPU: "
            "they rank the configurations, their absolute values move between runs.",
            "",
        ]
        for cal_path in calibrations:
            cal = json.loads(cal_path.read_text())
            dense_cost = next((c["cost_s"] for c in cal["candidates"] if c["kind"] == "dense"), float("nan"))
            chosen = [c for c in cal["candidates"] if c["config"] == {k: cal["chosen"][k] for k in c["config"]}]
            cost = chosen[0]["cost_s"] if chosen else float("nan")
            lines += [
                f"- `{cal_path.parent.name}` ({cal['model']}; {cal['groups']} validation groups, document reuse "
                f"{cal.get('document_reuse', 0.0)}): answer **{cal['answer']}**"
                + (
                    f", lowest retention {chosen[0]['min_retention']:.3f}, cost {1000 * cost:.2f} ms per candidate "
                    f"({cost / dense_cost:.2f} of dense)"
                    if chosen
                    else ""
                )
                + f"; every configuration in `docs/results/calibration/{cal_path.parent.name}/calibration.txt`, the "
                f"frontier in `calibration.png`.",
            ]
            rows = [
                [
                    c["kind"],
                    f"{c['min_retention']:.3f}",
                    f"{1000 * c['cost_s']:.2f}",
                    f"{c['cost_s'] / dense_cost:.2f}",
                    "yes" if c["meets_target"] else "",
                ]
                for c in sorted(cal["candidates"], key=lambda c: c["cost_s"])
            ]
            lines += [
                "",
                table(["configuration", "lowest retention", "ms / candidate", "cost / dense", "meets"], rows),
                "",
            ]
    return lines


def chance(tasks: list) -> float:
    """Expected Hit@1 of a random order: the mean share of relevant candidates."""
    return sum(len(t.positives) / len(t.candidates) for t in tasks) / len(tasks)


def validation_curve(histories: list[dict]) -> list[dict]:
    """Dense-stage validation Hit@1 by family from train_demo.py histories, steps counted across stages."""
    points, offset = [], 0
    for stage, history in enumerate(histories):
        for point in history.get("dense", []):
            points.append({"step": offset + point["step"], "stage": stage, "stage_start": offset, **point["val_hit@1"]})
        offset += history.get("dense_summary", {}).get("steps", 0)
    return points


def plot_validation_curve(points: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.8))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for family in [*FAMILIES, "overall"]:
        overall = family == "overall"
        ax.plot(
            [p["step"] for p in points],
            [p[family] for p in points],
            marker="o",
            label=family,
            color="black" if overall else None,
            linewidth=2 if overall else None,
        )
    for start in sorted({p["stage_start"] for p in points if p["stage"] > 0}):
        ax.axvline(start, color="grey", linestyle="--", linewidth=1)
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1, label="target 0.9")
    ax.set_xlabel("dense training step")
    ax.set_ylabel("validation Hit@1")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("Dense demo model: validation Hit@1 during training")
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
