"""The README's main job: rerank a handful of pictures and texts for a few queries, printing the
paper configuration's ranking next to the dense baseline's.

Until a trained demo checkpoint ships with the package, the demo builds a tiny randomly initialised
Qwen3-VL offline: it shows the pipeline end to end (loading, prompts, prefix reuse, early exit, band,
pruning), not meaningful relevance.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from .inputs import Candidate, Query
from .reranker import MiniReranker
from .tiny_checkpoint import build_tiny_checkpoint

_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 210, 20)}


def _picture(colour: str, shape: str, size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    box = [size // 6, size // 6, size - size // 6, size - size // 6]
    if shape == "circle":
        draw.ellipse(box, fill=_COLOURS[colour])
    else:
        draw.rectangle(box, fill=_COLOURS[colour])
    return image


def demo_candidates() -> list[Candidate]:
    """Pictures of coloured shapes and a few text passages."""
    pictures = [
        Candidate(images=[_picture(c, s)], id=f"{c} {s}")
        for c, s in [("red", "circle"), ("blue", "square"), ("green", "circle"), ("yellow", "square")]
    ]
    texts = [
        Candidate(text="A red circle drawn on a white page.", id="text: red circle"),
        Candidate(text="Quarterly report: revenue grew in every region.", id="text: report"),
    ]
    return pictures + texts


def run_demo(model: str | Path | None = None, *, queries: list[str] | None = None) -> str:
    """Rerank the demo candidates for each query with the ``paper`` and ``dense`` presets; return a report."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        if model is None:
            model = build_tiny_checkpoint(Path(scratch) / "tiny-qwen3-vl", num_layers=8)
            lines.append("model: a tiny randomly initialised Qwen3-VL (8 layers) built offline; scores show the")
            lines.append("       pipeline at work, not real relevance. Pass --model PATH for a real checkpoint.")
        else:
            lines.append(f"model: {model}")
        fast = MiniReranker.from_pretrained(model, config="paper")
        dense = MiniReranker(fast.backbone, "dense")  # same weights, the official query-first prompt
        cfg = fast.config
        lines.append(
            f"paper preset: exit after {cfg.exit_layer}/{fast.num_layers} layers, band {list(cfg.band)}, "
            f"keep {cfg.keep_ratio:.0%} of visual tokens"
        )
        candidates = demo_candidates()
        for query in queries or ["a red circle", "a blue square"]:
            started = time.perf_counter()
            ranked = fast.rerank(Query(text=query), candidates)
            fast_s = time.perf_counter() - started
            started = time.perf_counter()
            baseline = {r.index: r.score for r in dense.rerank(Query(text=query), candidates)}
            dense_s = time.perf_counter() - started
            lines.append(f"\nquery: {query!r}   (paper {fast_s * 1000:.0f} ms, dense {dense_s * 1000:.0f} ms)")
            lines.append(f"  {'rank':>4}  {'candidate':<22} {'paper':>7} {'dense':>7}")
            for rank, result in enumerate(ranked, 1):
                lines.append(f"  {rank:>4}  {result.id:<22} {result.score:7.4f} {baseline[result.index]:7.4f}")
        c = fast.counters
        lines.append(
            f"\nwork (paper): {c.prefix_computations} prefixes computed, {c.prefix_hits} reused from the store, "
            f"{c.suffix_prebands} shared suffix passes, {c.pair_passes} per-pair passes"
        )
    return "\n".join(lines)
