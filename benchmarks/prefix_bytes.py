"""Bytes stored per document prefix: the `paper` preset against full-depth, full-token KV.

Measures the encoded entry of a tiny offline model (the bytes a cache directory really holds), then
estimates, for a few model shapes (the tiny test model and the real Qwen3-VL-Reranker-2B/8B shapes, computed
from their configs without loading weights) and a document page of a given size, what one cached prefix
costs under each configuration and storage precision.

    python benchmarks/prefix_bytes.py [--width 1024 --height 1344 --text-tokens 64]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from minirerank_integrations import Candidate, MiniReranker, RerankConfig
from minirerank_integrations.engine.images import smart_resize
from minirerank_integrations.engine.pruning import kept_count
from minirerank_integrations.store.codec import encode_entry
from minirerank_integrations.tiny_checkpoint import build_tiny_checkpoint

# (name, decoder layers, kv heads, head dim): the published Qwen3-VL-2B/8B text configs and our tiny one.
SHAPES = [("tiny (tests)", 8, 2, 16), ("Qwen3-VL-Reranker-2B", 28, 8, 128), ("Qwen3-VL-Reranker-8B", 36, 8, 128)]
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
SYSTEM_TOKENS = 40  # system prompt + "<Document>:" around the image: an estimate for the Qwen tokenizer


def prefix_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, dtype: str) -> int:
    return 2 * layers * kv_heads * tokens * head_dim * BYTES[dtype]  # keys and values


def measured(width: int, height: int) -> None:
    """Encode the real prefix entry of one page on a tiny 8-layer model under both configurations."""
    model = build_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny", num_layers=8)
    page = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(page).rectangle([width // 8, height // 8, width // 2, height // 3], fill=(200, 30, 30))
    doc = Candidate(text="Quarterly report", images=[page])
    full_cfg = RerankConfig(format="vision_first")  # every layer in the band, every token kept
    sizes = {}
    for name, config in [("full depth, all tokens", full_cfg), ("paper", "paper")]:
        reranker = MiniReranker.from_pretrained(model, config=config)
        reranker.precache([doc], progress=False)
        entry = next(iter(reranker.store._entries.values()))
        for storage in ("float32", "int8"):
            sizes[(name, storage)] = len(encode_entry(entry, key="k", storage=storage))
    full = sizes[("full depth, all tokens", "float32")]
    print(f"measured on a tiny 8-layer model, one {width}x{height} page, encoded entries:")
    for (name, storage), size in sizes.items():
        print(f"  {name:<24} {storage:>8} {size:>10,} bytes  {size / full:6.3f} of full")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1344)
    parser.add_argument("--text-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    measured(min(args.width, 512), min(args.height, 672))
    h, w = smart_resize(args.height, args.width)
    visual = (h // 32) * (w // 32)
    print(f"document: a {args.width}x{args.height} page -> {w}x{h} after the resize rule, {visual} visual tokens")
    print(f"{'model':<22} {'config':<28} {'tokens':>7} {'layers':>6} {'dtype':>9} {'bytes':>12} {'ratio':>7}")
    for name, depth, kv_heads, head_dim in SHAPES:
        paper = RerankConfig.preset("paper", depth)
        full_tokens = SYSTEM_TOKENS + visual + args.text_tokens
        kept_tokens = SYSTEM_TOKENS + kept_count(visual, paper.keep_ratio) + args.text_tokens
        full = prefix_bytes(depth, kv_heads, head_dim, full_tokens, "bfloat16")
        rows = [
            ("full depth, all tokens", full_tokens, depth, "bfloat16"),
            (
                f"paper band {list(paper.band)}, keep {paper.keep_ratio}",
                kept_tokens,
                paper.band[1] - paper.band[0],
                "bfloat16",
            ),
            ("paper, int8 storage", kept_tokens, paper.band[1] - paper.band[0], "int8"),
        ]
        for label, tokens, layers, dtype in rows:
            size = prefix_bytes(layers, kv_heads, head_dim, tokens, dtype)
            print(f"{name:<22} {label:<28} {tokens:>7} {layers:>6} {dtype:>9} {size:>12,} {size / full:>7.3f}")


if __name__ == "__main__":
    main()
