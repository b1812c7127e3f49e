"""The fast path against its reference on one device, in float32 and bfloat16 (the device check's first half).

Scores every pair kind of the invariant tests (text/image on either side, images of three sizes) with the
fast path and with the naive reference definition, on tiny offline checkpoints, under several configurations
(``paper``, ``paper-narrow`` with the full-depth guide, an empty band, the instruction in the prefix). Exits
non-zero if any score differs by more than the tolerance of its dtype; prints the bfloat16 deviation from the
float32 scores too.

    python benchmarks/gpu_check.py --device cuda     # on a GPU
    python benchmarks/gpu_check.py --device cpu      # the same check on this machine
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from minirerank_integrations import Candidate, MiniReranker, Query, RerankConfig
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint

TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}  # on probabilities; bfloat16 rounds every layer's activations


def drawn(width: int, height: int, seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = (torch.rand(2, generator=generator) * torch.tensor([width, height])).int().tolist()
        colour = tuple((torch.rand(3, generator=generator) * 255).int().tolist())
        draw.rectangle([x, y, x + width // 3, y + height // 3], fill=colour)
    return image


def pairs() -> list[tuple[Query, Candidate]]:
    a, b, c = drawn(64, 64, 1), drawn(96, 64, 2), drawn(128, 96, 3)
    return [
        (Query(text="a red circle on the left"), Candidate(images=[a])),
        (Query(text="two blue squares"), Candidate(text="a page title", images=[c])),
        (Query(images=[b]), Candidate(text="a blue square")),
        (Query(images=[a]), Candidate(images=[b, c])),
        (Query(text="capital of France"), Candidate(text="Paris is the capital of France.")),
    ]


def configs(depth: int) -> dict[str, RerankConfig]:
    return {
        "paper": RerankConfig.preset("paper", depth),
        "paper-narrow, full-depth guide": RerankConfig.preset("paper-narrow", depth, pruning_guide_layers=None),
        "empty band": RerankConfig(format="vision_first", exit_layer=depth // 2, band=(2, 2)),
        "instruction in prefix": RerankConfig.preset("paper", depth, instruction_in_prefix=True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --device cpu to try the check here", file=sys.stderr)
        return 2
    path = build_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny8", num_layers=8, seed=1)
    failures = 0
    float32_scores: dict[str, list[float]] = {}
    for dtype in ("float32", "bfloat16"):
        for name, config in configs(8).items():
            start = time.perf_counter()
            engine = MiniReranker.from_pretrained(path, config=config, device=args.device, dtype=dtype)
            fast = engine.score(pairs())
            reference = engine.reference_scores(pairs())
            worst = max(abs(f - r) for f, r in zip(fast, reference))
            ok = worst <= TOLERANCE[dtype]
            failures += not ok
            line = f"{args.device} {dtype:<9} {name:<32} fast vs reference max |diff| {worst:.2e}"
            if dtype == "float32":
                float32_scores[name] = fast
            else:
                drift = max(abs(f - g) for f, g in zip(fast, float32_scores[name]))
                line += f", vs float32 {drift:.2e}"
            print(f"{line} ({'ok' if ok else 'FAILED'}, {time.perf_counter() - start:.1f} s)", flush=True)
    print("fast path equals the reference" if not failures else f"{failures} configuration(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
