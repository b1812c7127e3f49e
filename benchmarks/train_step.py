"""Training step time: dense (query-first, every layer and token) against the `paper` configuration,
same batches, same machine, same run.

    python benchmarks/train_step.py [--model PATH] [--steps 10] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time
from pathlib import Path

import torch

from minirerank_integrations import MiniReranker
from minirerank_integrations.data import FAMILIES, generate
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint
from minirerank_integrations.training import TrainSettings, sample_group, training_step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint; default: a tiny offline 8-layer model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--size", type=int, default=8)
    args = parser.parse_args(argv)
    model = args.model or build_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny", num_layers=8, hidden_size=128)
    tasks = [t for family in FAMILIES for t in generate(family, "train", args.groups, candidates_per_query=20)]
    rng = random.Random(0)
    batches = []
    for _ in range(args.steps + 1):
        pairs, labels = [], []
        for task in rng.sample(tasks, args.groups):
            group = sample_group(task, args.size, 0.5, rng)
            pairs += [(task.query, task.candidates[i]) for i in group]
            labels.append([int(task.relevance[i] > 0) for i in group])
        batches.append((pairs, labels))

    base = MiniReranker.from_pretrained(model, config="dense", device=args.device)
    frozen = copy.deepcopy(base.backbone)  # the pruning guide, as in the demo's adaptation
    seconds = {}
    for preset in ("dense", "paper"):
        reranker = MiniReranker(copy.deepcopy(base.backbone), preset, embedder=frozen)
        optimizer = torch.optim.AdamW(reranker.backbone.model.parameters(), lr=1e-4)
        if reranker.config.keep_ratio < 1.0:  # rank every image once, outside the timing (cached by content)
            for pairs, _ in batches:
                reranker.score(pairs)
        times = []
        for pairs, labels in batches:
            start = time.perf_counter()
            training_step(reranker, optimizer, pairs, labels, TrainSettings())
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        seconds[preset] = sum(times[1:]) / len(times[1:])  # the first step warms up
    print(f"{args.groups} queries x {args.size} candidates per step, {args.steps} steps, on {args.device}")
    print(f"dense  {seconds['dense']:.3f} s/step")
    print(f"paper  {seconds['paper']:.3f} s/step  ({seconds['dense'] / seconds['paper']:.2f}x faster)")


if __name__ == "__main__":
    main()
