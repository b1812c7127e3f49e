"""Training step time: dense (query-first, every layer and token) against an adapted configuration,
same batches, same machine, same run.

    python -m minirerank_integrations.bench.train_step [--model PATH] [--steps 10] [--device cuda] [--json FILE]

Rows: dense; the adapted configuration (the one saved with the checkpoint, else `paper`) trained through
the serving decomposition (the default, `TrainSettings.fast_path`), and through the reference forward.
Each with every weight trainable, and with the vision tower frozen (as in adaptation). Pruning importances
come from the frozen dense model, computed once per image before the timing, as an index's embedder has
already seen its documents.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from ..demo_model import DEMO_MODEL
from ..engine.config import PresetName, RerankConfig
from ..engine.modeling import Backbone
from ..engine.reranker import MiniReranker
from ..quality.data import FAMILIES, generate
from ..quality.training import TrainSettings, sample_group, training_step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEMO_MODEL, help="checkpoint; default: the embedded demo (dense)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the timings here")
    args = parser.parse_args(argv)
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

    def fresh_backbone() -> Backbone:  # every row trains its own copy of the weights, loaded outside the timing
        return MiniReranker.from_pretrained(args.model, config="dense", device=args.device).backbone

    frozen = fresh_backbone()  # the pruning guide, as in the demo's adaptation
    # The configuration the checkpoint was adapted to (the demo ships one), else the paper preset.
    adapted = MiniReranker.from_pretrained(args.model, device=args.device).config
    rows: list[tuple[str, RerankConfig | PresetName, bool]] = [
        ("dense", "dense", True),
        ("adapted", adapted, True),
        ("adapted, reference forward", adapted, False),
    ]
    seconds: dict[str, dict[str, float]] = {}
    for vision in ("trained", "frozen"):
        for name, preset, fast in rows:
            reranker = MiniReranker(fresh_backbone(), preset, embedder=frozen)
            if vision == "frozen":
                for p in reranker.backbone.visual.parameters():
                    p.requires_grad_(False)
            params = [p for p in reranker.backbone.model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-4)
            if reranker.config.keep_ratio < 1.0:  # rank every image once, outside the timing (cached by content)
                for pairs, _ in batches:
                    reranker.score(pairs)
            times = []
            for pairs, labels in batches:
                start = time.perf_counter()
                training_step(reranker, optimizer, pairs, labels, TrainSettings(fast_path=fast))
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            seconds.setdefault(vision, {})[name] = sum(times[1:]) / len(times[1:])  # the first step warms up
    print(f"{args.groups} queries x {args.size} candidates per step, {args.steps} steps, on {args.device}")
    for vision, by_name in seconds.items():
        print(f"vision tower {vision}:")
        for name, s in by_name.items():
            print(f"  {name:<26} {s:.3f} s/step  ({by_name['dense'] / s:.2f}x dense speed)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"groups": args.groups, "size": args.size, "steps": args.steps, "device": args.device}
        args.json.write_text(json.dumps(document | {"seconds": seconds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
