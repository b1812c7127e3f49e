"""Bytes stored per document prefix: the ``paper`` preset against full-depth, full-token KV.

Measures the encoded entry of a tiny offline model (the bytes a cache directory really holds), then
estimates, for a few model shapes (the tiny test model and the real Qwen3-VL-Reranker-2B/8B shapes of
:mod:`.shapes`, computed without loading weights) and a document page of a given size, what one cached prefix
costs under each configuration and storage precision.

    python -m minirerank_integrations.bench.prefix_bytes [--width 1024 --height 1344 --text-tokens 64]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from ..engine.config import RerankConfig
from ..engine.images import smart_resize
from ..engine.inputs import Candidate
from ..engine.pruning import kept_count
from ..engine.reranker import MiniReranker
from ..store.codec import encode_entry
from ..tiny_checkpoint import build_tiny_checkpoint
from .shapes import SHAPES, ModelShape

#: The shapes the estimate covers, with the names it prints them under.
ESTIMATED = {"tiny": "tiny (tests)", "qwen3-vl-2b": "Qwen3-VL-Reranker-2B", "qwen3-vl-8b": "Qwen3-VL-Reranker-8B"}
#: Bytes of one stored key or value element in each storage precision.
ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
#: System prompt + "<Document>:" around the image: an estimate for the Qwen tokenizer.
SYSTEM_TOKENS = 40
#: The key a measured entry is encoded under (it goes into the header, so it counts in the size).
MEASURE_KEY = "k"
#: The two configurations whose real entries are measured: everything cached, and the preset.
MEASURED_CONFIGS: dict[str, RerankConfig | str] = {
    "full depth, all tokens": RerankConfig(format="vision_first"),  # every layer in the band, every token
    "paper": "paper",
}


def prefix_bytes(shape: ModelShape, layers: int, tokens: int, storage: str) -> int:
    """Raw bytes of keys and values for ``tokens`` tokens over ``layers`` layers of ``shape`` (no header)."""
    return shape.kv_bytes_per_token(layers, ELEMENT_BYTES[storage]) * tokens


def visual_tokens(width: int, height: int) -> tuple[int, int, int]:
    """``(resized width, resized height, visual tokens)`` of a ``width`` x ``height`` page."""
    h, w = smart_resize(height, width)
    return w, h, (h // 32) * (w // 32)  # one token per merged 32 x 32 patch


def measured_page(width: int, height: int) -> Candidate:
    """The page whose real prefix entry is measured: a white page with one red block and a title."""
    page = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(page).rectangle([width // 8, height // 8, width // 2, height // 3], fill=(200, 30, 30))
    return Candidate(text="Quarterly report", images=[page])


def measure_entries(width: int, height: int, model: str | Path | None = None) -> dict[tuple[str, str], int]:
    """Encoded bytes of one page's prefix entry under each of :data:`MEASURED_CONFIGS`, as float32 and int8.

    ``model`` defaults to a tiny 8-layer checkpoint built in a temporary folder. Each entry is read back from
    the store under the key :meth:`MiniReranker.document_prefix` gives, after :meth:`MiniReranker.precache`.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = model or build_tiny_checkpoint(Path(folder) / "tiny", num_layers=8)
        doc = measured_page(width, height)
        sizes = {}
        for name, config in MEASURED_CONFIGS.items():
            reranker = MiniReranker.from_pretrained(path, config=config)  # type: ignore[arg-type]
            reranker.precache([doc], progress=False)
            key, _ = reranker.document_prefix(reranker.prepare(doc, "the measured page"))
            entry = reranker.store.get(key)
            if entry is None:
                raise RuntimeError(f"precache stored no entry under {key!r} for the {name!r} configuration")
            for storage in ("float32", "int8"):
                sizes[(name, storage)] = len(encode_entry(entry, key=MEASURE_KEY, storage=storage))
    return sizes


def estimate_rows(width: int, height: int, text_tokens: int) -> list[dict]:
    """Per shape of :data:`ESTIMATED`: full-depth bfloat16, ``paper`` bfloat16 and ``paper`` int8 bytes."""
    visual = visual_tokens(width, height)[2]
    rows = []
    for name, label in ESTIMATED.items():
        shape = SHAPES[name]
        paper = RerankConfig.preset("paper", shape.layers)
        band = paper.band or (0, shape.layers)
        full_tokens = SYSTEM_TOKENS + visual + text_tokens
        kept_tokens = SYSTEM_TOKENS + kept_count(visual, paper.keep_ratio) + text_tokens
        full = prefix_bytes(shape, shape.layers, full_tokens, "bfloat16")
        configs = [
            ("full depth, all tokens", full_tokens, shape.layers, "bfloat16"),
            (f"paper band {list(band)}, keep {paper.keep_ratio}", kept_tokens, band[1] - band[0], "bfloat16"),
            ("paper, int8 storage", kept_tokens, band[1] - band[0], "int8"),
        ]
        for config, tokens, layers, storage in configs:
            size = prefix_bytes(shape, layers, tokens, storage)
            rows.append(
                {
                    "model": label,
                    "config": config,
                    "tokens": tokens,
                    "layers": layers,
                    "storage": storage,
                    "bytes": size,
                    "ratio": size / full,
                }  # fmt: skip
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1344)
    parser.add_argument("--text-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    # The measured page is capped: a tiny model's entry grows with tokens only, and this keeps the run short.
    width, height = min(args.width, 512), min(args.height, 672)
    sizes = measure_entries(width, height)
    full = sizes[("full depth, all tokens", "float32")]
    print(f"measured on a tiny 8-layer model, one {width}x{height} page, encoded entries:")
    for (name, storage), size in sizes.items():
        print(f"  {name:<24} {storage:>8} {size:>10,} bytes  {size / full:6.3f} of full")
    w, h, visual = visual_tokens(args.width, args.height)
    print(f"document: a {args.width}x{args.height} page -> {w}x{h} after the resize rule, {visual} visual tokens")
    print(f"{'model':<22} {'config':<28} {'tokens':>7} {'layers':>6} {'dtype':>9} {'bytes':>12} {'ratio':>7}")
    for r in estimate_rows(args.width, args.height, args.text_tokens):
        print(
            f"{r['model']:<22} {r['config']:<28} {r['tokens']:>7} {r['layers']:>6} {r['storage']:>9} "
            f"{r['bytes']:>12,} {r['ratio']:>7.3f}"
        )


if __name__ == "__main__":
    main()
