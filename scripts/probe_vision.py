"""Linear probes of checkpoints' vision features on fresh renders: can each attribute still be told apart
before the decoder sees it? Prints one Markdown table (rows: checkpoints, columns: attributes).

    python scripts/probe_vision.py                                   # the demo model's dense variant
    python scripts/probe_vision.py build/demo/dense build/demo2/dense

Images are the candidates of validation-split tasks (new renders of combinations no training query uses).
"""

from __future__ import annotations

import argparse

import torch

from minirerank_integrations import MiniReranker
from minirerank_integrations.demo_model import demo_checkpoint
from minirerank_integrations.quality.data import generate, labelled_images
from minirerank_integrations.quality.vision_probe import vision_probe

#: One family per image kind: scenes and page screenshots.
FAMILIES = ("text_to_image", "text_to_doc")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="checkpoint folders (default: the demo model's dense variant)")
    parser.add_argument("--queries", type=int, default=80, help="validation tasks per family (20 images each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = {f: labelled_images(generate(f, "validation", args.queries, seed=args.seed)) for f in FAMILIES}
    rows = []
    for path in args.checkpoints or [str(demo_checkpoint("dense"))]:
        reranker = MiniReranker.from_pretrained(path, config="dense")
        accuracy = {}
        for images, labels in data.values():
            accuracy |= vision_probe(reranker, images, labels, seed=args.seed)
        rows.append((path, accuracy))
    names = list(rows[0][1])
    print("| checkpoint | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for path, accuracy in rows:
        print(f"| {path} | " + " | ".join(f"{accuracy[n]:.2f}" for n in names) + " |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
