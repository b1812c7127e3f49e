"""Runtime of top-k reranking: a configuration against the dense baseline, in the same run.

Reranks `--candidates` image documents for each of `--queries` text queries, three ways: the dense
query-first baseline, the configuration with a cold prefix store (prefixes computed on the way), and with a
warm store (prefixes precomputed, as after an ingestion-time `precache`). Prints seconds and ratios.

    python benchmarks/speed.py                              # a tiny offline model (CPU)
    python benchmarks/speed.py --model Qwen/Qwen3-VL-Reranker-2B --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from minirerank_integrations import Candidate, MiniReranker, Query, RerankConfig
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint


def page(i: int, size: tuple[int, int]) -> Image.Image:
    generator = torch.Generator().manual_seed(i)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = (torch.rand(2, generator=generator) * torch.tensor(size)).int().tolist()
        colour = tuple((torch.rand(3, generator=generator) * 255).int().tolist())
        draw.rectangle([x, y, x + size[0] // 4, y + size[1] // 8], fill=colour)
    return image


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint; default: a tiny offline 8-layer model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--image-size", type=int, nargs=2, default=(256, 320))
    parser.add_argument("--preset", default="paper")
    args = parser.parse_args(argv)

    model = args.model or build_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny", num_layers=8)
    fast = MiniReranker.from_pretrained(model, config=args.preset, device=args.device, dtype=args.dtype)
    dense = MiniReranker(fast.backbone, RerankConfig.preset("dense", fast.num_layers))
    docs = [Candidate(images=[page(i, tuple(args.image_size))], id=str(i)) for i in range(args.candidates)]
    queries = [Query(text=f"the page with a chart number {i}") for i in range(args.queries)]

    t_dense = timed(lambda: [dense.rerank(q, docs) for q in queries])
    t_cold = timed(lambda: [fast.rerank(q, docs) for q in queries])  # first query computes every prefix
    t_warm = timed(lambda: [fast.rerank(q, docs) for q in queries])  # every prefix from the store
    cfg = fast.config
    print(f"model {model} on {args.device}/{args.dtype}; {args.queries} queries x {args.candidates} image candidates")
    print(
        f"config {args.preset}: exit {cfg.exit_layer}/{fast.num_layers}, band {list(cfg.band)}, keep {cfg.keep_ratio}"
    )
    print(f"{'run':<26} {'seconds':>9} {'vs dense':>9}")
    for label, seconds in [
        ("dense (query-first)", t_dense),
        ("config, cold store", t_cold),
        ("config, warm store", t_warm),
    ]:
        print(f"{label:<26} {seconds:>9.3f} {seconds / t_dense:>9.3f}")


if __name__ == "__main__":
    main()
