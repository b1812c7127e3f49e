"""Teach the demo model video: continue the dense demo model on the ``text_to_video`` family with replay of the
image families, then (``--adapt-steps``) adapt it to the shipped miniReranker configuration. Seeded; writes
``dense`` (and ``paper``) plus ``history.json`` under ``--out``:

    python scripts/train_demo_video.py --out build/demo-video --minutes 25          # dense, ~25 min on 2 CPUs
    python scripts/train_demo_video.py --out build/demo-video --from-dense build/demo-video/dense \\
        --adapt-steps 2000                                                         # adaptation, as train_demo.py

The clips are 4 frames of 96 x 96, which the official frame-list path rounds to 128 x 128 (multiples of 64):
two temporal groups of 4 x 4 merged tokens. ``VIDEO_FIELDS`` keeps them there: the official frame floor of
128 x 32 x 32 pixels would upscale each frame to 384 x 384, nine times the tokens, for shapes that 96 pixels
already show. Ranking is dense with the official query-first prompt: 8 queries x 4
candidates per step, listwise softmax + 0.2 x BCE, 75% hard negatives (for a clip, its own reverse among
them), lr ``--lr`` with cosine decay to 10% over ``--steps`` and a ``--minutes`` cap. The image families are
replayed (``--replay-queries`` per family, with caption queries as in train_demo.py) so they do not regress.
docs/demo-training.md has the record.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch
from train_demo import ADAPTED_CONFIG, caption_queries, quick_eval

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.demo_model import demo_checkpoint
from minirerank_integrations.quality.adapt import AdaptSettings
from minirerank_integrations.quality.adapt import adapt as adapt_run
from minirerank_integrations.quality.data import FAMILIES, VIDEO_FAMILIES, RerankTask, generate
from minirerank_integrations.quality.data.generator import Split
from minirerank_integrations.quality.training import TrainSettings, save_checkpoint, train

log = logging.getLogger("train_demo_video")

#: Frames per clip and their side, in pixels (rounded to 128 by the frame-list path: 2 groups of 4 x 4 tokens).
CLIP_FRAMES = 4
CLIP_SIZE = 96
#: The sampling settings the demo's video family is trained and measured with: no upscaling past 128 x 128.
VIDEO_FIELDS = {"video_frame_min_pixels": CLIP_SIZE * CLIP_SIZE, "video_max_frames": 64}


def video_config(base: RerankConfig) -> RerankConfig:
    """``base`` with the demo's video sampling settings (validated again)."""
    return RerankConfig(**base.model_dump() | VIDEO_FIELDS)


def video_tasks(split: Split, n: int, seed: int, hard: float = 0.6) -> list[RerankTask]:
    """``n`` tasks per video family at the demo's clip size, 20 candidates each."""
    return [
        t
        for family in VIDEO_FAMILIES
        for t in generate(
            family,
            split,
            n,
            seed=seed,
            candidates_per_query=20,
            hard_negative_share=hard,
            image_size=CLIP_SIZE,
            frames=CLIP_FRAMES,
        )
    ]


def image_tasks(split: Split, n: int, seed: int, hard: float = 0.6) -> list[RerankTask]:
    return [
        t
        for family in FAMILIES
        for t in generate(family, split, n, seed=seed, candidates_per_query=20, hard_negative_share=hard)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/demo-video"))
    parser.add_argument("--base", type=Path, default=demo_checkpoint("dense"), help="the dense model to continue")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--video-queries", type=int, default=800, help="training queries per video family")
    parser.add_argument(
        "--video-repeat", type=int, default=2, help="repeat the video training tasks this often in the mix"
    )
    parser.add_argument("--replay-queries", type=int, default=400, help="training queries per image family")
    parser.add_argument("--steps", type=int, default=2000, help="cosine schedule length (the run may stop sooner)")
    parser.add_argument("--minutes", type=float, default=25.0, help="stop dense ranking after this long")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--queries-per-step", type=int, default=8, help="groups of 4 candidates per step")
    parser.add_argument("--eval-every", type=int, default=400)
    parser.add_argument("--val-queries", type=int, default=15, help="validation queries per family")
    parser.add_argument(
        "--from-dense", type=Path, default=None, metavar="DIR", help="skip dense ranking: adapt this checkpoint"
    )
    parser.add_argument("--adapt-steps", type=int, default=0, help="adaptation steps after dense ranking (0: none)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (2 contend on the shared 2-core machine)"
    )
    parser.add_argument("--i2t-repeat", type=int, default=2, help="repeat image_to_text tasks in the adaptation")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    history_path = args.out / "history.json"
    history: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "dense": [], "adapt": []}
    if args.from_dense and history_path.exists():
        history = json.loads(history_path.read_text()) | {"adapt": [], "adapt_args": history["args"]}

    rng = random.Random(args.seed)
    videos = video_tasks("train", args.video_queries, args.seed)
    replay = image_tasks("train", args.replay_queries, args.seed)
    mix = videos * args.video_repeat + replay + caption_queries(replay, args.seed)
    rng.shuffle(mix)
    val = image_tasks("validation", args.val_queries, args.seed + 1) + video_tasks(
        "validation", args.val_queries, args.seed + 1
    )
    log.info(
        "training mix: %d tasks (%d video), %d validation tasks", len(mix), len(videos) * args.video_repeat, len(val)
    )

    source = args.from_dense or args.base
    loaded = MiniReranker.from_pretrained(source, config="dense", device=args.device)
    reranker = MiniReranker(loaded.backbone, video_config(loaded.config))
    if not args.from_dense:
        history["dense_start_val_hit@1"] = quick_eval(reranker, val)
        log.info("validation hit@1 before: %s", history["dense_start_val_hit@1"])
        train_dense(reranker, mix, val, args, history, history_path)
    if args.adapt_steps:
        adapt_tasks = mix + [t for t in replay if t.family == "image_to_text"] * (args.i2t_repeat - 1)
        adapt(
            reranker,
            adapt_tasks,
            val,
            args,
            history,
            history_path,
            base=str(source if args.from_dense else args.out / "dense"),
        )


def train_dense(
    reranker: MiniReranker, mix: list[RerankTask], val: list[RerankTask], args, history: dict, history_path: Path
) -> None:
    settings = TrainSettings(
        steps=args.steps,
        queries_per_step=args.queries_per_step,
        candidates_per_query=4,
        lr=args.lr,
        warmup_steps=50,
        bce_weight=0.2,
        hard_start=0.75,
        hard_end=0.75,
        seed=args.seed,
        time_limit_s=args.minutes * 60,
    )

    def on_step(step: int, loss: float) -> None:
        if step % 20 == 0:
            log.info("dense step %d loss %.4f", step, loss)
        if step and step % args.eval_every == 0:
            hit = quick_eval(reranker, val)
            reranker.backbone.model.train()
            history["dense"].append({"step": step, "loss": loss, "val_hit@1": hit})
            log.info("dense step %d validation hit@1 %s", step, hit)
            history_path.write_text(json.dumps(history, indent=1))

    started = time.perf_counter()
    report = train(reranker, mix, settings, progress=False, on_step=on_step)
    seconds = time.perf_counter() - started
    save_checkpoint(reranker, args.out / "dense")
    history["dense_summary"] = {
        "steps": len(report.losses),
        "seconds": seconds,
        "mean_step_seconds": report.mean_step_seconds,
        "final_val_hit@1": quick_eval(reranker, val),
    }
    log.info("dense done: %s", history["dense_summary"])
    history_path.write_text(json.dumps(history, indent=1))


def adapt(
    reranker: MiniReranker,
    tasks: list[RerankTask],
    val: list[RerankTask],
    args,
    history: dict,
    history_path: Path,
    *,
    base: str,
) -> None:
    """The adaptation stage of train_demo.py (recipe I: distillation 2 + labels, vision trained), to the
    shipped configuration with the demo's video settings."""
    config = video_config(ADAPTED_CONFIG)
    settings = AdaptSettings(
        steps=args.adapt_steps,
        queries_per_step=8,
        group_size=8,
        method="full",
        train_vision=True,
        distill_weight=2.0,
        score_weight=0.0,
        label_weight=1.0,
        seed=args.seed + 1,
    )

    def on_step(step: int, loss: float) -> None:
        if step % 20 == 0:
            log.info("adapt step %d loss %.4f", step, loss)
            history["adapt"].append({"step": step, "loss": loss})

    result = adapt_run(
        reranker,
        tasks,
        config,
        args.out / "paper",
        settings,
        progress=False,
        on_step=on_step,
        base_name=base,
        overwrite=True,
    )
    adapted = MiniReranker.from_pretrained(args.out / "paper", device=args.device)
    history["adapt_summary"] = {
        "steps": result.steps_done,
        "seconds": result.train_seconds,
        "mean_step_seconds": result.train_seconds / max(1, len(result.losses)),
        "final_val_hit@1": quick_eval(adapted, val),
    }
    log.info("adapt done: %s", history["adapt_summary"])
    history_path.write_text(json.dumps(history, indent=1))


if __name__ == "__main__":
    main()
