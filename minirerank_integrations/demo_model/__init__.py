"""The embedded demo checkpoint, the default model when none is named.

A Qwen3-VL reranker of 1.9M parameters (text 8 layers x 128, vision 3 x 64) trained from scratch by
``scripts/train_demo.py`` on the synthetic tasks of :mod:`minirerank_integrations.quality.data`: coloured shapes,
page and app screenshots, and their captions. It is a demo of the engine, trained on synthetic data; it
knows nothing else. Two variants ship, each a complete checkpoint loaded through the same
``from_pretrained`` path as any other:

- ``dense``: trained with the official query-first prompt, every layer and token (the baseline);
- ``paper``: the dense model adapted to a miniReranker configuration saved with it in
  ``minirerank_config.json`` (vision-first, early exit, a one-layer band where this model interacts, half of
  the visual tokens kept, ranked by the dense model as embedder), distilled from the dense model.

Measured quality: ``docs/results.md``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

__all__ = ["DEMO_MODEL", "DemoVariant", "demo_checkpoint"]

#: The name that selects the embedded checkpoint, in ``MiniReranker.from_pretrained`` and the CLI.
DEMO_MODEL = "minirerank-demo"

DemoVariant = Literal["dense", "paper"]


def demo_checkpoint(variant: DemoVariant = "paper") -> Path:
    """The folder of one variant of the embedded checkpoint."""
    if variant not in ("dense", "paper"):
        raise ValueError(f"unknown demo variant {variant!r}; expected 'dense' or 'paper'")
    return Path(str(files(__package__) / variant))
